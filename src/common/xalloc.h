/* xalloc.h — corral's one out-of-memory policy, for libcorral and the
 * gateway alike:
 * - Setup (loading a config, creating a cache, server, upstream or
 *   gateway) returns an error, so the program, or an embedder, can say why
 *   it cannot start.
 * - Once serving, running out of memory is fatal: these allocators abort
 *   with a message, as redis' zmalloc and Varnish do. A cache that
 *   half-stores, or a front end that drops clients at random, is worse
 *   than a process its supervisor restarts; on Linux the OOM killer would
 *   usually decide first anyway. */
#ifndef CORRAL_XALLOC_H
#define CORRAL_XALLOC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void *
xcheck(void *p)
{
    if (p == NULL) {
        fputs("corral: out of memory\n", stderr);
        abort();
    }
    return p;
}

static inline void *
xmalloc(size_t size)
{
    return xcheck(malloc(size));
}

/* Small blocks from malloc, then zeroed: glibc's calloc (2.36) never
 * takes a block from the thread cache, malloc does, and the loop's
 * per-request records are small. Large ones from calloc, which can skip
 * zeroing pages fresh from the kernel, and empty ones as before. */
static inline void *
xcalloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total) || total == 0 || total > 1024)
        return xcheck(calloc(n, size));
    return memset(xcheck(malloc(total)), 0, total);
}

static inline void *
xrealloc(void *p, size_t size)
{
    return xcheck(realloc(p, size));
}

static inline char *
xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    xcheck(p);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

#endif
