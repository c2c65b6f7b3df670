/* dict.c — the chained hash table of dict.h: growth by doubling, with
 * links moved in place (no allocation but the bucket array). */
#include "dict.h"

#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

void
corral_dict_init(struct corral_dict *d, size_t buckets,
                 corral_dict_hash_fn *hash_of)
{
    d->buckets = xcalloc(buckets, sizeof(*d->buckets));
    d->mask = buckets - 1;
    d->n = 0;
    d->hash_of = hash_of;
}

void
corral_dict_finish(struct corral_dict *d)
{
    free(d->buckets);
    d->buckets = NULL;
}

static void
grow(struct corral_dict *d)
{
    size_t n = (d->mask + 1) * 2;
    struct corral_dict_link **b = xcalloc(n, sizeof(*b));

    for (size_t i = 0; i <= d->mask; i++) {
        struct corral_dict_link *l = d->buckets[i], *next;
        for (; l != NULL; l = next) {
            next = l->next;
            size_t j = d->hash_of(l) & (n - 1);
            l->next = b[j];
            b[j] = l;
        }
    }
    free(d->buckets);
    d->buckets = b;
    d->mask = n - 1;
}

void
corral_dict_add(struct corral_dict *d, uint64_t hash,
                struct corral_dict_link *l)
{
    struct corral_dict_link **slot = &d->buckets[hash & d->mask];

    l->next = *slot;
    *slot = l;
    if (++d->n > d->mask + 1)
        grow(d);
}

bool
corral_dict_remove(struct corral_dict *d, uint64_t hash,
                   struct corral_dict_link *l)
{
    struct corral_dict_link **pp = &d->buckets[hash & d->mask];

    while (*pp != NULL && *pp != l)
        pp = &(*pp)->next;
    if (*pp == NULL)
        return false;
    corral_dict_unlink(d, pp);
    return true;
}

static struct corral_dict_keyed *
keyed_of(const struct corral_dict_link *l)
{
    return corral_dict_entry(l, struct corral_dict_keyed, link);
}

static bool
keyed_same(const struct corral_dict_link *l, const void *key, size_t keylen)
{
    const struct corral_dict_keyed *k = keyed_of(l);
    return k->keylen == keylen && memcmp(k->key, key, keylen) == 0;
}

uint64_t
corral_dict_keyed_hash(const struct corral_dict_link *l)
{
    return keyed_of(l)->hash;
}

struct corral_dict_keyed *
corral_dict_keyed_find(struct corral_dict *d, const void *key, size_t keylen,
                       uint64_t hash)
{
    struct corral_dict_link *l =
        *corral_dict_slot(d, hash, key, keylen, keyed_same);
    return l != NULL ? keyed_of(l) : NULL;
}
