/* bench-pattern.c — what a {param} pattern costs: bytes per compiled
 * pattern (1,000 of them) and ns per match of a 128-byte value (over 8
 * of them), for glibc's
 * regcomp (what corral used before) and corral_pattern, on the default
 * pattern and on one that needs PCRE2. Run with `meson test --benchmark`. */
#include <malloc.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>

#include "pattern.h"
#include "testlib.h"

#define N 1000
#define MATCHES 1000000

static size_t
heap(void)
{
    return mallinfo2().uordblks;
}

static void
run(const char *src, const char *value)
{
    static regex_t re[N];
    static struct corral_pattern *cp[N];
    size_t h0, len = strlen(value);
    double t0, posix_ns, ours_ns;
    char err[128];
    int hits = 0;

    h0 = heap();
    for (int i = 0; i < N; i++)
        regcomp(&re[i], src, REG_EXTENDED | REG_NOSUB);
    size_t posix_bytes = (heap() - h0) / N;
    t0 = mono_s();
    for (int i = 0; i < MATCHES; i++)
        hits += regexec(&re[i % 8], value, 0, NULL, 0) == 0;
    posix_ns = (mono_s() - t0) * 1e9 / MATCHES;

    h0 = heap();
    for (int i = 0; i < N; i++)
        cp[i] = corral_pattern_new(src, err, sizeof(err));
    size_t ours_bytes = (heap() - h0) / N;
    t0 = mono_s();
    for (int i = 0; i < MATCHES; i++)
        hits += corral_pattern_match(cp[i % 8], value, len);
    ours_ns = (mono_s() - t0) * 1e9 / MATCHES;

    printf("%-28s regcomp %7zu B, %6.1f ns/match | corral_pattern (%s) "
           "%5zu B, %5.1f ns/match | %d hits\n",
           src, posix_bytes, posix_ns,
           corral_pattern_is_simple(cp[0]) ? "table" : "pcre2", ours_bytes,
           ours_ns, hits);
    for (int i = 0; i < N; i++) {
        regfree(&re[i]);
        corral_pattern_free(cp[i]);
    }
}

int
main(void)
{
    char v[129];

    memset(v, 'a', 128);
    v[128] = '\0';
    run("^[A-Za-z0-9._~-]{1,128}$", v);
    run("^[a-z]+(-[a-z0-9]+)*$", v);
    return 0;
}
