/* test-value.c — values: layout, ETag, aux area, refcounts, times. */
#include <errno.h>

#include "corral/value.h"
#include "testlib.h"
#include "value_impl.h"

static void
test_layout(void)
{
    struct corral_value *v =
        corral_value_new("k1", 2, "{\"a\":1}", 7, "application/json", 64);
    CHECK(v != NULL);
    CHECK_EQ_INT(corral_value_keylen(v), 2);
    CHECK(memcmp(corral_value_key(v), "k1", 2) == 0);
    CHECK_EQ_INT(corral_value_len(v), 7);
    CHECK_EQ_STR(corral_value_body(v), "{\"a\":1}");
    CHECK_EQ_STR(corral_value_content_type(v), "application/json");
    CHECK_EQ_INT(strlen(corral_value_etag(v)), CORRAL_ETAG_LEN);
    CHECK(corral_value_etag(v)[0] == '"');

    size_t cap = 0;
    char *aux = corral_value_aux_mut(v, &cap);
    CHECK(aux != NULL);
    CHECK_EQ_INT(cap, 64);
    memcpy(aux, "prefix", 6);
    CHECK_EQ_INT(corral_value_set_aux_len(v, 6), 0);
    CHECK_EQ_INT(corral_value_set_aux_len(v, 65), -EINVAL);
    CHECK_EQ_INT(corral_value_aux_len(v), 6);
    CHECK(memcmp(corral_value_aux(v), "prefix", 6) == 0);
    /* The aux area does not overlap the body or content type. */
    CHECK_EQ_STR(corral_value_content_type(v), "application/json");
    /* The embedder's flags: 0 until set, fixed once stored. */
    CHECK_EQ_INT(corral_value_flags(v), 0);
    CHECK_EQ_INT(corral_value_set_flags(v, 0x81), 0);
    CHECK_EQ_INT(corral_value_flags(v), 0x81);

    corral_value_stamp(v, 10000, 30000, 5000, 60000);
    CHECK_EQ_INT(corral_value_stored_at(v), 10000);
    CHECK_EQ_INT(corral_value_expires_at(v), 40000);
    CHECK_EQ_INT(corral_value_aux_mut(v, &cap) == NULL, 1);
    CHECK_EQ_INT(corral_value_set_aux_len(v, 1), -EPERM);
    CHECK_EQ_INT(corral_value_set_times(v, 1, 2, 0, 0), -EPERM);
    CHECK_EQ_INT(corral_value_set_flags(v, 0), -EPERM);
    CHECK_EQ_INT(corral_value_flags(v), 0x81);
    /* The marks: 0 until the first, writable once stored, only added,
     * four bits, apart from the flags. */
    CHECK_EQ_INT(corral_value_marks(v), 0);
    corral_value_mark(v, 0x2);
    corral_value_mark(v, 0x31);
    CHECK_EQ_INT(corral_value_marks(v), 0x3);
    corral_value_mark(v, 0);
    CHECK_EQ_INT(corral_value_marks(v), 0x3);
    corral_value_mark(v, 0xc);
    CHECK_EQ_INT(corral_value_marks(v), 0xf);
    CHECK_EQ_INT(corral_value_flags(v), 0x81);
    CHECK_EQ_INT(corral_value_ttl_s(v, 10000), 30);
    CHECK_EQ_INT(corral_value_ttl_s(v, 27999), 12);
    CHECK_EQ_INT(corral_value_ttl_s(v, 43200), -3);
    CHECK_EQ_INT(corral_value_age_s(v, 27999), 17);
    CHECK_EQ_INT(corral_value_age_s(v, 5000), 0);
    corral_value_unref(v);
}

/* A body kept in other forms too, or only in them. */
static void
test_forms(void)
{
    const char *body = "{\"a\":\"aaaaaaaaaaaa\"}";
    size_t len = strlen(body);
    struct corral_value_form forms[CORRAL_VALUE_FORMS] = {
        {body, len}, {"gz-bytes", 8}, {"brbytes", 7}};
    struct corral_value *v =
        corral_value_new_forms("k", 1, forms, len, NULL, "x/y", 32);
    CHECK(v != NULL);
    CHECK_EQ_INT(corral_value_forms(v), 7);
    CHECK_EQ_STR(corral_value_body(v), body);
    CHECK_EQ_INT(corral_value_len(v), len);
    size_t n;
    const char *f = corral_value_form(v, 1, &n);
    CHECK(f != NULL && n == 8 && memcmp(f, "gz-bytes", 8) == 0);
    f = corral_value_form(v, 2, &n);
    CHECK(f != NULL && n == 7 && memcmp(f, "brbytes", 7) == 0);
    CHECK(corral_value_form(v, 3, &n) == NULL && n == 0);
    CHECK_EQ_INT(corral_value_stored_len(v), len + 15);
    char etag[CORRAL_ETAG_LEN + 1];
    corral_value_etag_of(body, len, etag);
    CHECK_EQ_STR(corral_value_etag(v), etag);
    /* The aux area is the caller's still, apart from the forms. */
    size_t cap;
    char *aux = corral_value_aux_mut(v, &cap);
    memset(aux, 'A', cap);
    CHECK_EQ_STR(corral_value_content_type(v), "x/y");
    CHECK(memcmp(corral_value_form(v, 2, &n), "brbytes", 7) == 0);

    /* Without its body: the length and ETag are still the body's. */
    forms[0].bytes = NULL;
    forms[2].bytes = NULL;
    struct corral_value *w =
        corral_value_new_forms("k", 1, forms, len, etag, NULL, 0);
    CHECK(w != NULL);
    CHECK(corral_value_body(w) == NULL);
    CHECK(corral_value_form(w, 0, &n) == NULL && n == 0);
    CHECK_EQ_INT(corral_value_len(w), len);
    CHECK_EQ_STR(corral_value_etag(w), etag);
    CHECK_EQ_INT(corral_value_forms(w), 2);
    f = corral_value_form(w, 1, &n);
    CHECK(f != NULL && n == 8 && memcmp(f, "gz-bytes", 8) == 0);
    CHECK(corral_value_form(w, 2, &n) == NULL);
    CHECK_EQ_INT(corral_value_stored_len(w), 8);

    /* No body needs its ETag, well formed; no form at all is nothing. */
    CHECK(corral_value_new_forms("k", 1, forms, len, NULL, NULL, 0) == NULL);
    CHECK(corral_value_new_forms("k", 1, forms, len, "\"0123\"", NULL, 0) ==
          NULL);
    CHECK(corral_value_new_forms("k", 1, forms, len, "\"0123456789abcdeg\"",
                                 NULL, 0) == NULL);
    forms[1].bytes = NULL;
    CHECK(corral_value_new_forms("k", 1, forms, len, etag, NULL, 0) == NULL);
    /* A body whose length is not len. */
    forms[0] = (struct corral_value_form){body, len - 1};
    CHECK(corral_value_new_forms("k", 1, forms, len, NULL, NULL, 0) == NULL);
    corral_value_unref(v);
    corral_value_unref(w);
}

static void
test_etag(void)
{
    struct corral_value *a = corral_value_new("a", 1, "same", 4, NULL, 0);
    struct corral_value *b = corral_value_new("b", 1, "same", 4, "x/y", 0);
    struct corral_value *c = corral_value_new("a", 1, "diff", 4, NULL, 0);
    CHECK_EQ_STR(corral_value_etag(a), corral_value_etag(b));
    CHECK(strcmp(corral_value_etag(a), corral_value_etag(c)) != 0);
    CHECK_EQ_STR(corral_value_content_type(a), "");
    corral_value_unref(a);
    corral_value_unref(b);
    corral_value_unref(c);
}

static void
test_bounds_and_refs(void)
{
    CHECK(corral_value_new("", 0, "x", 1, NULL, 0) == NULL);
    static char big[CORRAL_KEY_MAX + 1];
    CHECK(corral_value_new(big, sizeof(big), "x", 1, NULL, 0) == NULL);
    CHECK(corral_value_new("k", 1, "x", 1, NULL, 70000) == NULL);
    struct corral_value *v = corral_value_new("k", 1, NULL, 0, NULL, 0);
    CHECK(v != NULL);
    CHECK_EQ_INT(corral_value_len(v), 0);
    CHECK(corral_value_ref(v) == v);
    CHECK_EQ_INT(v->refs, 2);
    corral_value_unref(v);
    CHECK_EQ_INT(v->refs, 1);
    corral_value_unref(v);
    corral_value_unref(NULL);
}

/* Issue 19: a value 0.5 s past expiry said "ttl=-0", as if fresh to the
 * second. Expired is at least one second past. */
static void
test_stale_ttl_never_minus_zero(void)
{
    struct corral_value *v = corral_value_new("k", 1, "x", 1, NULL, 0);
    corral_value_stamp(v, 10000, 1000, 0, 30000);
    CHECK_EQ_INT(corral_value_ttl_s(v, 10999), 0); /* fresh: 1 ms left */
    CHECK_EQ_INT(corral_value_ttl_s(v, 11000), -1);
    CHECK_EQ_INT(corral_value_ttl_s(v, 11500), -1);
    CHECK_EQ_INT(corral_value_ttl_s(v, 11999), -1);
    CHECK_EQ_INT(corral_value_ttl_s(v, 12000), -1);
    CHECK_EQ_INT(corral_value_ttl_s(v, 12999), -1);
    CHECK_EQ_INT(corral_value_ttl_s(v, 13000), -2);
    corral_value_unref(v);
}

int
main(void)
{
    RUN(test_layout);
    RUN(test_stale_ttl_never_minus_zero);
    RUN(test_etag);
    RUN(test_forms);
    RUN(test_bounds_and_refs);
    return 0;
}
