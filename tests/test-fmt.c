/* test-fmt.c — the gateway's one copy of each small text step: numbers,
 * the JSON escaper, the token characters, the percent-decoder. */
#include <stdbool.h>
#include <string.h>

#include "fmt.h"
#include "testlib.h"

static void
test_uint(void)
{
    char b[32];
    *fmt_uint(b, 0) = '\0';
    CHECK_EQ_STR(b, "0");
    *fmt_uint(b, 18446744073709551615ull) = '\0';
    CHECK_EQ_STR(b, "18446744073709551615");
    char *e = FMT_PUT(b, "ab");
    *fmt_uint(e, 42) = '\0';
    CHECK_EQ_STR(b, "ab42");
}

/* The fields of a simple answer, each line only when it applies, within
 * the room fmt.h gives. */
static void
test_simple_fields(void)
{
    char b[128];
    const char *x = "Retry-After: 5\r\n";
    char *e =
        fmt_simple_fields(b, "application/json", 16, false, 1234, x, strlen(x));
    *e = '\0';
    CHECK_EQ_STR(b, "Content-Type: application/json\r\n"
                    "Content-Length: 1234\r\nRetry-After: 5\r\n");
    CHECK((size_t)(e - b) <= 14 + 16 + 2 + 16 + 20 + 2 + strlen(x));
    *fmt_simple_fields(b, NULL, 0, false, 0, NULL, 0) = '\0';
    CHECK_EQ_STR(b, "Content-Length: 0\r\n");
    *fmt_simple_fields(b, "text/plain", 10, true, 99, NULL, 0) = '\0';
    CHECK_EQ_STR(b, "Content-Type: text/plain\r\n");
    CHECK(fmt_simple_fields(b, NULL, 0, true, 99, NULL, 0) == b);
}

static void
test_json_escape(void)
{
    char b[64];
    CHECK_EQ_INT(fmt_json_escape(b, sizeof(b), "a\"b\\c\n\x01\x1f"), 25);
    CHECK_EQ_STR(b, "a\\\"b\\\\c\\u000a\\u0001\\u001f");
    /* UTF-8 and DEL pass as they are. */
    fmt_json_escape(b, sizeof(b), "\xc3\xa9\x7f");
    CHECK_EQ_STR(b, "\xc3\xa9\x7f");
    /* Cut, never mid-escape, to fit cap. */
    CHECK_EQ_INT(fmt_json_escape(b, 10, "abcdefghijkl"), 3);
    CHECK_EQ_STR(b, "abc");
    CHECK_EQ_INT(fmt_json_escape(b, 10, "\n\n"), 6);
    CHECK_EQ_STR(b, "\\u000a");
    /* FMT_JSON_ROOM never cuts, even every byte a control. */
    char in[33], out[FMT_JSON_ROOM(32)];
    memset(in, '\x02', 32);
    in[32] = '\0';
    CHECK_EQ_INT(fmt_json_escape(out, sizeof(out), in), 6 * 32);
}

static void
test_tchar(void)
{
    const char *tchar = "!#$%&'*+-.^_`|~0123456789"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (unsigned c = 0; c < 256; c++) {
        bool want = c != 0 && strchr(tchar, (int)c) != NULL;
        CHECK_EQ_INT(fmt_is_tchar((unsigned char)c), want);
    }
}

static ptrdiff_t
dec(char *out, const char *s, unsigned flags)
{
    return fmt_percent_decode(out, s, strlen(s), flags);
}

static void
test_percent_decode(void)
{
    char b[64];
    CHECK_EQ_INT(dec(b, "%7Bcoin%7d", 0), 6);
    CHECK_EQ_STR(b, "{coin}");
    CHECK_EQ_INT(dec(b, "", 0), 0);
    CHECK_EQ_STR(b, "");
    /* '+' is a space only in a query value; "%2B" is always '+'. */
    CHECK_EQ_INT(dec(b, "a+b%2B", FMT_PCT_PLUS), 4);
    CHECK_EQ_STR(b, "a b+");
    CHECK_EQ_INT(dec(b, "a+b", 0), 3);
    CHECK_EQ_STR(b, "a+b");
    /* An encoded '/' only where a path segment refuses it. */
    CHECK_EQ_INT(dec(b, "a%2fb", 0), 3);
    CHECK_EQ_STR(b, "a/b");
    CHECK_EQ_INT(dec(b, "a%2Fb", FMT_PCT_NO_SLASH), -EINVAL);
    CHECK_EQ_INT(dec(b, "a/b", FMT_PCT_NO_SLASH), 3);
    /* Malformed escapes, at the end too. */
    CHECK_EQ_INT(dec(b, "%", 0), -EINVAL);
    CHECK_EQ_INT(dec(b, "a%4", 0), -EINVAL);
    CHECK_EQ_INT(dec(b, "%zz", 0), -EINVAL);
    CHECK_EQ_INT(dec(b, "%4g", 0), -EINVAL);
    /* A NUL would cut the name short: refused, encoded or not. */
    CHECK_EQ_INT(dec(b, "/api%00x", 0), -EINVAL);
    CHECK_EQ_INT(fmt_percent_decode(b, "a\0b", 3, 0), -EINVAL);
    /* len bounds the input: an escape cut by it is malformed. */
    CHECK_EQ_INT(fmt_percent_decode(b, "ab%41", 4, 0), -EINVAL);
    CHECK_EQ_INT(fmt_percent_decode(b, "ab%41", 2, 0), 2);
    CHECK_EQ_STR(b, "ab");
}

static void
test_percent_next_and_byte(void)
{
    const char *s = "a%41%";
    size_t i = 0;
    char c;
    CHECK(fmt_percent_next(s, 5, &i, &c) && c == 'a' && i == 1);
    CHECK(fmt_percent_next(s, 5, &i, &c) && c == 'A' && i == 4);
    CHECK(!fmt_percent_next(s, 5, &i, &c));
    char b[8];
    *fmt_pct_byte(fmt_pct_byte(b, 0xfe), ' ') = '\0';
    CHECK_EQ_STR(b, "%FE%20");
    /* What the encoder writes, the decoder reads back. */
    for (unsigned v = 1; v < 256; v++) {
        char enc[4], out[2];
        fmt_pct_byte(enc, (unsigned char)v);
        CHECK_EQ_INT(fmt_percent_decode(out, enc, 3, 0), 1);
        CHECK_EQ_INT((unsigned char)out[0], v);
    }
}

/* The directive walker: names, token and quoted arguments, a quoted
 * comma that is no separator, and elements that are not tokens. */
static void
test_directive_next(void)
{
    static const char v[] = " no-store ,max-age=60, x=\"a, only-if-cached\" ,, "
                            "@bad=1 ,s-maxage = \"5\"";
    static const struct {
        const char *name, *arg;
    } want[] = {
        {"no-store", NULL}, {"max-age", "60"}, {"x", "a, only-if-cached"},
        {"", NULL},         {"", NULL},        {"s-maxage", "5"}};
    size_t i = 0, nlen, alen, k = 0;
    const char *name, *arg;
    while (
        fmt_directive_next(v, sizeof(v) - 1, &i, &name, &nlen, &arg, &alen)) {
        CHECK(k < sizeof(want) / sizeof(want[0]));
        CHECK_EQ_INT(nlen, strlen(want[k].name));
        CHECK(strncmp(name, want[k].name, nlen) == 0);
        if (want[k].arg == NULL) {
            CHECK(arg == NULL);
        } else {
            CHECK_EQ_INT(alen, strlen(want[k].arg));
            CHECK(arg != NULL && strncmp(arg, want[k].arg, alen) == 0);
        }
        k++;
    }
    CHECK_EQ_INT(k, sizeof(want) / sizeof(want[0]));
    i = 0;
    CHECK(!fmt_directive_next("  ", 2, &i, &name, &nlen, &arg, &alen));
}

int
main(void)
{
    RUN(test_uint);
    RUN(test_simple_fields);
    RUN(test_json_escape);
    RUN(test_tchar);
    RUN(test_percent_decode);
    RUN(test_percent_next_and_byte);
    RUN(test_directive_next);
    return 0;
}
