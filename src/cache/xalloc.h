/* xalloc.h — allocation that cannot fail: out of memory aborts with a
 * message, as redis' zmalloc does. A cache that half-stores on OOM is worse
 * than one that stops. */
#ifndef CORRAL_XALLOC_H
#define CORRAL_XALLOC_H

#include <stdio.h>
#include <stdlib.h>

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

static inline void *
xcalloc(size_t n, size_t size)
{
    return xcheck(calloc(n, size));
}

#endif
