/* test-json.c — corral_json_valid against the yajl calls it replaced
 * (yajl_parse of the whole text, then yajl_complete_parse, default
 * configuration, no callbacks): a table of tricky texts with the answer
 * each must get, every byte between tokens and inside a string, every short
 * text over an alphabet of the bytes that matter, deep nesting, and random
 * mutations of a few real documents. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "json.h"
#include "testlib.h"

static bool
yajl_valid(const char *s, size_t len)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    CHECK(h != NULL);
    bool ok = yajl_parse(h, (const unsigned char *)s, len) == yajl_status_ok &&
              yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    return ok;
}

static void
dump(const char *s, size_t len)
{
    fprintf(stderr, "text (%zu bytes):", len);
    for (size_t i = 0; i < len && i < 200; i++)
        fprintf(stderr, " %02x", (unsigned char)s[i]);
    fprintf(stderr, "%s\n", len > 200 ? " ..." : "");
}

/* Does yajl pass text only because it ends inside a string that follows
 * a whole value (json.h), which corral refuses? Then closing that string
 * makes two values, which yajl refuses; a text yajl passes for any other
 * reason still passes with a '"' after it (as a value, then a string the
 * input ends inside). */
static bool
open_string_after_value(const char *text, size_t len)
{
    char *s = malloc(len + 1);
    CHECK(s != NULL);
    memcpy(s, text, len);
    s[len] = '"';
    bool closed = yajl_valid(s, len + 1);
    free(s);
    return !closed;
}

/* corral_json_valid's answer, checked to be yajl's but for the open string
 * after a value. Both read a copy the size of the text, so a read past its
 * end is an ASan report. */
static bool
agree(const char *text, size_t len)
{
    char *s = malloc(len ? len : 1);
    CHECK(s != NULL);
    memcpy(s, text, len);
    bool ours = corral_json_valid(s, len), theirs = yajl_valid(s, len);
    free(s);
    bool same = ours == theirs ||
                (theirs && !ours && open_string_after_value(text, len));
    if (!same) {
        fprintf(stderr, "corral_json_valid %d, yajl %d\n", ours, theirs);
        dump(text, len);
    }
    CHECK(same);
    return ours;
}

/* yajl passes it, corral does not: a string the input ends inside, after
 * a whole value (json.h). */
#define YAJL_ONLY 2

struct text {
    const char *s;
    size_t len;
    int valid; /* false, true or YAJL_ONLY */
};

/* sizeof, not strlen: some hold NUL bytes. */
#define T(lit) lit, sizeof(lit) - 1

static const struct text texts[] = {
    /* nothing, or only whitespace */
    {T(""), false},
    {T(" "), false},
    {T(" \t\r\n"), false},
    {T("\v\f"), false},
    /* top-level scalars */
    {T("1"), true},
    {T("-1"), true},
    {T("0"), true},
    {T("-0"), true},
    {T("\"\""), true},
    {T("\"abc\""), true},
    {T("true"), true},
    {T("false"), true},
    {T("null"), true},
    {T(" 1 "), true},
    /* VT and FF are whitespace to yajl */
    {T("\v1\f"), true},
    {T("[\v1,\f2]"), true},
    {T("\x00"), false},
    {T("1\x00"), false},
    {T("[1\x00]"), false},
    {T("\x7f"), false},
    {T("[\x7f]"), false},
    /* numbers */
    {T("01"), false},
    {T("[01]"), false},
    {T("-01"), false},
    {T("00"), false},
    {T("-"), false},
    {T("[-]"), false},
    {T("--1"), false},
    {T("+1"), false},
    {T("1."), false},
    {T("[1.]"), false},
    {T(".5"), false},
    {T("1.5"), true},
    {T("1.5.3"), false},
    {T("1e"), false},
    {T("1e+"), false},
    {T("1e-"), false},
    {T("[1e]"), false},
    {T("1e5"), true},
    {T("1E+5"), true},
    {T("1e-05"), true},
    {T("-0.0e0"), true},
    {T("0."), false},
    {T("0e"), false},
    {T("0e1"), true},
    {T("1x"), false},
    {T("[1x]"), false},
    {T("-a"), false},
    {T("1 2"), false},
    {T("[1 2]"), false},
    {T("Infinity"), false},
    {T("NaN"), false},
    {T("0x10"), false},
    /* no overflow check without callbacks */
    {T("123456789012345678901234567890123456789012345678901234567890"), true},
    {T("-99999999999999999999999999"), true},
    {T("1e99999999"), true},
    {T("[1e-99999999, 18446744073709551616]"), true},
    /* literals */
    {T("tru"), false},
    {T("nul"), false},
    {T("fals"), false},
    {T("nulll"), false},
    {T("truefalse"), false},
    {T("True"), false},
    {T("[tru]"), false},
    {T("[true,null,false]"), true},
    {T("t"), false},
    /* strings: escapes */
    {T("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), true},
    {T("\"\\u00e9\\uFFFF\\uabcd\""), true},
    {T("\"\\uD800\""), true},
    {T("\"\\uDC00\\uD800\""), true},
    {T("\"\\u12\""), false},
    {T("\"\\u12G4\""), false},
    {T("\"\\u 123\""), false},
    {T("\"\\U1234\""), false},
    {T("\"\\x41\""), false},
    {T("\"\\a\""), false},
    {T("\"\\'\""), false},
    {T("\"\\0\""), false},
    {T("\"\\"), false},
    {T("\"\\u"), false},
    {T("\"\\u123"), false},
    /* strings: raw controls fail, DEL passes */
    {T("\"\x01\""), false},
    {T("\"\x1f\""), false},
    {T("\"\t\""), false},
    {T("\"\n\""), false},
    {T("\"\x00\""), false},
    {T("\"a\x00b\""), false},
    {T("\"\x7f\""), true},
    {T("\""), false},
    {T("\"abc"), false},
    {T("[\"abc"), false},
    /* strings: UTF-8, checked for shape only */
    {T("\"\xc3\xa9\""), true},
    {T("\"\xe2\x82\xac\""), true},
    {T("\"\xf0\x9f\x98\x80\""), true},
    {T("\"\xc0\x80\""), true},              /* overlong NUL */
    {T("\"\xc1\xbf\""), true},              /* overlong */
    {T("\"\xe0\x80\x80\""), true},          /* overlong */
    {T("\"\xf0\x80\x80\x80\""), true},      /* overlong */
    {T("\"\xed\xa0\x80\""), true},          /* surrogate D800 */
    {T("\"\xed\xbf\xbf\""), true},          /* surrogate DFFF */
    {T("\"\xf4\x90\x80\x80\""), true},      /* past U+10FFFF */
    {T("\"\xf5\x80\x80\x80\""), true},      /* lead F5 */
    {T("\"\xf7\xbf\xbf\xbf\""), true},      /* lead F7 */
    {T("\"\xf8\x88\x80\x80\x80\""), false}, /* lead F8 */
    {T("\"\xfc\x80\x80\x80\x80\x80\""), false},
    {T("\"\xfe\""), false},
    {T("\"\xff\""), false},
    {T("\"\x80\""), false}, /* stray continuation */
    {T("\"\xbf\""), false},
    {T("\"\xc3\""), false},     /* truncated */
    {T("\"\xc3\"\""), false},   /* '"' is no continuation */
    {T("\"\xe2\x82\""), false}, /* truncated */
    {T("\"\xe2\x82\x41\""), false},
    {T("\"\xf0\x9f\x98\""), false},
    {T("\"\xc3\xa9\xa9\""), false}, /* one continuation too many */
    {T("\"\xc3\x00\""), false},
    {T("\xc3\xa9"), false}, /* outside a string */
    /* arrays and objects */
    {T("[]"), true},
    {T("{}"), true},
    {T("[ ]"), true},
    {T("{ }"), true},
    {T("["), false},
    {T("]"), false},
    {T("{"), false},
    {T("}"), false},
    {T("[}"), false},
    {T("{]"), false},
    {T("[1,]"), false},
    {T("[,1]"), false},
    {T("[,]"), false},
    {T("[1,,2]"), false},
    {T("{\"a\":1,}"), false},
    {T("{,}"), false},
    {T("{\"a\"}"), false},
    {T("{\"a\":}"), false},
    {T("{\"a\" 1}"), false},
    {T("{\"a\"::1}"), false},
    {T("{1:2}"), false},
    {T("{a:1}"), false},
    {T("{'a':1}"), false},
    {T("{null:1}"), false},
    {T("{\"a\":1 \"b\":2}"), false},
    {T("{\"a\":1,\"b\":2}"), true},
    {T("{\"a\":[1,{\"b\":[]}],\"c\":{}}"), true},
    {T("[[[]]]"), true},
    {T("[[[]]"), false},
    {T("[[]]]"), false},
    {T("{\"a\":1}}"), false},
    {T("[1]]"), false},
    {T("{\"a\":{\"b\":1]}"), false},
    {T("[{\"a\":1]}"), false},
    {T("{\"a\":1"), false},
    {T("{\"a\":"), false},
    {T("{\"a\""), false},
    {T("{\"a"), false},
    /* comments are off */
    {T("/* x */ 1"), false},
    {T("1 // x"), false},
    {T("[1/**/]"), false},
    /* trailing garbage, and two values */
    {T("1 1"), false},
    {T("[] []"), false},
    {T("{}{}"), false},
    {T("1,"), false},
    {T("[1],"), false},
    {T("1 x"), false},
    {T("true false"), false},
    {T("\"a\" \"b\""), false},
    {T("1 \"a\""), false},
    {T("{} \"\""), false},
    {T("1 tr"), false},
    {T("1 t"), false},
    {T("1 -"), false},
    {T("1 ["), false},
    {T("1 {"), false},
    {T("1 /"), false},
    /* ...and a string the input ends inside, a token yajl has yet to
     * finish: after a whole value yajl passes it, corral does not */
    {T("1 \"abc"), YAJL_ONLY},
    {T("1\""), YAJL_ONLY},
    {T("0\"x"), YAJL_ONLY},
    {T("-1.5e3\""), YAJL_ONLY},
    {T("true\"x"), YAJL_ONLY},
    {T("null \""), YAJL_ONLY},
    {T("[] \"x"), YAJL_ONLY},
    {T("{}\"x y z"), YAJL_ONLY},
    {T("\"a\"\"b"), YAJL_ONLY},
    {T("1 \"\\u1234"), YAJL_ONLY},
    {T("1 \"\\n"), YAJL_ONLY},
    {T("1 \"\xc3\xa9"), YAJL_ONLY},
    {T("1 \"\x7f"), YAJL_ONLY},
    {T("1 \"a\" \"b"), false},
    {T("1 \"a\"b"), false},
    /* ...nor does yajl when it ends inside an escape or a UTF-8
     * sequence, or holds a byte yajl refuses */
    {T("1 \"ab\\"), false},
    {T("1 \"\\u"), false},
    {T("1 \"\\u12"), false},
    {T("1 \"\\u123"), false},
    {T("1 \"\\x"), false},
    {T("1 \"\xc3"), false},
    {T("1 \"\xe2\x82"), false},
    {T("1 \"\xf0\x9f\x98"), false},
    {T("1 \"\xff"), false},
    {T("1 \"\x80"), false},
    {T("1 \"\x01"), false},
    {T("1 \"\x00"), false},
    {T("[1 \"abc"), false},
    {T("\"abc"), false},
};

static void
test_table(void)
{
    /* An empty body may come as NULL. */
    CHECK(!yajl_valid(NULL, 0));
    CHECK(!corral_json_valid(NULL, 0));
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        const struct text *t = &texts[i];
        bool yajl = t->valid != false;
        if (yajl_valid(t->s, t->len) != yajl) {
            fprintf(stderr, "texts[%zu]: yajl does not say %d\n", i, yajl);
            dump(t->s, t->len);
        }
        CHECK(yajl_valid(t->s, t->len) == yajl);
        CHECK(agree(t->s, t->len) == (t->valid == true));
    }
}

/* Every byte between tokens, at the ends, in a string and after a string
 * the input ends inside. */
static void
test_every_byte(void)
{
    for (unsigned b = 0; b < 256; b++) {
        bool space = b == ' ' || (b >= '\t' && b <= '\r');
        char t[32];
        int n;

        n = snprintf(t, sizeof(t), "[true%c,%cnull%c]", 0, 0, 0);
        t[5] = t[7] = t[12] = (char)b;
        CHECK(agree(t, (size_t)n) == space);
        n = snprintf(t, sizeof(t), "{%c\"a\"%c:%c1}", 0, 0, 0);
        t[1] = t[5] = t[7] = (char)b;
        CHECK(agree(t, (size_t)n) == space);
        t[0] = (char)b;
        CHECK(agree(t, 1) == (b >= '0' && b <= '9'));
        memcpy(t, "1 ", 2);
        t[2] = (char)b;
        agree(t, 3);
        memcpy(t, "\"a\"", 3);
        t[1] = (char)b;
        /* '"': "" then a string the input ends inside, which yajl
         * passes and corral does not */
        CHECK(agree(t, 3) == (b >= 0x20 && b < 0x80 && b != '\\' && b != '"'));
        memcpy(t, "\"\\a\"", 4);
        t[2] = (char)b;
        agree(t, 4);
        memcpy(t, "1 \"a", 4);
        t[3] = (char)b;
        agree(t, 4);
        memcpy(t, "\"\xc3\xa9\"", 4);
        t[2] = (char)b;
        CHECK(agree(t, 4) == (b >= 0x80 && b < 0xc0));
        memcpy(t, "\"\xf0\x9f\x98\x80\"", 6);
        t[1] = (char)b;
        agree(t, 6);
        memcpy(t, "\"\\u00a0\"", 8);
        t[5] = (char)b;
        agree(t, 8);
    }
}

/* Every text of up to 4 bytes over the bytes that matter to the grammar:
 * tokens, the letters of literals and escapes, a space, controls and
 * bytes of UTF-8. */
static void
test_short_texts(void)
{
    static const char alphabet[] = "[]{}\",:-0 1.e+\\utn\x01\xc3\xa9";
    const size_t k = sizeof(alphabet) - 1;
    char t[4];
    size_t valid = 0, total = 0;

    for (size_t len = 0; len <= 4; len++) {
        size_t count = 1;
        for (size_t i = 0; i < len; i++)
            count *= k;
        for (size_t n = 0; n < count; n++) {
            size_t m = n;
            for (size_t i = 0; i < len; i++, m /= k)
                t[i] = alphabet[m % k];
            valid += agree(t, len);
            total++;
        }
    }
    printf("# %zu short texts, %zu valid\n", total, valid);
    CHECK(valid > 100 && valid < total / 2);
}

/* n levels deep of open, each an array when (i / period) is even, an
 * object ("a": ...) when odd, then a 1 and the closes (one wrong close at
 * level wrong from the inside, when wrong < n). */
static char *
nest(size_t n, size_t period, size_t wrong, size_t *len)
{
    char *b = malloc(n * 6 + 2), *q = b;
    CHECK(b != NULL);
    for (size_t i = 0; i < n; i++) {
        if (i / period % 2 == 0) {
            *q++ = '[';
        } else {
            memcpy(q, "{\"a\":", 5);
            q += 5;
        }
    }
    *q++ = '1';
    for (size_t i = n; i-- > 0;) {
        bool map = i / period % 2 == 1;
        if (n - 1 - i == wrong)
            map = !map;
        *q++ = map ? '}' : ']';
    }
    *len = (size_t)(q - b);
    return b;
}

static void
test_deep(void)
{
    /* yajl's state stack has no limit: 100,000 deep is fine, and so past
     * the 4096 levels kept on the C stack. */
    static const size_t depths[] = {1,    63,   64,   65,    4095,
                                    4096, 4097, 5000, 100000};
    static const size_t periods[] = {1, 3, 64, 4096, 1000000};
    for (size_t d = 0; d < sizeof(depths) / sizeof(depths[0]); d++) {
        for (size_t p = 0; p < sizeof(periods) / sizeof(periods[0]); p++) {
            size_t n = depths[d], len;
            char *b = nest(n, periods[p], SIZE_MAX, &len);
            CHECK(agree(b, len));
            /* a close of the wrong kind, innermost, outermost, middle */
            size_t wrongs[] = {0, n - 1, n / 2, 4096};
            for (size_t w = 0; w < 4; w++) {
                if (wrongs[w] >= n)
                    continue;
                free(b);
                b = nest(n, periods[p], wrongs[w], &len);
                CHECK(!agree(b, len));
            }
            free(b);
            /* one close short, and one close too many */
            b = nest(n, periods[p], SIZE_MAX, &len);
            CHECK(!agree(b, len - 1));
            char *more = malloc(len + 1);
            CHECK(more != NULL);
            memcpy(more, b, len);
            more[len] = more[len - 1];
            CHECK(!agree(more, len + 1));
            free(more);
            free(b);
        }
    }

    /* only opens, and opens then as many closes */
    size_t n = 100000;
    char *b = malloc(2 * n);
    CHECK(b != NULL);
    memset(b, '[', n);
    memset(b + n, ']', n);
    CHECK(!agree(b, n));
    CHECK(agree(b, 2 * n));
    CHECK(!agree(b, 2 * n - 1));
    free(b);
}

/* A few documents as an API returns them, to mutate. */
static const char *const docs[] = {
    ("{\"id\":12345,\"name\":\"widget\",\"price\":-19.99e-2,\"tags\":[\"a\","
     "\"b\\n\\u00e9\"],\"ok\":true,\"none\":null,\"nested\":{\"x\":[1,[2,[3]]],"
     "\"y\":{}}}"),
    ("[0, 1.5, -2E+10, \"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\", false, "
     "{\"k\" : [ ] } ]"),
    "  {\n  \"a\" : [ true , false , null ] ,\n  \"b\" : \"\\\"\\\\\\/\" \n}\n",
    "\"just a string\"",
    "-0.0e-0",
};

/* The bytes a mutation puts in: the grammar's, and a few others. */
static const char interesting[] = "[]{}\",:-0123456789.eE+ \t\n\v\f\r\\utrfn"
                                  "\x00\x01\x1f\x7f\x80\xbf\xc0\xc3\xe0\xed"
                                  "\xf0\xf4\xf5\xf8\xff/a";

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t
next(void)
{
    /* xorshift64: the same run every time */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void
test_mutations(void)
{
    char buf[512];
    size_t valid = 0, rounds = 200000;

    for (size_t r = 0; r < rounds; r++) {
        const char *doc = docs[next() % (sizeof(docs) / sizeof(docs[0]))];
        size_t len = strlen(doc);
        memcpy(buf, doc, len);
        for (unsigned k = 1 + next() % 3; k > 0; k--) {
            size_t at = len ? next() % len : 0;
            char c = interesting[next() % (sizeof(interesting) - 1)];
            switch (next() % 6) {
            case 0: /* replace a byte */
                if (len)
                    buf[at] = c;
                break;
            case 1: /* insert one */
                if (len < sizeof(buf) / 2) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = c;
                    len++;
                }
                break;
            case 2: /* delete one */
                if (len) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                }
                break;
            case 3: /* cut the end off */
                len = at;
                break;
            case 4: { /* copy a piece over another place */
                size_t from = len ? next() % len : 0;
                size_t n = len - (from > at ? from : at);
                n = n ? next() % n : 0;
                memmove(buf + at, buf + from, n);
                break;
            }
            default: /* flip a bit */
                if (len)
                    buf[at] ^= (char)(1u << (next() % 8));
                break;
            }
        }
        valid += agree(buf, len);
    }
    printf("# %zu mutations, %zu valid\n", rounds, valid);
    CHECK(valid > rounds / 100 && valid < rounds);
}

int
main(void)
{
    RUN(test_table);
    RUN(test_every_byte);
    RUN(test_short_texts);
    RUN(test_deep);
    RUN(test_mutations);
    return testlib_result();
}
