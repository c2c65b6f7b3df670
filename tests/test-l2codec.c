/* test-l2codec.c — the second tier's value encoding: a round trip restores
 * everything a hit needs, and anything else under a key is a miss. */
#include <string.h>

#include "corral/value.h"
#include "l2codec.h"
#include "testlib.h"

static struct corral_value *
sample(void)
{
    struct corral_value *v =
        corral_value_new("k:1", 3, "{\"a\":1}\0x", 9, "application/json", 64);
    size_t cap;
    char *aux = corral_value_aux_mut(v, &cap);
    memcpy(aux, "HTTP/1.1 200 OK\r\n", 17);
    corral_value_set_aux_len(v, 17);
    corral_value_set_times(v, 1700000000123ull, 1700000030123ull, 5000, 7000);
    return v;
}

static void
test_round_trip(void)
{
    struct corral_value *v = sample(), *w;
    size_t n = corral_l2_size(v);
    char buf[256];

    CHECK(n <= sizeof(buf));
    corral_l2_encode(v, buf);
    CHECK_EQ_INT(corral_l2_decode(buf, n, "k:1", 3, &w), CORRAL_L2_OK);
    CHECK_EQ_INT(corral_value_len(w), 9); /* binary-safe: a NUL inside */
    CHECK(memcmp(corral_value_body(w), "{\"a\":1}\0x", 9) == 0);
    CHECK_EQ_STR(corral_value_content_type(w), "application/json");
    CHECK_EQ_STR(corral_value_etag(w), corral_value_etag(v));
    CHECK_EQ_INT(corral_value_aux_len(w), 17);
    CHECK(memcmp(corral_value_aux(w), "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK_EQ_INT(corral_value_stored_at(w), 1700000000123ull);
    CHECK_EQ_INT(corral_value_expires_at(w), 1700000030123ull);
    CHECK_EQ_INT(corral_value_swr_ms(w), 5000);
    CHECK_EQ_INT(corral_value_sie_ms(w), 7000);
    corral_value_unref(w);
    corral_value_unref(v);
}

static void
test_not_ours(void)
{
    struct corral_value *v = sample(), *w = NULL;
    size_t n = corral_l2_size(v);
    char buf[256], bad[256];

    corral_l2_encode(v, buf);
    CHECK_EQ_INT(corral_l2_decode(buf, n, "k:2", 3, &w), CORRAL_L2_OTHER_KEY);
    CHECK(w == NULL);
    memcpy(bad, buf, n);
    bad[3] = CORRAL_L2_VERSION + 1; /* a newer encoding */
    CHECK_EQ_INT(corral_l2_decode(bad, n, "k:1", 3, &w), CORRAL_L2_FOREIGN);
    CHECK_EQ_INT(corral_l2_decode("garbage", 7, "k:1", 3, &w),
                 CORRAL_L2_GARBAGE);
    CHECK_EQ_INT(corral_l2_decode("", 0, "k:1", 3, &w), CORRAL_L2_GARBAGE);
    for (size_t cut = 0; cut < n; cut++) /* every truncation */
        CHECK(corral_l2_decode(buf, cut, "k:1", 3, &w) != CORRAL_L2_OK);
    memcpy(bad, buf, n);
    bad[34] = (char)0xff; /* a body length that lies */
    CHECK_EQ_INT(corral_l2_decode(bad, n, "k:1", 3, &w), CORRAL_L2_GARBAGE);
    memcpy(bad, buf, n);
    memset(bad + 12, 0, 8); /* expires before it was stored */
    CHECK_EQ_INT(corral_l2_decode(bad, n, "k:1", 3, &w), CORRAL_L2_GARBAGE);
    CHECK(w == NULL);
    corral_value_unref(v);
}

/* A value that keeps other forms, with or without its body: every form,
 * its length and the body's ETag come back. */
static void
test_forms_round_trip(void)
{
    char etag[CORRAL_ETAG_LEN + 1];
    corral_value_etag_of("{\"a\":1}", 7, etag);
    for (int with_body = 0; with_body < 2; with_body++) {
        struct corral_value_form forms[CORRAL_VALUE_FORMS] = {
            {with_body ? "{\"a\":1}" : NULL, 7}, {"one", 3}, {"second", 6}};
        struct corral_value *v =
            corral_value_new_forms("k:1", 3, forms, 7, etag, "x/y", 4);
        size_t cap;
        memcpy(corral_value_aux_mut(v, &cap), "head", 4);
        corral_value_set_aux_len(v, 4);
        corral_value_set_times(v, 1000, 2000, 0, 0);
        char buf[256];
        size_t n = corral_l2_size(v);
        CHECK(n <= sizeof(buf));
        corral_l2_encode(v, buf);
        struct corral_value *w;
        CHECK_EQ_INT(corral_l2_decode(buf, n, "k:1", 3, &w), CORRAL_L2_OK);
        CHECK_EQ_INT(corral_value_forms(w), corral_value_forms(v));
        CHECK_EQ_INT(corral_value_len(w), 7);
        CHECK_EQ_STR(corral_value_etag(w), etag);
        CHECK((corral_value_body(w) != NULL) == with_body);
        size_t fl;
        const char *f = corral_value_form(w, 1, &fl);
        CHECK(f != NULL && fl == 3 && memcmp(f, "one", 3) == 0);
        f = corral_value_form(w, 2, &fl);
        CHECK(f != NULL && fl == 6 && memcmp(f, "second", 6) == 0);
        CHECK_EQ_INT(corral_value_aux_len(w), 4);
        corral_value_unref(w);
        /* Masks and lengths that disagree, an ETag not well formed. */
        char bad[256];
        memcpy(bad, buf, n);
        bad[42] ^= 4; /* form 2 not kept, yet its length says 6 */
        CHECK_EQ_INT(corral_l2_decode(bad, n, "k:1", 3, &w), CORRAL_L2_GARBAGE);
        memcpy(bad, buf, n);
        bad[42] = (char)0x80;
        CHECK_EQ_INT(corral_l2_decode(bad, n, "k:1", 3, &w), CORRAL_L2_GARBAGE);
        if (!with_body) {
            memcpy(bad, buf, n);
            bad[CORRAL_L2_HEADER - 2] = 'g';
            CHECK_EQ_INT(corral_l2_decode(bad, n, "k:1", 3, &w),
                         CORRAL_L2_GARBAGE);
        }
        for (size_t cut = 0; cut < n; cut++)
            CHECK(corral_l2_decode(buf, cut, "k:1", 3, &w) != CORRAL_L2_OK);
        corral_value_unref(v);
    }
}

/* What versions 1 and 2 wrote (a body and nothing else) still decodes:
 * values stored before forms existed. */
static void
test_old_versions(void)
{
    static const char body[] = "{\"old\":true}";
    for (int version = 1; version <= 2; version++) {
        char buf[256], *p = buf;
        size_t header = version == 1 ? 38 : 42;
        memset(buf, 0, sizeof(buf));
        memcpy(p, "CRV", 3);
        p[3] = (char)version;
        p[4] = 0x10;  /* stored_at 16 */
        p[12] = 0x20; /* expires_at 32 */
        p[28] = 3;    /* keylen */
        p[30] = 3;    /* ctype_len */
        p[32] = 2;    /* aux_len */
        p[34] = (char)(sizeof(body) - 1);
        if (version == 2)
            p[38] = 9; /* fill_ms */
        p += header;
        memcpy(p, "k:1x/yHD", 8);
        memcpy(p + 8, body, sizeof(body) - 1);
        size_t n = header + 8 + sizeof(body) - 1;
        struct corral_value *w;
        CHECK_EQ_INT(corral_l2_decode(buf, n, "k:1", 3, &w), CORRAL_L2_OK);
        CHECK_EQ_INT(corral_value_forms(w), 1);
        CHECK_EQ_INT(corral_value_len(w), sizeof(body) - 1);
        CHECK(memcmp(corral_value_body(w), body, sizeof(body) - 1) == 0);
        CHECK_EQ_STR(corral_value_content_type(w), "x/y");
        CHECK(memcmp(corral_value_aux(w), "HD", 2) == 0);
        CHECK_EQ_INT(corral_value_expires_at(w), 32);
        CHECK_EQ_INT(corral_value_fill_ms(w), version == 2 ? 9 : 0);
        char etag[CORRAL_ETAG_LEN + 1];
        corral_value_etag_of(body, sizeof(body) - 1, etag);
        CHECK_EQ_STR(corral_value_etag(w), etag);
        corral_value_unref(w);
    }
}

int
main(void)
{
    RUN(test_round_trip);
    RUN(test_not_ours);
    RUN(test_forms_round_trip);
    RUN(test_old_versions);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
