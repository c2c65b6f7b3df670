/* backoff.c — the per-key failure memory of backoff.h: a dict.h table of
 * failing keys, and a list of them by age for the sweep and the cap. */
#include "backoff.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

void
corral_backoff_init(struct corral_backoff *bo, uint64_t min_ms, uint64_t max_ms,
                    size_t max_keys)
{
    corral_dict_init(&bo->table, 64, corral_dict_keyed_hash);
    TAILQ_INIT(&bo->oldest);
    bo->min_ms = min_ms;
    bo->max_ms = max_ms < min_ms ? min_ms : max_ms;
    bo->max_keys = max_keys;
}

static void
drop(struct corral_backoff *bo, struct corral_backoff_key *b)
{
    corral_dict_remove(&bo->table, b->entry.hash, &b->entry.link);
    TAILQ_REMOVE(&bo->oldest, b, age);
    free(b->message);
    free(b);
}

void
corral_backoff_finish(struct corral_backoff *bo)
{
    struct corral_backoff_key *b;
    while ((b = TAILQ_FIRST(&bo->oldest)) != NULL)
        drop(bo, b);
    corral_dict_finish(&bo->table);
}

static struct corral_backoff_key *
lookup(struct corral_backoff *bo, const void *key, size_t keylen, uint64_t hash)
{
    if (bo->table.n == 0)
        return NULL;
    struct corral_dict_keyed *k =
        corral_dict_keyed_find(&bo->table, key, keylen, hash);
    return k != NULL ? corral_dict_entry(k, struct corral_backoff_key, entry)
                     : NULL;
}

struct corral_backoff_key *
corral_backoff_find(struct corral_backoff *bo, const void *key, size_t keylen,
                    uint64_t hash, uint64_t now)
{
    struct corral_backoff_key *b = lookup(bo, key, keylen, hash);
    if (b != NULL && now >= b->forget_at) {
        drop(bo, b);
        b = NULL;
    }
    return b;
}

void
corral_backoff_clear(struct corral_backoff *bo, const void *key, size_t keylen,
                     uint64_t hash)
{
    struct corral_backoff_key *b = lookup(bo, key, keylen, hash);
    if (b != NULL)
        drop(bo, b);
}

uint64_t
corral_backoff_note(struct corral_backoff *bo, const void *key, size_t keylen,
                    uint64_t hash, uint64_t now, int error, const char *message,
                    uint64_t retry_after_ms, uint64_t draw)
{
    struct corral_backoff_key *b =
        corral_backoff_find(bo, key, keylen, hash, now);
    if (b == NULL) {
        if (bo->table.n >= bo->max_keys)
            drop(bo, TAILQ_FIRST(&bo->oldest));
        b = xcalloc(1, sizeof(*b) + keylen);
        memcpy(b->key, key, keylen);
        b->entry.key = b->key;
        b->entry.keylen = keylen;
        b->entry.hash = hash;
        corral_dict_add(&bo->table, hash, &b->entry.link);
    } else {
        TAILQ_REMOVE(&bo->oldest, b, age);
        free(b->message);
    }
    TAILQ_INSERT_TAIL(&bo->oldest, b, age);
    b->error = error;
    b->message = xstrndup(message, strlen(message));
    uint64_t wait = 0;
    if (error != -EBUSY) {
        b->step_ms = b->step_ms == 0                ? bo->min_ms
                     : b->step_ms >= bo->max_ms / 2 ? bo->max_ms
                                                    : b->step_ms * 2;
        wait = b->step_ms - draw % (b->step_ms / 4 + 1);
    }
    if (wait < retry_after_ms)
        wait = retry_after_ms;
    b->until = now + wait;
    b->forget_at = b->until + 2 * (b->step_ms > wait ? b->step_ms : wait);
    return wait;
}

void
corral_backoff_keep(struct corral_backoff *bo, struct corral_backoff_key *b,
                    uint64_t at)
{
    uint64_t keep = at + 2 * b->step_ms;
    if (b->forget_at >= keep)
        return;
    b->forget_at = keep;
    TAILQ_REMOVE(&bo->oldest, b, age);
    TAILQ_INSERT_TAIL(&bo->oldest, b, age);
}

void
corral_backoff_sweep(struct corral_backoff *bo, uint64_t now)
{
    struct corral_backoff_key *b;
    while ((b = TAILQ_FIRST(&bo->oldest)) != NULL && now >= b->forget_at)
        drop(bo, b);
}
