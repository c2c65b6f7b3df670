/* bench-negotiate.c — what negotiation adds to a hit, alone: ns to read
 * an Accept-Encoding value and choose a coding, for the fields clients
 * send. Run with `meson test --benchmark negotiate`. */
#include <stdio.h>
#include <string.h>

#include "negotiate.h"
#include "testlib.h"

#define RUNS 5000000

int
main(void)
{
    static const char *const fields[] = {
        "gzip, deflate, br",             /* browsers */
        "gzip, deflate, br, zstd",       /* newer browsers */
        "gzip",                          /* Go, Python */
        "br;q=1.0, gzip;q=0.8, *;q=0.1", /* q-values */
        "identity",
    };
    unsigned sink = 0;
    for (size_t f = 0; f < sizeof(fields) / sizeof(*fields); f++) {
        size_t n = strlen(fields[f]);
        double t0 = mono_s();
        for (int i = 0; i < RUNS; i++) {
            struct corral_accept a = {0};
            corral_accept_add(&a, fields[f], n);
            sink += corral_accept_choose(&a, 7);
            __asm__ volatile("" : : "r"(&a) : "memory");
        }
        double ns = (mono_s() - t0) * 1e9 / RUNS;
        printf("%-34s %6.1f ns\n", fields[f], ns);
    }
    return sink == 0xdeadbeef;
}
