/* test-pattern.c — {param} patterns: the character-table form, the PCRE2
 * form, and patterns built to cost seconds or gigabytes. */
#include "pattern.h"
#include "testlib.h"

#include <time.h>

static struct corral_pattern *
compile(const char *src)
{
    char err[256] = "";
    struct corral_pattern *p = corral_pattern_new(src, err, sizeof(err));
    if (p == NULL)
        fprintf(stderr, "%s: %s\n", src, err);
    CHECK(p != NULL);
    return p;
}

static int
match(const struct corral_pattern *p, const char *s)
{
    return corral_pattern_match(p, s, strlen(s));
}

static void
test_simple(void)
{
    struct corral_pattern *p = compile("^[A-Za-z0-9._~-]{1,128}$");
    char long_ok[129], too_long[130];

    CHECK(corral_pattern_is_simple(p));
    CHECK(match(p, "btc-1.0_~"));
    CHECK(!match(p, ""));
    CHECK(!match(p, "a/b"));
    CHECK(!match(p, "a b"));
    CHECK(!match(p, "\xc3\xa9"));
    CHECK(!corral_pattern_match(p, "a\0b", 3)); /* NUL is a byte too */
    memset(long_ok, 'x', 128);
    long_ok[128] = '\0';
    memset(too_long, 'x', 129);
    too_long[129] = '\0';
    CHECK(match(p, long_ok));
    CHECK(!match(p, too_long));
    corral_pattern_free(p);

    p = compile("^[0-9]+$");
    CHECK(corral_pattern_is_simple(p));
    CHECK(match(p, "42") && !match(p, "") && !match(p, "4a"));
    corral_pattern_free(p);
    p = compile("^[a-z]*$");
    CHECK(corral_pattern_is_simple(p));
    CHECK(match(p, "") && match(p, "abc") && !match(p, "aBc"));
    corral_pattern_free(p);
    p = compile("^[\\.\\-a]{2}$"); /* escapes, an exact count */
    CHECK(corral_pattern_is_simple(p));
    CHECK(match(p, ".-") && match(p, "aa") && !match(p, "a") &&
          !match(p, "a\\"));
    corral_pattern_free(p);
    p = compile("^[-a]{1,3}$"); /* a leading '-' is literal */
    CHECK(corral_pattern_is_simple(p));
    CHECK(match(p, "-a-") && !match(p, "b"));
    corral_pattern_free(p);
}

static void
test_pcre(void)
{
    struct corral_pattern *p = compile("^(1h|4h|1d)$");

    CHECK(!corral_pattern_is_simple(p));
    CHECK(match(p, "4h") && !match(p, "5h") && !match(p, "4h\n"));
    corral_pattern_free(p);
    p = compile("^\\d{2,4}$");
    CHECK(!corral_pattern_is_simple(p));
    CHECK(match(p, "123") && !match(p, "1"));
    corral_pattern_free(p);
    p = compile("^[^/]+$"); /* negated classes go to PCRE2 */
    CHECK(!corral_pattern_is_simple(p));
    CHECK(match(p, "ab") && !match(p, "a/b"));
    corral_pattern_free(p);
    p = compile("btc"); /* unanchored: anywhere */
    CHECK(match(p, "wbtcx") && !match(p, "eth"));
    corral_pattern_free(p);
}

static void
expect_bad(const char *src, const char *why)
{
    char err[256] = "";
    uint64_t t0 = mono_ms();

    CHECK(corral_pattern_new(src, err, sizeof(err)) == NULL);
    if (strstr(err, why) == NULL)
        fprintf(stderr, "\"%.40s\": \"%s\" lacks \"%s\"\n", src, err, why);
    CHECK(strstr(err, why) != NULL);
    CHECK(mono_ms() - t0 < 2000);
}

static void
test_hostile(void)
{
    char big[2000];
    struct corral_pattern *p;
    char s[40];
    uint64_t t0;

    expect_bad("([a-z", "missing terminating ]");
    expect_bad("a{2,1}", "out of order");
    /* glibc's regcomp took 1.1 GB and 0.9 s for this one. */
    expect_bad("((a{1,100}){1,100}){1,100}", "too large");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    expect_bad(big, "longer than");
    memset(big, '(', 100);
    memset(big + 100, ')', 100);
    big[200] = '\0';
    expect_bad(big, "parentheses are too deeply nested");
    /* Catastrophic backtracking stops at the match limit: no match. */
    p = compile("^(a+)+$");
    memset(s, 'a', sizeof(s) - 2);
    s[sizeof(s) - 2] = 'b';
    s[sizeof(s) - 1] = '\0';
    t0 = mono_ms();
    CHECK(!match(p, s));
    CHECK(mono_ms() - t0 < 2000);
    corral_pattern_free(p);
    corral_pattern_free(NULL);
}

int
main(void)
{
    RUN(test_simple);
    RUN(test_pcre);
    RUN(test_hostile);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
