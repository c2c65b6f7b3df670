/* bench-json.c — what checking a body is JSON costs: ns per call for the
 * yajl calls compute.c made before (yajl_alloc, yajl_parse,
 * yajl_complete_parse, yajl_free) and for corral_json_valid, on a 1 KB
 * object as an API answers (numbers, strings, a nested array) and on a
 * 200 KB array of such objects, and on the 1 KB one indented. Run with
 * `meson test --benchmark`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "json.h"
#include "testlib.h"

#define ROUNDS 100

static bool
yajl_valid(const char *s, size_t len)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    if (h == NULL)
        return false;
    bool ok = yajl_parse(h, (const unsigned char *)s, len) == yajl_status_ok &&
              yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    return ok;
}

/* One coin as a market API describes it: about 1 KB. */
static int
coin(char *b, size_t cap, unsigned i)
{
    int n = snprintf(
        b, cap,
        "{\"id\":\"coin-%u\",\"symbol\":\"c%u\",\"name\":\"Coin %u\","
        "\"image\":\"https://assets.example.com/coins/images/%u/large/"
        "coin.png?1696501400\",\"current_price\":%u.%02u,"
        "\"market_cap\":%u846123456,\"market_cap_rank\":%u,"
        "\"fully_diluted_valuation\":907654321012,"
        "\"total_volume\":23456789012,\"high_24h\":43999.5,"
        "\"low_24h\":42100.25,\"price_change_24h\":-512.3125,"
        "\"price_change_percentage_24h\":-1.17482,"
        "\"circulating_supply\":19581234.0,\"total_supply\":21000000.0,"
        "\"max_supply\":2.1e7,\"ath\":69045,\"ath_change_percentage\":-37.41,"
        "\"ath_date\":\"2021-11-10T14:24:11.849Z\",\"atl\":67.81,"
        "\"roi\":null,\"listed\":true,\"delisted\":false,"
        "\"last_updated\":\"2024-01-05T12:00:00.000Z\","
        "\"sparkline_7d\":{\"price\":[42000.1,42100.25,41980.5,42310.75,"
        "42555.0,42480.125,42700.5,43010.25,42890.0,43120.5,43210.12]},"
        "\"tags\":[\"store-of-value\",\"proof-of-work\",\"layer-1\"],"
        "\"links\":{\"homepage\":[\"https://example.org\",\"\",\"\"],"
        "\"repos\":{\"github\":[\"https://github.com/example/coin\"],"
        "\"bitbucket\":[]}},\"localization\":{\"en\":\"Coin\","
        "\"de\":\"M\xc3\xbcnze\",\"ja\":"
        "\"\xe3\x82\xb3\xe3\x82\xa4\xe3\x83\xb3\","
        "\"fr\":\"pi\\u00e8ce\"},\"description\":\"A peer-to-peer electronic "
        "cash system, the first of its kind.\\nSee the \\\"white paper\\\".\"}",
        i, i, i, i, 40000 + i, i % 100, i % 9 + 1, i + 1);
    CHECK(n > 0 && (size_t)n < cap);
    return n;
}

/* ns per call of f on s: the best of rounds of calls, as other work on
 * the machine only ever makes a round slower. */
static double
per_call(bool (*f)(const char *, size_t), const char *s, size_t len,
         size_t calls)
{
    size_t ok = 0;
    double t0 = mono_s();
    for (size_t i = 0; i < calls; i++)
        ok += f(s, len);
    double ns = (mono_s() - t0) * 1e9 / (double)calls;
    CHECK(ok == calls);
    return ns;
}

static void
run(const char *what, const char *s, size_t len, size_t calls)
{
    double theirs = 1e18, ours = 1e18;

    /* Rounds of each in turn, so that both see the same machine. */
    for (int r = 0; r < ROUNDS; r++) {
        double t = per_call(yajl_valid, s, len, calls);
        theirs = t < theirs ? t : theirs;
        t = per_call(corral_json_valid, s, len, calls);
        ours = t < ours ? t : ours;
    }
    printf("%-22s %7zu B: yajl %9.0f ns/call (%4.2f GB/s) | "
           "corral_json_valid %8.0f ns/call (%4.2f GB/s) | %.1fx\n",
           what, len, theirs, (double)len / theirs, ours, (double)len / ours,
           theirs / ours);
}

int
main(void)
{
    static char one[4096];
    size_t one_len = (size_t)coin(one, sizeof(one), 1);
    run("1 KB object", one, one_len, 2000);

    size_t cap = 256 * 1024, len = 0;
    char *many = malloc(cap);
    CHECK(many != NULL);
    many[len++] = '[';
    for (unsigned i = 0; len < 200 * 1000; i++) {
        if (i > 0)
            many[len++] = ',';
        len += (size_t)coin(many + len, cap - len, i);
    }
    many[len++] = ']';
    run("200 KB array", many, len, 10);

    /* Pretty-printed: the same object with a newline and indent before
     * each member, as some upstreams send. */
    static char pretty[8192];
    size_t plen = 0;
    bool in_string = false;
    for (size_t i = 0; i < one_len; i++) {
        pretty[plen++] = one[i];
        if (one[i] == '\\' && in_string) {
            pretty[plen++] = one[++i];
            continue;
        }
        if (one[i] == '"')
            in_string = !in_string;
        if (!in_string && (one[i] == ',' || one[i] == '{')) {
            memcpy(pretty + plen, "\n    ", 5);
            plen += 5;
        }
    }
    run("1 KB object, indented", pretty, plen, 2000);
    free(many);
    return 0;
}
