/* test-negotiate.c — Accept-Encoding (RFC 9110 12.5.3) read into q-values
 * and the coding chosen from them, as a table: field lines, the codings a
 * value keeps, the coding answered. */
#include "negotiate.h"
#include "testlib.h"

#define ID CORRAL_CODING_IDENTITY
#define GZ CORRAL_CODING_GZIP
#define BR CORRAL_CODING_BR
#define ALL (1u << ID | 1u << GZ | 1u << BR)
#define GZONLY (1u << ID | 1u << GZ)

struct row {
    const char *lines[3]; /* field lines; NULL ends; none: no field */
    unsigned available;
    enum corral_coding want;
};

static const struct row rows[] = {
    /* No field: identity, whatever is kept. */
    {{NULL}, ALL, ID},
    /* An empty field: identity only. */
    {{""}, ALL, ID},
    {{"gzip"}, ALL, GZ},
    {{"br"}, ALL, BR},
    {{"gzip, br"}, ALL, BR},
    {{"gzip, deflate, br, zstd"}, ALL, BR},
    {{"gzip, deflate"}, ALL, GZ},
    /* What is not kept is not chosen. */
    {{"br"}, GZONLY, ID},
    {{"gzip, br"}, GZONLY, GZ},
    {{"gzip"}, 1u << ID, ID},
    /* q-values decide; ties go to the smaller form. */
    {{"br;q=0.5, gzip"}, ALL, GZ},
    {{"gzip;q=0.8, br;q=0.8"}, ALL, BR},
    {{"gzip;q=0.8, br;q=0.799"}, ALL, GZ},
    {{"gzip;q=0.5, identity"}, ALL, ID},
    {{"gzip;q=0.001"}, ALL, GZ},
    {{"gzip;q=1.000"}, ALL, GZ},
    {{"gzip;Q=0.5"}, ALL, GZ},
    {{"gzip ; q=0.5 , br;q=0.4"}, ALL, GZ},
    {{"gzip;q=0.5;level=9"}, ALL, GZ},
    /* q=0: not acceptable. */
    {{"gzip;q=0"}, ALL, ID},
    {{"gzip;q=0.000, br;q=0"}, ALL, ID},
    {{"identity;q=0, gzip"}, ALL, GZ},
    /* Nothing acceptable (identity;q=0, *;q=0): identity, never 406. */
    {{"identity;q=0"}, ALL, ID},
    {{"*;q=0"}, ALL, ID},
    {{"br, identity;q=0"}, GZONLY, ID},
    /* "*" speaks for every coding not named, identity too. */
    {{"*"}, ALL, BR},
    {{"*"}, GZONLY, GZ},
    {{"*, identity;q=0"}, ALL, BR},
    {{"*;q=0, identity;q=0.5"}, ALL, ID},
    {{"*;q=0.5, gzip;q=0"}, ALL, BR},
    {{"br;q=0, *;q=0.1"}, ALL, GZ},
    {{"br, *;q=0.1"}, GZONLY, GZ},
    /* Names in any case; x-gzip is gzip. */
    {{"GZIP"}, ALL, GZ},
    {{"Br"}, ALL, BR},
    {{"x-gzip"}, ALL, GZ},
    {{"X-GZip;q=0.3, identity;q=0.2"}, ALL, GZ},
    {{"IDENTITY"}, ALL, ID},
    {{"identity"}, ALL, ID},
    /* A coding named twice keeps its highest q. */
    {{"gzip;q=0, gzip;q=1"}, ALL, GZ},
    {{"gzip;q=0.2, gzip;q=0.1, identity;q=0.15"}, ALL, GZ},
    /* Malformed elements are skipped, the rest read. */
    {{"gzip;q=1.001"}, ALL, ID},
    {{"gzip;q=2"}, ALL, ID},
    {{"gzip;q=0.0001"}, ALL, ID},
    {{"gzip;q="}, ALL, ID},
    {{"gzip;q=.5"}, ALL, ID},
    {{"gzip;q=0.5x, br"}, ALL, BR},
    {{"gzip q=1"}, ALL, ID},
    {{"gzip;"}, ALL, ID},
    {{";q=1"}, ALL, ID},
    {{",,, gzip ,,"}, ALL, GZ},
    {{"gzip;x=\"a,b\", br;q=0"}, ALL, ID},
    {{"gzipx, brr, gzi"}, ALL, ID},
    {{"\t gzip\t"}, ALL, GZ},
    /* The list split over several field lines. */
    {{"gzip;q=0.5", "br;q=0.9"}, ALL, BR},
    {{"identity;q=0", "", "gzip"}, ALL, GZ},
    {{"br;q=0", "br"}, ALL, BR},
};

/* Twice: the second pass meets values remembered from the first (and
 * slots taken over by others since). */
static void
test_table(void)
{
    for (size_t k = 0; k < 2 * sizeof(rows) / sizeof(*rows); k++) {
        size_t i = k % (sizeof(rows) / sizeof(*rows));
        const struct row *r = &rows[i];
        struct corral_accept a = {0};
        for (int j = 0; j < 3 && r->lines[j] != NULL; j++)
            corral_accept_add(&a, r->lines[j], strlen(r->lines[j]));
        enum corral_coding got = corral_accept_choose(&a, r->available);
        if (got != r->want)
            fprintf(stderr, "row %zu: \"%s\" (available %#x): %s, want %s\n", i,
                    r->lines[0] ? r->lines[0] : "(none)", r->available,
                    corral_coding_name(got), corral_coding_name(r->want));
        CHECK_EQ_INT(got, r->want);
    }
}

/* What a remembered value said is what reading it says, also for values
 * that share a slot, and a longer value is read, not looked up. */
static void
test_memo(void)
{
    static const char *const values[] = {
        "gzip, deflate, br", "br, deflate, gzip", "gzip;q=0, br", "gzip",
        "br;q=0.5, gzip;q=0.6, identity;q=0.7, *;q=0, x-gzip;q=0.1, deflate"};
    struct corral_accept first[5];
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < 5; i++) {
            struct corral_accept a = {0};
            corral_accept_add(&a, values[i], strlen(values[i]));
            if (pass == 0)
                first[i] = a;
            CHECK(memcmp(&a, &first[i], sizeof(a)) == 0);
        }
    CHECK_EQ_INT(first[2].q[GZ], 0);
    CHECK_EQ_INT(first[4].q[ID], 700);
}

/* The q-values themselves, as read. */
static void
test_values(void)
{
    struct corral_accept a = {0};
    const char *v = "gzip;q=0.25, BR;q=0.5, identity;q=0, *;q=0.125";
    corral_accept_add(&a, v, strlen(v));
    CHECK(a.present);
    CHECK_EQ_INT(a.q[GZ], 250);
    CHECK_EQ_INT(a.q[BR], 500);
    CHECK_EQ_INT(a.q[ID], 0);
    CHECK_EQ_INT(a.star, 125);
    CHECK_EQ_INT(a.named,
                 (1u << ID | 1u << GZ | 1u << BR | CORRAL_ACCEPT_STAR));
    /* Bytes past n are not read: "gzip" cut to "gz". */
    struct corral_accept b = {0};
    corral_accept_add(&b, "gzip", 2);
    CHECK_EQ_INT(b.named, 0);
}

int
main(void)
{
    RUN(test_table);
    RUN(test_values);
    RUN(test_memo);
    return 0;
}
