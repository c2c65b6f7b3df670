/* test-target.c — a request target split into path and query, and its
 * dot segments resolved: the one copy both framings (HTTP/1.1, HTTP/2)
 * use. */
#include "target.h"
#include "testlib.h"

/* The path and query corral_target_split() finds in u, "path|query", or
 * "refused". */
static const char *
split(const char *u)
{
    static char out[256];
    const char *p, *q;
    size_t pl, ql;
    if (!corral_target_split(u, strlen(u), &p, &pl, &q, &ql))
        return "refused";
    snprintf(out, sizeof out, "%.*s|%.*s", (int)pl, p, (int)ql, q);
    return out;
}

/* The path resolved, or "refused". */
static const char *
resolve(const char *p)
{
    static char out[256];
    long n = corral_target_resolve_dots(out, p, strlen(p));
    if (n < 0)
        return "refused";
    CHECK(n <= (long)strlen(p));
    out[n] = '\0';
    return out;
}

static void
test_split(void)
{
    CHECK_EQ_STR(split("/a/b?x=1&y"), "/a/b|x=1&y");
    CHECK_EQ_STR(split("/a"), "/a|");
    CHECK_EQ_STR(split("/a?"), "/a|");
    CHECK_EQ_STR(split("/a#frag?no"), "/a|");
    CHECK_EQ_STR(split("/a?q#frag"), "/a|q");
    CHECK_EQ_STR(split("http://host:8080/p?q"), "/p|q");
    CHECK_EQ_STR(split("http://host"), "|");
    CHECK_EQ_STR(split("*"), "*|");
    CHECK_EQ_STR(split(""), "|");
    CHECK_EQ_STR(split("*?x"), "refused");
    CHECK_EQ_STR(split("a/b"), "refused");
}

static void
test_resolve(void)
{
    CHECK_EQ_STR(resolve("/a/b"), "/a/b");
    CHECK_EQ_STR(resolve("/a/./b"), "/a/b");
    CHECK_EQ_STR(resolve("/a/../a/b"), "/a/b");
    CHECK_EQ_STR(resolve("/a/%2e%2E/a/b"), "/a/b");
    CHECK_EQ_STR(resolve("/a/%2e/b"), "/a/b");
    CHECK_EQ_STR(resolve("/a/."), "/a/");
    CHECK_EQ_STR(resolve("/a/b/.."), "/a/");
    CHECK_EQ_STR(resolve("/a/..."), "/a/...");
    CHECK_EQ_STR(resolve("/a/.b"), "/a/.b");
    CHECK_EQ_STR(resolve("/.."), "refused");
    CHECK_EQ_STR(resolve("/../x"), "refused");
    CHECK_EQ_STR(resolve("/a/../../x"), "refused");
    CHECK_EQ_STR(resolve("/"), "/");
    CHECK_EQ_STR(resolve("//a"), "//a");
}

int
main(void)
{
    RUN(test_split);
    RUN(test_resolve);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
