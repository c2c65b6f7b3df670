/* l1.c — the in-process store: a dict.h table of values, and S3-FIFO
 * eviction (Yang et al., SOSP '23): new
 * keys enter a small FIFO (10% of the budget); only keys read again while
 * there move on to the main FIFO, so a one-pass scan of cold keys churns the
 * small queue and leaves the hot working set alone. A ghost ring of hashes
 * remembers keys evicted from the small queue, so they return straight to
 * main. Values are linked in place: no allocation beyond the value itself. */
#include "l1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "siphash.h"
#include "value_impl.h"
#include "xalloc.h"

struct fifo {
    TAILQ_HEAD(fifo_q, corral_value) q; /* newest first, evicted last */
    size_t bytes;
};

struct ghost_slot {
    uint64_t hash;
    uint64_t seq; /* insertion number; older than the ring's size is gone */
};

struct corral_l1 {
    struct corral_dict table;
    size_t sweep_cursor;
    struct fifo small, main;
    struct ghost_slot *ghost;
    size_t ghost_mask;
    uint64_t ghost_seq;
    size_t max_bytes;
    struct corral_l1_stats stats;
};

#define MIN_BUCKETS 64
/* malloc's chunk header plus rounding, and the share of a bucket pointer at
 * a load factor between 0.5 and 1. */
#define ALLOC_OVERHEAD 16
#define BUCKET_SHARE 16

size_t
corral_l1_overhead(void)
{
    return sizeof(struct corral_value) + 2 + ALLOC_OVERHEAD + BUCKET_SHARE;
}

size_t
corral_l1_charge(const struct corral_value *v)
{
    /* The other forms' table (VALUE_FORMS) is what a value that keeps
     * them pays for them beyond their bytes. */
    size_t table = v->flags & VALUE_FORMS ? 4 * (CORRAL_VALUE_FORMS - 1) : 0;
    return corral_l1_overhead() + v->keylen + corral_value_stored_len(v) +
           table + v->ctype_len + v->aux_cap;
}

static struct corral_value *
value_of(const struct corral_dict_link *l)
{
    return corral_dict_entry(l, struct corral_value, hlink);
}

static bool
same_key(const struct corral_dict_link *l, const void *key, size_t keylen)
{
    const struct corral_value *v = value_of(l);
    return v->keylen == keylen && memcmp(value_key(v), key, keylen) == 0;
}

/* Values keep no hash (it would cost every entry 8 bytes): growing the
 * table hashes their keys again. */
static uint64_t
value_hash(const struct corral_dict_link *l)
{
    const struct corral_value *v = value_of(l);
    return corral_key_hash(value_key(v), v->keylen);
}

struct corral_l1 *
corral_l1_new(size_t max_bytes)
{
    struct corral_l1 *l1 = xcalloc(1, sizeof(*l1));
    l1->max_bytes = max_bytes;
    corral_dict_init(&l1->table, MIN_BUCKETS, value_hash);
    TAILQ_INIT(&l1->small.q);
    TAILQ_INIT(&l1->main.q);
    /* The ghost remembers about as many keys as main holds at 256 B each. */
    size_t g = 1024;
    while (g < max_bytes / 256 && g < (1u << 20))
        g <<= 1;
    l1->ghost = xcalloc(g, sizeof(*l1->ghost));
    l1->ghost_mask = g - 1;
    return l1;
}

void
corral_l1_free(struct corral_l1 *l1)
{
    if (l1 == NULL)
        return;
    for (size_t i = 0; i <= l1->table.mask; i++) {
        struct corral_dict_link *l = l1->table.buckets[i], *next;
        for (; l != NULL; l = next) {
            struct corral_value *v = value_of(l);
            next = l->next;
            v->flags &= (uint8_t)~VALUE_LINKED;
            v->queue = Q_NONE;
            l->next = NULL;
            corral_value_unref(v);
        }
    }
    corral_dict_finish(&l1->table);
    free(l1->ghost);
    free(l1);
}

/* The slot pointing at key's value, or at the NULL ending its chain. */
static struct corral_dict_link **
lookup(struct corral_l1 *l1, const void *key, size_t keylen, uint64_t h)
{
    return corral_dict_slot(&l1->table, h, key, keylen, same_key);
}

static void
fifo_push(struct fifo *q, struct corral_value *v, enum l1_queue which,
          size_t charge)
{
    v->queue = (uint8_t)which;
    TAILQ_INSERT_HEAD(&q->q, v, qlink);
    q->bytes += charge;
}

static void
fifo_remove(struct fifo *q, struct corral_value *v, size_t charge)
{
    TAILQ_REMOVE(&q->q, v, qlink);
    v->queue = Q_NONE;
    q->bytes -= charge;
}

static struct fifo *
queue_of(struct corral_l1 *l1, const struct corral_value *v)
{
    return v->queue == Q_SMALL ? &l1->small : &l1->main;
}

/* The ghost is 4-way set associative: a key is forgotten when it is older
 * than the ring's size, or when four newer keys share its set. */
#define GHOST_WAYS 4

static struct ghost_slot *
ghost_set(struct corral_l1 *l1, uint64_t h)
{
    return &l1->ghost[(h & l1->ghost_mask) & ~(size_t)(GHOST_WAYS - 1)];
}

static void
ghost_add(struct corral_l1 *l1, uint64_t h)
{
    struct ghost_slot *set = ghost_set(l1, h), *oldest = set;
    for (int i = 1; i < GHOST_WAYS; i++)
        if (set[i].seq < oldest->seq)
            oldest = &set[i];
    oldest->hash = h;
    oldest->seq = ++l1->ghost_seq;
}

static bool
ghost_take(struct corral_l1 *l1, uint64_t h)
{
    struct ghost_slot *set = ghost_set(l1, h);
    for (int i = 0; i < GHOST_WAYS; i++) {
        if (set[i].seq != 0 && set[i].hash == h &&
            l1->ghost_seq - set[i].seq <= l1->ghost_mask) {
            set[i].seq = 0;
            return true;
        }
    }
    return false;
}

/* Adds (sign 1) or takes (-1) v's forms to the bytes kept per form. */
static void
count_forms(struct corral_l1 *l1, const struct corral_value *v, int sign)
{
    for (unsigned i = 0; i < CORRAL_VALUE_FORMS; i++) {
        size_t n;
        if (corral_value_form(v, i, &n) != NULL)
            l1->stats.form_bytes[i] += sign > 0 ? n : -(uint64_t)n;
    }
}

/* Unlinks v from table and queue and drops the table's reference. */
static void
unlink_value(struct corral_l1 *l1, struct corral_dict_link **slot)
{
    struct corral_value *v = value_of(*slot);
    corral_dict_unlink(&l1->table, slot);
    fifo_remove(queue_of(l1, v), v, corral_l1_charge(v));
    v->flags &= (uint8_t)~VALUE_LINKED;
    l1->stats.entries--;
    l1->stats.bytes -= corral_l1_charge(v);
    count_forms(l1, v, -1);
    corral_value_unref(v);
}

static void
remove_value(struct corral_l1 *l1, struct corral_value *v, uint64_t h)
{
    unlink_value(l1, lookup(l1, value_key(v), v->keylen, h));
}

/* Evicts one entry from the small queue's tail, promoting the ones that
 * were read while there. Returns false when the queue is empty. */
static bool
evict_small(struct corral_l1 *l1)
{
    struct corral_value *v;
    while ((v = TAILQ_LAST(&l1->small.q, fifo_q)) != NULL) {
        size_t charge = corral_l1_charge(v);
        if (v->freq > 0) {
            fifo_remove(&l1->small, v, charge);
            v->freq = 0;
            fifo_push(&l1->main, v, Q_MAIN, charge);
            continue;
        }
        uint64_t h = corral_key_hash(value_key(v), v->keylen);
        ghost_add(l1, h);
        remove_value(l1, v, h);
        l1->stats.evictions++;
        return true;
    }
    return false;
}

/* Evicts one entry from main, giving each read entry another round. */
static bool
evict_main(struct corral_l1 *l1)
{
    struct corral_value *v;
    while ((v = TAILQ_LAST(&l1->main.q, fifo_q)) != NULL) {
        if (v->freq > 0) {
            size_t charge = corral_l1_charge(v);
            v->freq--;
            fifo_remove(&l1->main, v, charge);
            fifo_push(&l1->main, v, Q_MAIN, charge);
            continue;
        }
        remove_value(l1, v, corral_key_hash(value_key(v), v->keylen));
        l1->stats.evictions++;
        return true;
    }
    return false;
}

static void
evict_to(struct corral_l1 *l1, size_t budget)
{
    while (l1->stats.bytes > budget) {
        bool small_first =
            l1->small.bytes > l1->max_bytes / 10 || TAILQ_EMPTY(&l1->main.q);
        if (small_first ? evict_small(l1) || evict_main(l1)
                        : evict_main(l1) || evict_small(l1))
            continue;
        break;
    }
}

struct corral_value *
corral_l1_find(struct corral_l1 *l1, const void *key, size_t keylen,
               uint64_t hash)
{
    struct corral_dict_link *l = *lookup(l1, key, keylen, hash);
    return l != NULL ? value_of(l) : NULL;
}

struct corral_value *
corral_l1_get(struct corral_l1 *l1, const void *key, size_t keylen,
              uint64_t hash, uint64_t now_ms)
{
    struct corral_dict_link **slot = lookup(l1, key, keylen, hash);
    if (*slot == NULL)
        return NULL;
    struct corral_value *v = value_of(*slot);
    if (now_ms >= v->expires_at) {
        if (now_ms >= value_keep_until(v)) {
            unlink_value(l1, slot);
            l1->stats.expirations++;
        }
        return NULL;
    }
    if (v->freq < 3)
        v->freq++;
    return v;
}

int
corral_l1_put(struct corral_l1 *l1, struct corral_value *v, uint64_t h)
{
    if (v->flags & VALUE_LINKED)
        return -EINVAL;
    size_t charge = corral_l1_charge(v);
    struct corral_dict_link **slot = lookup(l1, value_key(v), v->keylen, h);
    bool was_main = false;
    if (*slot != NULL) {
        was_main = value_of(*slot)->queue == Q_MAIN;
        unlink_value(l1, slot);
    }
    if (charge > l1->max_bytes)
        return -E2BIG;
    evict_to(l1, l1->max_bytes - charge);

    v->flags |= VALUE_STORED | VALUE_LINKED;
    v->freq = 0;
    corral_value_ref(v);
    size_t mask = l1->table.mask;
    corral_dict_add(&l1->table, h, &v->hlink);
    if (l1->table.mask != mask)
        l1->sweep_cursor = 0;
    /* An overwrite keeps its place in main; a key the ghost remembers goes
     * straight there. */
    if (was_main || ghost_take(l1, h))
        fifo_push(&l1->main, v, Q_MAIN, charge);
    else
        fifo_push(&l1->small, v, Q_SMALL, charge);
    l1->stats.entries++;
    l1->stats.bytes += charge;
    count_forms(l1, v, 1);
    return 0;
}

bool
corral_l1_del(struct corral_l1 *l1, const void *key, size_t keylen,
              uint64_t hash)
{
    struct corral_dict_link **slot = lookup(l1, key, keylen, hash);
    if (*slot == NULL)
        return false;
    unlink_value(l1, slot);
    return true;
}

size_t
corral_l1_clear(struct corral_l1 *l1)
{
    size_t n = 0;
    for (size_t i = 0; i <= l1->table.mask; i++)
        while (l1->table.buckets[i] != NULL) {
            unlink_value(l1, &l1->table.buckets[i]);
            n++;
        }
    return n;
}

size_t
corral_l1_sweep(struct corral_l1 *l1, uint64_t now_ms, size_t max_buckets)
{
    size_t dropped = 0;
    for (size_t n = 0; n < max_buckets && n <= l1->table.mask; n++) {
        size_t i = l1->sweep_cursor;
        l1->sweep_cursor = (i + 1) & l1->table.mask;
        struct corral_dict_link **slot = &l1->table.buckets[i];
        while (*slot != NULL) {
            if (now_ms >= value_keep_until(value_of(*slot))) {
                unlink_value(l1, slot);
                dropped++;
            } else {
                slot = &(*slot)->next;
            }
        }
    }
    l1->stats.expirations += dropped;
    return dropped;
}

void
corral_l1_stats(const struct corral_l1 *l1, struct corral_l1_stats *out)
{
    *out = l1->stats;
}
