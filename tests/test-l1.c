/* test-l1.c — the L1 store: budget, S3-FIFO scan resistance, references
 * across eviction, TTL boundaries on a fake clock, lazy and swept expiry. */
#include <errno.h>
#include <stdbool.h>

#include "l1.h"
#include "siphash.h"
#include "testlib.h"
#include "value_impl.h"

/* L1 takes the key's hash from its caller: these hash as the cache does. */
static struct corral_value *
l1_get(struct corral_l1 *l1, const void *key, size_t keylen, uint64_t now)
{
    return corral_l1_get(l1, key, keylen, corral_key_hash(key, keylen), now);
}

static struct corral_value *
l1_find(struct corral_l1 *l1, const void *key, size_t keylen)
{
    return corral_l1_find(l1, key, keylen, corral_key_hash(key, keylen));
}

static int
l1_put(struct corral_l1 *l1, struct corral_value *v)
{
    return corral_l1_put(l1, v, corral_key_hash(value_key(v), v->keylen));
}

static bool
l1_del(struct corral_l1 *l1, const void *key, size_t keylen)
{
    return corral_l1_del(l1, key, keylen, corral_key_hash(key, keylen));
}

static struct corral_value *
make(const char *key, size_t body_len, uint64_t now, uint64_t ttl)
{
    static char body[4096];
    memset(body, 'x', sizeof(body));
    struct corral_value *v =
        corral_value_new(key, strlen(key), body, body_len, "text/plain", 0);
    corral_value_stamp(v, now, ttl, 0, 0);
    return v;
}

/* Stores a fresh value and drops the caller's reference. */
static int
put(struct corral_l1 *l1, const char *key, size_t body_len, uint64_t now,
    uint64_t ttl)
{
    struct corral_value *v = make(key, body_len, now, ttl);
    int rc = l1_put(l1, v);
    corral_value_unref(v);
    return rc;
}

static void
test_overhead(void)
{
    /* The bound: at most 128 bytes per entry beyond key and value
     * (the value's body, content type and aux area). */
    printf("# per-entry overhead: %zu bytes (header %zu)\n",
           corral_l1_overhead(), sizeof(struct corral_value));
    CHECK(corral_l1_overhead() <= 128);
    struct corral_value *v = make("abc", 100, 0, 1000);
    CHECK_EQ_INT(corral_l1_charge(v),
                 corral_l1_overhead() + 3 + 100 + strlen("text/plain"));
    corral_value_unref(v);
    /* Every form kept counts, and their table; a form left out does not. */
    char etag[CORRAL_ETAG_LEN + 1];
    corral_value_etag_of("b", 1, etag);
    static const char bytes[40];
    struct corral_value_form forms[CORRAL_VALUE_FORMS] = {
        {NULL, 0}, {bytes, 40}, {bytes, 30}};
    v = corral_value_new_forms("abc", 3, forms, 1000, etag, "text/plain", 0);
    CHECK_EQ_INT(corral_l1_charge(v), corral_l1_overhead() + 3 + 70 +
                                          4 * (CORRAL_VALUE_FORMS - 1) +
                                          strlen("text/plain"));
    corral_value_unref(v);
}

static void
test_budget(void)
{
    size_t max = 64 * 1024;
    struct corral_l1 *l1 = corral_l1_new(max);
    struct corral_l1_stats st;
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        CHECK_EQ_INT(put(l1, key, (size_t)(i * 37) % 2000, 0, 60000), 0);
        corral_l1_stats(l1, &st);
        CHECK(st.bytes <= max);
    }
    CHECK(st.evictions > 0);
    CHECK(st.entries > 0);
    /* Larger than the whole budget: refused, nothing else disturbed. */
    struct corral_value *huge = corral_value_new("huge", 4, NULL, 0, NULL, 0);
    struct corral_l1 *tiny = corral_l1_new(100);
    corral_value_stamp(huge, 0, 1000, 0, 0);
    CHECK_EQ_INT(l1_put(tiny, huge), -E2BIG);
    CHECK_EQ_INT(huge->refs, 1);
    corral_value_unref(huge);
    corral_l1_free(tiny);
    corral_l1_free(l1);
}

static void
test_scan_resistance(void)
{
    /* Budget for ~1000 entries of ~300 B; a hot set of 200 keys, read
     * twice, then a one-pass scan of 20,000 cold keys with no hot reads at
     * all: S3-FIFO keeps the whole hot set. (LRU or SIEVE lose all of it.) */
    size_t per = corral_l1_overhead() + 8 + 200 + strlen("text/plain");
    struct corral_l1 *l1 = corral_l1_new(per * 1000);
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "hot-%d", i);
        CHECK_EQ_INT(put(l1, key, 200, 0, 3600000), 0);
    }
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 200; i++) {
            snprintf(key, sizeof(key), "hot-%d", i);
            CHECK(l1_get(l1, key, strlen(key), 1) != NULL);
        }
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "cold-%d", i);
        CHECK_EQ_INT(put(l1, key, 200, 2, 3600000), 0);
    }
    int survived = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "hot-%d", i);
        survived += l1_find(l1, key, strlen(key)) != NULL;
    }
    CHECK_EQ_INT(survived, 200);
    struct corral_l1_stats st;
    corral_l1_stats(l1, &st);
    CHECK(st.evictions >= 19000);
    corral_l1_free(l1);
}

static void
test_ghost_readmission(void)
{
    /* A key evicted from the small queue and stored again goes straight
     * to main. First fill main with 90 keys that were read. */
    size_t per = corral_l1_overhead() + 8 + 200 + strlen("text/plain");
    struct corral_l1 *l1 = corral_l1_new(per * 100);
    char key[32];
    for (int i = 0; i < 90; i++) {
        snprintf(key, sizeof(key), "a-%d", i);
        put(l1, key, 200, 0, 3600000);
        CHECK(l1_get(l1, key, strlen(key), 0) != NULL);
    }
    for (int i = 90; i < 120; i++) {
        snprintf(key, sizeof(key), "a-%d", i);
        put(l1, key, 200, 0, 3600000);
    }
    CHECK_EQ_INT(l1_find(l1, "a-0", 3)->queue, Q_MAIN);
    CHECK_EQ_INT(put(l1, "again", 200, 0, 3600000), 0);
    CHECK_EQ_INT(l1_find(l1, "again", 5)->queue, Q_SMALL);
    /* 20 new keys push it out of the ~10-entry small queue. */
    for (int i = 120; i < 140; i++) {
        snprintf(key, sizeof(key), "a-%d", i);
        put(l1, key, 200, 0, 3600000);
    }
    CHECK(l1_find(l1, "again", 5) == NULL);
    CHECK_EQ_INT(put(l1, "again", 200, 0, 3600000), 0);
    CHECK_EQ_INT(l1_find(l1, "again", 5)->queue, Q_MAIN);
    corral_l1_free(l1);
}

static void
test_reference_survives(void)
{
    size_t per = corral_l1_overhead() + 8 + 100 + strlen("text/plain");
    struct corral_l1 *l1 = corral_l1_new(per * 10);
    CHECK_EQ_INT(put(l1, "held", 100, 0, 60000), 0);
    struct corral_value *v = l1_find(l1, "held", 4); /* no access */
    CHECK(v != NULL);
    corral_value_ref(v); /* a reader serving it */
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "other-%d", i);
        put(l1, key, 100, 0, 60000);
    }
    CHECK(l1_find(l1, "held", 4) == NULL); /* evicted... */
    CHECK_EQ_INT(v->refs, 1);              /* ...but alive */
    CHECK_EQ_INT(corral_value_len(v), 100);
    CHECK(memcmp(corral_value_key(v), "held", 4) == 0);
    /* Overwrite and invalidate behave the same. */
    CHECK_EQ_INT(put(l1, "w", 10, 0, 60000), 0);
    struct corral_value *w = corral_value_ref(l1_get(l1, "w", 1, 0));
    CHECK_EQ_INT(put(l1, "w", 20, 0, 60000), 0);
    CHECK_EQ_INT(corral_value_len(w), 10);
    CHECK_EQ_INT(corral_value_len(l1_get(l1, "w", 1, 0)), 20);
    CHECK(l1_del(l1, "w", 1));
    CHECK(!l1_del(l1, "w", 1));
    corral_value_unref(w);
    corral_value_unref(v);
    corral_l1_free(l1);
}

static void
test_ttl_boundaries(void)
{
    struct corral_l1 *l1 = corral_l1_new(1 << 20);
    CHECK_EQ_INT(put(l1, "k", 10, 1000, 30000), 0);
    CHECK(l1_get(l1, "k", 1, 1000) != NULL);
    CHECK(l1_get(l1, "k", 1, 30999) != NULL);
    CHECK(l1_get(l1, "k", 1, 31000) == NULL); /* expires_at: gone */
    struct corral_l1_stats st;
    corral_l1_stats(l1, &st);
    CHECK_EQ_INT(st.entries, 0);
    CHECK_EQ_INT(st.expirations, 1);

    /* With a stale window the entry stays findable, never fresh. */
    struct corral_value *v = corral_value_new("s", 1, "b", 1, NULL, 0);
    corral_value_stamp(v, 0, 1000, 5000, 0);
    CHECK_EQ_INT(l1_put(l1, v), 0);
    corral_value_unref(v);
    CHECK(l1_get(l1, "s", 1, 999) != NULL);
    CHECK(l1_get(l1, "s", 1, 1000) == NULL);
    CHECK(l1_find(l1, "s", 1) != NULL);
    CHECK(l1_get(l1, "s", 1, 6000) == NULL);
    CHECK(l1_find(l1, "s", 1) == NULL);
    corral_l1_free(l1);
}

static void
test_sweep(void)
{
    struct corral_l1 *l1 = corral_l1_new(16 << 20);
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put(l1, key, 10, 0, i < 500 ? 1000 : 100000);
    }
    /* A bounded sweep looks at a few buckets only. */
    size_t first = corral_l1_sweep(l1, 5000, 4);
    CHECK(first < 500);
    size_t total = first;
    for (int i = 0; i < 1000 && total < 500; i++)
        total += corral_l1_sweep(l1, 5000, 64);
    CHECK_EQ_INT(total, 500);
    struct corral_l1_stats st;
    corral_l1_stats(l1, &st);
    CHECK_EQ_INT(st.entries, 500);
    CHECK_EQ_INT(st.expirations, 500);
    corral_l1_free(l1);
}

/* SipHash-2-4's reference vectors (key 00..0f, message 00 01 02 ...), and
 * the empty input with a NULL pointer, which clang's UBSan flagged as
 * arithmetic on NULL. */
static void
test_siphash(void)
{
    uint8_t key[16], msg[15];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        msg[i] = (uint8_t)i;
    CHECK(corral_siphash(NULL, 0, key) == 0x726fdb47dd0e0e31ull);
    CHECK(corral_siphash(msg, 1, key) == 0x74f839c593dc67fdull);
    CHECK(corral_siphash(msg, 2, key) == 0x0d6c8009d9a94f5aull);
    CHECK(corral_siphash(msg, 15, key) == 0xa129ca6149be45e5ull);
}

int
main(void)
{
    RUN(test_siphash);
    RUN(test_overhead);
    RUN(test_budget);
    RUN(test_scan_resistance);
    RUN(test_ghost_readmission);
    RUN(test_reference_survives);
    RUN(test_ttl_boundaries);
    RUN(test_sweep);
    return 0;
}
