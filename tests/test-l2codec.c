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
    bad[3] = 3; /* a newer encoding */
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

int
main(void)
{
    RUN(test_round_trip);
    RUN(test_not_ours);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
