/* test-dict.c — the one hash table shape: lookups by key under any hash,
 * growth by doubling with every entry kept, removal by identity, and keys
 * whose hashes collide. */
#include <stdbool.h>
#include <stdio.h>

#include "dict.h"
#include "siphash.h"
#include "testlib.h"

struct item {
    struct corral_dict_link link;
    uint64_t hash;
    char key[16];
};

static struct item *
item_of(const struct corral_dict_link *l)
{
    return corral_dict_entry(l, struct item, link);
}

static bool
same(const struct corral_dict_link *l, const void *key, size_t keylen)
{
    const struct item *it = item_of(l);
    return strlen(it->key) == keylen && memcmp(it->key, key, keylen) == 0;
}

static uint64_t
hash_of(const struct corral_dict_link *l)
{
    return item_of(l)->hash;
}

static struct item *
find(struct corral_dict *d, const char *key, uint64_t h)
{
    struct corral_dict_link *l =
        *corral_dict_slot(d, h, key, strlen(key), same);
    return l ? item_of(l) : NULL;
}

#define N 5000

static void
test_grow_keeps_every_entry(void)
{
    static struct item items[N];
    struct corral_dict d;
    corral_dict_init(&d, 4, hash_of);
    for (int i = 0; i < N; i++) {
        snprintf(items[i].key, sizeof(items[i].key), "k%d", i);
        items[i].hash = corral_key_hash(items[i].key, strlen(items[i].key));
        CHECK(find(&d, items[i].key, items[i].hash) == NULL);
        corral_dict_add(&d, items[i].hash, &items[i].link);
    }
    CHECK_EQ_INT(d.n, N);
    CHECK(d.mask + 1 >= N);              /* doubled past one entry a bucket */
    CHECK((d.mask & (d.mask + 1)) == 0); /* a power of two */
    for (int i = 0; i < N; i++)
        CHECK(find(&d, items[i].key, items[i].hash) == &items[i]);
    CHECK(find(&d, "absent", corral_key_hash("absent", 6)) == NULL);
    /* Removal by identity, every other one. */
    for (int i = 0; i < N; i += 2)
        CHECK(corral_dict_remove(&d, items[i].hash, &items[i].link));
    CHECK(!corral_dict_remove(&d, items[0].hash, &items[0].link));
    CHECK_EQ_INT(d.n, N / 2);
    for (int i = 0; i < N; i++)
        CHECK(find(&d, items[i].key, items[i].hash) ==
              (i % 2 ? &items[i] : NULL));
    corral_dict_finish(&d);
}

static void
test_colliding_hashes(void)
{
    struct item a = {.hash = 7, .key = "a"}, b = {.hash = 7, .key = "b"},
                c = {.hash = 7 + 64, .key = "c"};
    struct corral_dict d;
    corral_dict_init(&d, 64, hash_of);
    corral_dict_add(&d, a.hash, &a.link);
    corral_dict_add(&d, b.hash, &b.link);
    corral_dict_add(&d, c.hash, &c.link); /* same bucket, other hash */
    CHECK(find(&d, "a", 7) == &a);
    CHECK(find(&d, "b", 7) == &b);
    CHECK(find(&d, "c", 7 + 64) == &c);
    /* Unlinking through the slot a lookup found keeps the chain. */
    corral_dict_unlink(&d, corral_dict_slot(&d, 7, "b", 1, same));
    CHECK(b.link.next == NULL);
    CHECK(find(&d, "b", 7) == NULL);
    CHECK(find(&d, "a", 7) == &a);
    CHECK(find(&d, "c", 7 + 64) == &c);
    CHECK_EQ_INT(d.n, 2);
    corral_dict_finish(&d);
}

static void
test_keyed_entries(void)
{
    struct corral_dict_keyed a = {.key = "alpha", .keylen = 5},
                             b = {.key = "alphabet", .keylen = 8};
    struct corral_dict d;
    a.hash = corral_key_hash(a.key, a.keylen);
    b.hash = corral_key_hash(b.key, b.keylen);
    corral_dict_init(&d, 1, corral_dict_keyed_hash);
    corral_dict_add(&d, a.hash, &a.link);
    corral_dict_add(&d, b.hash, &b.link); /* grows: rehashed from .hash */
    CHECK_EQ_INT(d.mask, 1);
    CHECK(corral_dict_keyed_find(&d, "alpha", 5, a.hash) == &a);
    CHECK(corral_dict_keyed_find(&d, "alphabet", 8, b.hash) == &b);
    CHECK(corral_dict_keyed_find(&d, "alph", 4, corral_key_hash("alph", 4)) ==
          NULL);
    corral_dict_finish(&d);
}

static void
test_key_hash_is_seeded(void)
{
    static const uint8_t zero[16];
    /* Set before main, and not the all-zero key. */
    CHECK(memcmp(corral_key_seed, zero, sizeof(zero)) != 0);
    CHECK(corral_key_hash("k", 1) == corral_siphash("k", 1, corral_key_seed));
    CHECK(corral_key_hash("k", 1) != corral_key_hash("l", 1));
}

int
main(void)
{
    RUN(test_grow_keeps_every_entry);
    RUN(test_colliding_hashes);
    RUN(test_keyed_entries);
    RUN(test_key_hash_is_seeded);
    return 0;
}
