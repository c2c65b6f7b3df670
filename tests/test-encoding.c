/* test-encoding.c — the stored codings: byte-exact round trips through
 * gzip and br at the edges (0 B, 1 B, the threshold and either side of
 * it, 1 MB), what is worth keeping, and decoding that refuses what is not
 * exactly the body (corrupt, short, long, trailing bytes, a bomb). */
#include <errno.h>

#include "encoding.h"
#include "testlib.h"

/* len bytes of JSON-like text that compresses as JSON does. */
static char *
json_of(size_t len, unsigned seed)
{
    char *b = malloc(len + 1);
    static const char words[] = "{\"id\":\"coin\",\"price\":1234.56,\"v\":[";
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (seed >> 16) % 7 == 0 ? (char)('0' + (seed >> 8) % 10)
                                     : words[i % (sizeof(words) - 1)];
    }
    b[len] = '\0';
    return b;
}

static void
round_trip(size_t len)
{
    char *body = json_of(len, (unsigned)len);
    for (int c = CORRAL_CODING_GZIP; c <= CORRAL_CODING_BR; c++) {
        size_t cap = corral_encoding_bound(c, len);
        char *z = malloc(cap);
        size_t n = corral_encoding_compress(c, body, len, z, cap);
        CHECK(n > 0 && n <= cap);
        char *back = malloc(len + 1);
        CHECK_EQ_INT(corral_encoding_decode(c, z, n, back, len), 0);
        CHECK(len == 0 || memcmp(back, body, len) == 0);
        /* Not the body: one byte short, one byte long, a byte after the
         * stream, a stream cut short. */
        if (len > 0)
            CHECK_EQ_INT(corral_encoding_decode(c, z, n, back, len - 1),
                         -EBADMSG);
        char *more = malloc(len + 2);
        CHECK_EQ_INT(corral_encoding_decode(c, z, n, more, len + 1), -EBADMSG);
        char *tail = malloc(n + 1);
        memcpy(tail, z, n);
        tail[n] = 'x';
        CHECK_EQ_INT(corral_encoding_decode(c, tail, n + 1, back, len),
                     -EBADMSG);
        CHECK_EQ_INT(corral_encoding_decode(c, z, n - 1, back, len), -EBADMSG);
        free(tail);
        free(more);
        free(back);
        free(z);
    }
    free(body);
}

static void
test_round_trips(void)
{
    static const size_t sizes[] = {0,
                                   1,
                                   2,
                                   CORRAL_ENCODING_MIN - 1,
                                   CORRAL_ENCODING_MIN,
                                   CORRAL_ENCODING_MIN + 1,
                                   16 * 1024,
                                   1 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++)
        round_trip(sizes[i]);
}

/* What corral_encoding_make() keeps: identity only below the threshold,
 * gzip and br above it when they pay, nothing of an incompressible body. */
static void
test_make(void)
{
    struct corral_encoded e;
    char *small = json_of(CORRAL_ENCODING_MIN - 1, 1);
    corral_encoding_make(small, CORRAL_ENCODING_MIN - 1, &e);
    CHECK(e.form[0].bytes == small);
    CHECK(e.form[1].bytes == NULL && e.form[2].bytes == NULL);
    corral_encoding_finish(&e);
    free(small);

    /* Below CORRAL_ENCODING_IDENTITY_MAX identity is kept beside gzip. */
    size_t mid = CORRAL_ENCODING_IDENTITY_MAX - 1;
    char *some = json_of(mid, 4);
    corral_encoding_make(some, mid, &e);
    CHECK(e.form[0].bytes == some && e.form[0].len == mid);
    CHECK(e.form[1].bytes != NULL);
    corral_encoding_finish(&e);
    free(some);

    /* From it on, not: gzip's form speaks for it. */
    size_t len = 16 * 1024;
    char *big = json_of(len, 2);
    corral_encoding_make(big, len, &e);
    CHECK(e.form[0].bytes == NULL);
    CHECK(e.form[1].bytes != NULL && e.form[1].len < len / 2);
    char *back = malloc(len);
    CHECK_EQ_INT(corral_encoding_decode(CORRAL_CODING_GZIP, e.form[1].bytes,
                                        e.form[1].len, back, len),
                 0);
    CHECK(memcmp(back, big, len) == 0);
    if (e.form[2].bytes != NULL) {
        CHECK(e.form[2].len <= e.form[1].len - e.form[1].len / 16);
        CHECK_EQ_INT(corral_encoding_decode(CORRAL_CODING_BR, e.form[2].bytes,
                                            e.form[2].len, back, len),
                     0);
        CHECK(memcmp(back, big, len) == 0);
    }
    corral_encoding_finish(&e);
    free(back);
    free(big);

    /* Random bytes do not compress: identity only. */
    char *noise = malloc(4096);
    unsigned x = 7;
    for (int i = 0; i < 4096; i++)
        noise[i] = (char)((x = x * 1103515245u + 12345u) >> 16);
    corral_encoding_make(noise, 4096, &e);
    CHECK(e.form[0].bytes == noise);
    CHECK(e.form[1].bytes == NULL && e.form[2].bytes == NULL);
    corral_encoding_finish(&e);
    free(noise);
}

/* A small stream that inflates far past what the value says: refused,
 * and nothing written past the buffer (ASan would see it). */
static void
test_bomb(void)
{
    size_t big = 8 << 20;
    char *zeros = calloc(1, big);
    for (int c = CORRAL_CODING_GZIP; c <= CORRAL_CODING_BR; c++) {
        size_t cap = corral_encoding_bound(c, big);
        char *z = malloc(cap);
        size_t n = corral_encoding_compress(c, zeros, big, z, cap);
        CHECK(n > 0 && n < 64 * 1024);
        char *out = malloc(1000);
        CHECK_EQ_INT(corral_encoding_decode(c, z, n, out, 1000), -EBADMSG);
        free(out);
        free(z);
    }
    free(zeros);
    char out[16];
    CHECK_EQ_INT(corral_encoding_decode(CORRAL_CODING_IDENTITY, "x", 1, out, 1),
                 -EBADMSG);
    CHECK_EQ_INT(
        corral_encoding_decode(CORRAL_CODING_GZIP, "garbage", 7, out, 16),
        -EBADMSG);
}

/* The identity bytes of a value that keeps only its gzip form. */
static void
test_identity_of_value(void)
{
    size_t len = 8192;
    char *body = json_of(len, 3);
    struct corral_encoded e;
    corral_encoding_make(body, len, &e);
    CHECK(e.form[1].bytes != NULL);
    char etag[CORRAL_ETAG_LEN + 1];
    corral_value_etag_of(body, len, etag);
    struct corral_value_form forms[CORRAL_VALUE_FORMS] = {{NULL, 0}, e.form[1]};
    struct corral_value *v =
        corral_value_new_forms("k", 1, forms, len, etag, NULL, 0);
    CHECK(v != NULL);
    char *own;
    const char *id = corral_encoding_identity(v, &own);
    CHECK(id != NULL && own == id && memcmp(id, body, len) == 0);
    free(own);
    corral_value_unref(v);
    /* With its body kept, the body itself. */
    v = corral_value_new("k", 1, body, len, NULL, 0);
    CHECK(corral_encoding_identity(v, &own) == corral_value_body(v));
    CHECK(own == NULL);
    corral_value_unref(v);
    corral_encoding_finish(&e);
    free(body);
}

int
main(void)
{
    RUN(test_round_trips);
    RUN(test_make);
    RUN(test_bomb);
    RUN(test_identity_of_value);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
