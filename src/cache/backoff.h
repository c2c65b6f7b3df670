/* backoff.h — the per-key failure memory: a key whose last fill failed
 * gets no new fill until its wait is over. Waits double per failure from
 * min_ms to max_ms, drawn with jitter; a key is forgotten a while after its
 * wait (so a failure long after starts again from the smallest), and the
 * oldest go first past max_keys. Time and the random draw are parameters.
 * Internal to libcorral: cache.c asks it before every fill. */
#ifndef CORRAL_BACKOFF_H
#define CORRAL_BACKOFF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "dict.h"

/* One failing key. */
struct corral_backoff_key {
    struct corral_dict_keyed entry;      /* the table: key and hash */
    TAILQ_ENTRY(corral_backoff_key) age; /* by last failure or try */
    uint64_t until;                      /* ms: no fill before */
    uint64_t forget_at;                  /* ms: dropped after */
    uint64_t step_ms; /* the interval last drawn from; 0: none yet */
    int error;        /* the last failure, to answer callers with */
    char *message;
    char key[]; /* entry.key */
};

struct corral_backoff {
    struct corral_dict table;
    TAILQ_HEAD(backoff_age, corral_backoff_key) oldest; /* oldest first */
    uint64_t min_ms, max_ms;
    size_t max_keys;
};

void corral_backoff_init(struct corral_backoff *bo, uint64_t min_ms,
                         uint64_t max_ms, size_t max_keys);
/* Forgets every key. */
void corral_backoff_finish(struct corral_backoff *bo);

/* The key's entry, if one is remembered and not yet forgotten at now
 * (a forgotten one is dropped). Borrowed; valid until the next call that
 * notes, clears or sweeps. */
struct corral_backoff_key *corral_backoff_find(struct corral_backoff *bo,
                                               const void *key, size_t keylen,
                                               uint64_t hash, uint64_t now);

/* Forgets key (a success, or a purge asking for a new try). */
void corral_backoff_clear(struct corral_backoff *bo, const void *key,
                          size_t keylen, uint64_t hash);

/* key failed at now with error: it waits before the next fill. The step
 * doubles from min_ms to max_ms and each wait is drawn (with draw, any
 * random number) from the upper quarter below it, so keys that failed
 * together do not all come back together; retry_after_ms (the compute's
 * word, or the fleet's) is a floor. -EBUSY (paused, over budget) sets only
 * that floor. Copies message. Returns the wait, ms. */
uint64_t corral_backoff_note(struct corral_backoff *bo, const void *key,
                             size_t keylen, uint64_t hash, uint64_t now,
                             int error, const char *message,
                             uint64_t retry_after_ms, uint64_t draw);

/* A try of b's key runs and may fail as late as at: its failure comes
 * soon after the try however long that took, so b is kept until then (and
 * its step doubles). */
void corral_backoff_keep(struct corral_backoff *bo,
                         struct corral_backoff_key *b, uint64_t at);

/* Forgets the keys past their time at now. */
void corral_backoff_sweep(struct corral_backoff *bo, uint64_t now);

#endif
