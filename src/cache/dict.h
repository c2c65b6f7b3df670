/* dict.h — libcorral's one hash table shape (as redis's dict.c): chained
 * buckets of links embedded in the entries, keyed by the key's SipHash
 * under the process's seed (corral_key_hash), doubling when entries
 * outnumber buckets. It never allocates per entry and never hashes a key:
 * the caller hashes once and passes the hash to every lookup. Internal to
 * libcorral; L1, single flight and backoff each embed one. */
#ifndef CORRAL_DICT_H
#define CORRAL_DICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct corral_dict_link {
    struct corral_dict_link *next; /* bucket chain */
};

/* Is l's entry the one for key? */
typedef bool corral_dict_same_fn(const struct corral_dict_link *l,
                                 const void *key, size_t keylen);
/* The hash of l's entry's key, to rehash when the table grows. */
typedef uint64_t corral_dict_hash_fn(const struct corral_dict_link *l);

struct corral_dict {
    struct corral_dict_link **buckets;
    size_t mask; /* buckets - 1 */
    size_t n;    /* entries */
    corral_dict_hash_fn *hash_of;
};

/* The entry of type holding link l as member. */
#define corral_dict_entry(l, type, member)                                     \
    ((type *)(void *)((char *)(l)-offsetof(type, member)))

/* Sets d up with buckets (a power of two) buckets. Aborts when out of
 * memory (see xalloc.h). */
void corral_dict_init(struct corral_dict *d, size_t buckets,
                      corral_dict_hash_fn *hash_of);
/* Frees the buckets; the entries are the caller's. */
void corral_dict_finish(struct corral_dict *d);

/* The slot pointing at key's link (*slot != NULL), or at the NULL ending
 * its chain. Inline: it is the hit path's lookup. */
static inline struct corral_dict_link **
corral_dict_slot(struct corral_dict *d, uint64_t hash, const void *key,
                 size_t keylen, corral_dict_same_fn *same)
{
    struct corral_dict_link **pp = &d->buckets[hash & d->mask];
    while (*pp != NULL && !same(*pp, key, keylen))
        pp = &(*pp)->next;
    return pp;
}

/* Unlinks the entry *slot points at. */
static inline void
corral_dict_unlink(struct corral_dict *d, struct corral_dict_link **slot)
{
    struct corral_dict_link *l = *slot;
    *slot = l->next;
    l->next = NULL;
    d->n--;
}

/* Links l (not in d; its key hashes to hash) at the head of its bucket;
 * doubles the buckets when entries outnumber them. */
void corral_dict_add(struct corral_dict *d, uint64_t hash,
                     struct corral_dict_link *l);

/* Unlinks l (its key hashes to hash) if d holds it. Returns whether it
 * did. */
bool corral_dict_remove(struct corral_dict *d, uint64_t hash,
                        struct corral_dict_link *l);

/* An entry that keeps its key's hash and where its key is: a table of them
 * needs no functions of its owner (init with corral_dict_keyed_hash).
 * L1's values keep no hash (8 bytes an entry), so they are not keyed. */
struct corral_dict_keyed {
    struct corral_dict_link link;
    uint64_t hash;
    const char *key; /* the entry's own copy */
    size_t keylen;
};

uint64_t corral_dict_keyed_hash(const struct corral_dict_link *l);

/* The keyed entry for key, or NULL. */
struct corral_dict_keyed *corral_dict_keyed_find(struct corral_dict *d,
                                                 const void *key, size_t keylen,
                                                 uint64_t hash);

#endif
