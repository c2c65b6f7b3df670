/* generations.c — route generations (see generations.h): shared slots
 * read and raised with relaxed atomics (a worker that reads an old number
 * for a moment serves what it served a moment ago), folded into keys, and
 * route purges, through the fleet when there is one. */
#include "generations.h"

#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fmt.h"
#include "xalloc.h"

struct corral_generations {
    struct event_base *base;
    uint32_t *slots; /* shared by the workers */
    unsigned n_slots;
    corral_generations_send_fn *send; /* NULL: no fleet */
    void *send_ctx;
};

/* A route purge on its way. */
struct purge {
    struct corral_generations *gens;
    char *path;
    corral_generations_purged_cb *cb;
    void *arg;
};

struct corral_generations *
corral_generations_new(struct event_base *base, uint32_t *slots,
                       unsigned n_slots)
{
    struct corral_generations *gens = calloc(1, sizeof(*gens));
    if (gens == NULL)
        return NULL;
    gens->base = base;
    gens->slots = slots;
    gens->n_slots = n_slots;
    return gens;
}

void
corral_generations_free(struct corral_generations *gens)
{
    free(gens);
}

void
corral_generations_use_fleet(struct corral_generations *gens,
                             corral_generations_send_fn *send, void *ctx)
{
    gens->send = send;
    gens->send_ctx = ctx;
}

unsigned
corral_generations_slot(const struct corral_generations *gens,
                        const char *route_path)
{
    uint32_t h = 2166136261u; /* FNV-1a: config strings, not client input */
    for (; *route_path; route_path++)
        h = (h ^ (unsigned char)*route_path) * 16777619u;
    return h % gens->n_slots;
}

int
corral_generations_fold(const struct corral_generations *gens, unsigned slot,
                        char *key, size_t *keylen, size_t keycap)
{
    uint32_t n = __atomic_load_n(&gens->slots[slot], __ATOMIC_RELAXED);
    if (n == 0)
        return 0;
    char pre[16];
    char *p = pre;
    *p++ = CORRAL_CONFIG_GENERATION_MARK;
    p = fmt_uint(p, n);
    *p++ = CORRAL_CONFIG_GENERATION_MARK;
    size_t plen = (size_t)(p - pre);
    if (*keylen + plen > keycap)
        return -EMSGSIZE;
    memmove(key + plen, key, *keylen);
    memcpy(key, pre, plen);
    *keylen += plen;
    return 0;
}

static uint32_t *
slot_of(const struct corral_generations *gens, const char *path)
{
    return &gens->slots[corral_generations_slot(gens, path)];
}

uint64_t
corral_generations_current(const struct corral_generations *gens,
                           const char *path)
{
    return __atomic_load_n(slot_of(gens, path), __ATOMIC_RELAXED);
}

void
corral_generations_raise(struct corral_generations *gens, const char *path,
                         uint64_t value)
{
    if (value > UINT32_MAX)
        return;
    uint32_t *slot = slot_of(gens, path);
    uint32_t cur = __atomic_load_n(slot, __ATOMIC_RELAXED);
    while (cur < value &&
           !__atomic_compare_exchange_n(slot, &cur, (uint32_t)value, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

static void
purge_done(struct purge *p, int error, uint64_t gen)
{
    p->cb(error, (int64_t)gen, p->arg);
    free(p->path);
    free(p);
}

static void
sent(int error, uint64_t gen, void *arg)
{
    struct purge *p = arg;
    if (error == 0)
        corral_generations_raise(p->gens, p->path, gen);
    else
        /* Here, in every worker (the slots are shared); the fleet hears
         * of it when its next resync writes it back. */
        gen =
            __atomic_add_fetch(slot_of(p->gens, p->path), 1, __ATOMIC_RELAXED);
    purge_done(p, error, gen);
}

static void
bumped_here(evutil_socket_t fd, short what, void *arg)
{
    struct purge *p = arg;
    uint32_t n =
        __atomic_add_fetch(slot_of(p->gens, p->path), 1, __ATOMIC_RELAXED);
    purge_done(p, 0, n);
}

void
corral_generations_purge(struct corral_generations *gens, const char *path,
                         corral_generations_purged_cb *cb, void *arg)
{
    struct purge *p = xcalloc(1, sizeof(*p));
    p->gens = gens;
    p->path = xstrndup(path, strlen(path));
    p->cb = cb;
    p->arg = arg;
    if (gens->send != NULL)
        gens->send(gens->send_ctx, path, corral_generations_current(gens, path),
                   sent, p);
    else if (event_base_once(gens->base, -1, EV_TIMEOUT, bumped_here, p,
                             NULL) != 0)
        abort(); /* the policy of xalloc.h */
}
