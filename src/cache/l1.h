/* l1.h — the in-process store: a keyed hash table of values under a byte
 * budget, evicting with S3-FIFO. Every function that looks at freshness
 * takes now_ms; nothing here reads a clock, allocates or hashes a key on a
 * hit: hash is always the key's corral_key_hash(). */
#ifndef CORRAL_L1_H
#define CORRAL_L1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/value.h"
struct corral_l1; /* opaque */

/* Which S3-FIFO queue a value sits in (struct corral_value's queue). */
enum l1_queue {
    Q_NONE = 0, /* not linked */
    Q_SMALL,    /* probation: new keys */
    Q_MAIN,     /* keys read again, or remembered by the ghost */
};

/* Bytes charged to the budget beyond key, body, content type and aux: the
 * value header, its bucket share and allocator overhead. */
size_t corral_l1_overhead(void);
/* Bytes charged for v. */
size_t corral_l1_charge(const struct corral_value *v);

struct corral_l1_stats {
    uint64_t entries;
    uint64_t bytes;
    uint64_t form_bytes[CORRAL_VALUE_FORMS]; /* of each form kept */
    uint64_t evictions;
    uint64_t expirations;
};

/* A new, empty store of max_bytes. Caller frees with corral_l1_free(). */
struct corral_l1 *corral_l1_new(size_t max_bytes);
/* Drops every entry's reference. NULL is a no-op. */
void corral_l1_free(struct corral_l1 *l1);

/* A fresh value for key, or NULL. Counts an access for eviction. An entry
 * past all its stale windows is dropped on the spot. Borrowed. */
struct corral_value *corral_l1_get(struct corral_l1 *l1, const void *key,
                                   size_t keylen, uint64_t hash,
                                   uint64_t now_ms);
/* The value for key, fresh or not (for stale answers). Borrowed. */
struct corral_value *corral_l1_find(struct corral_l1 *l1, const void *key,
                                    size_t keylen, uint64_t hash);

/* Stores v (stamped) under its key, replacing an older value, evicting to
 * stay within budget. Takes a reference. Returns 0, -E2BIG (larger than the
 * whole budget; not stored) or -EINVAL (v is already in an L1). */
int corral_l1_put(struct corral_l1 *l1, struct corral_value *v, uint64_t hash);

/* Drops key. Returns true if it was there. */
bool corral_l1_del(struct corral_l1 *l1, const void *key, size_t keylen,
                   uint64_t hash);

/* Drops every entry (purges were missed). Returns how many. */
size_t corral_l1_clear(struct corral_l1 *l1);

/* Drops entries past all their stale windows, looking at no more than
 * max_buckets buckets from where the last sweep stopped. Returns how many
 * it dropped. */
size_t corral_l1_sweep(struct corral_l1 *l1, uint64_t now_ms,
                       size_t max_buckets);

void corral_l1_stats(const struct corral_l1 *l1, struct corral_l1_stats *out);

#endif
