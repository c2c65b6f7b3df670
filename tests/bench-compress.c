/* bench-compress.c — the measurements behind corral's compression
 * choices: gzip (libdeflate) level against ratio and time, brotli quality
 * against ratio and time, decoding time, on realistic JSON of 16 KB and
 * 200 KB; and, for small bodies, the size below which gzip does not pay.
 * Run with `meson test --benchmark compress` (or the binary itself). */
#include <brotli/decode.h>
#include <brotli/encode.h>
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

/* A market listing as price APIs answer it: an array of objects with
 * names, prices, volumes, percentages, timestamps and a sparkline, from a
 * fixed seed. Returns its length (at most cap), cut at a whole object. */
static size_t
market_json(char *out, size_t cap)
{
    static const char *const names[] = {
        "bitcoin",  "ethereum",  "tether",   "binancecoin", "solana",
        "ripple",   "usd-coin",  "cardano",  "dogecoin",    "tron",
        "polkadot", "chainlink", "litecoin", "avalanche-2", "uniswap"};
    unsigned x = 2463534242u;
    size_t n = 0;
    out[n++] = '[';
    for (unsigned i = 0;; i++) {
        char obj[2048];
        const char *name = names[i % 15];
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        double price = (x % 10000000) / 100.0;
        int k = snprintf(
            obj, sizeof(obj),
            "%s{\"id\":\"%s-%u\",\"symbol\":\"%.3s\",\"name\":\"%s\","
            "\"image\":\"https://assets.example.com/coins/images/%u/large/"
            "%s.png\",\"current_price\":%.2f,\"market_cap\":%u%u,"
            "\"market_cap_rank\":%u,\"total_volume\":%u%u,"
            "\"high_24h\":%.2f,\"low_24h\":%.2f,"
            "\"price_change_24h\":%.2f,"
            "\"price_change_percentage_24h\":%.2f,"
            "\"circulating_supply\":%u.%u,\"ath\":%.2f,"
            "\"last_updated\":\"2026-12-06T10:%02u:%02u.%03uZ\","
            "\"sparkline_in_7d\":{\"price\":[",
            i ? "," : "", name, i, name, name, x % 30000, name, price, x % 1000,
            (x >> 7) % 100000, i + 1, (x >> 3) % 1000, (x >> 11) % 100000,
            price * 1.03, price * 0.97, ((int)(x % 2000) - 1000) / 7.0,
            ((int)(x % 2000) - 1000) / 99.0, x % 100000000, x % 100,
            price * 1.8, x % 60, (x >> 5) % 60, x % 1000);
        for (int j = 0; j < 8; j++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            k += snprintf(obj + k, sizeof(obj) - (size_t)k, "%s%.2f",
                          j ? "," : "", price * (0.95 + (x % 100) / 1000.0));
        }
        k += snprintf(obj + k, sizeof(obj) - (size_t)k, "]}}");
        if (n + (size_t)k + 1 > cap)
            break;
        memcpy(out + n, obj, (size_t)k);
        n += (size_t)k;
    }
    out[n++] = ']';
    return n;
}

/* Mean µs of fn over enough runs to take about 0.2 s. */
#define TIME_US(out, expr)                                                     \
    do {                                                                       \
        unsigned runs_ = 0;                                                    \
        double t0_ = mono_s(), t_;                                             \
        do {                                                                   \
            expr;                                                              \
            runs_++;                                                           \
        } while ((t_ = mono_s() - t0_) < 0.2 && runs_ < 100000);               \
        (out) = t_ * 1e6 / runs_;                                              \
    } while (0)

static void
table(const char *json, size_t len)
{
    size_t cap = len + 1024;
    char *z = malloc(cap), *back = malloc(len + 1);
    printf("\n# %zu bytes of JSON\n", len);
    printf("# %-10s %8s %7s %9s %9s\n", "coding", "bytes", "ratio", "enc_us",
           "dec_us");
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    for (int level = 1; level <= 12; level++) {
        struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
        size_t n = 0;
        double enc, dec;
        TIME_US(enc, n = libdeflate_gzip_compress(c, json, len, z, cap));
        size_t got = 0;
        TIME_US(dec, libdeflate_gzip_decompress(d, z, n, back, len, &got));
        if (got != len || memcmp(back, json, len) != 0)
            printf("# gzip %d: round trip FAILED\n", level);
        printf("  gzip-%-5d %8zu %7.2f %9.1f %9.1f\n", level, n,
               (double)len / n, enc, dec);
        libdeflate_free_compressor(c);
    }
    for (int q = 0; q <= 11; q++) {
        size_t n = cap;
        double enc, dec;
        TIME_US(enc, (n = cap, BrotliEncoderCompress(q, BROTLI_DEFAULT_WINDOW,
                                                     BROTLI_MODE_TEXT, len,
                                                     (const uint8_t *)json, &n,
                                                     (uint8_t *)z)));
        size_t got = len;
        TIME_US(dec, (got = len, BrotliDecoderDecompress(n, (uint8_t *)z, &got,
                                                         (uint8_t *)back)));
        if (got != len || memcmp(back, json, len) != 0)
            printf("# br %d: round trip FAILED\n", q);
        printf("  br-%-7d %8zu %7.2f %9.1f %9.1f\n", q, n, (double)len / n, enc,
               dec);
    }
    libdeflate_free_decompressor(d);
    free(z);
    free(back);
}

/* Small bodies: gzip's and br's bytes against identity's, with the one
 * header line (Content-Encoding: gzip) the encoded answer adds. */
static void
small(const char *json)
{
    static const size_t sizes[] = {32,  64,  128, 192,  256,  320,
                                   384, 512, 768, 1024, 1536, 2048};
    char z[4096];
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    printf("\n# small bodies: bytes of the answer's body plus "
           "Content-Encoding line\n");
    printf("# %8s %8s %8s\n", "identity", "gzip-6", "br-11");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
        size_t len = sizes[i];
        size_t g = libdeflate_gzip_compress(c, json, len, z, sizeof(z));
        size_t b = sizeof(z);
        BrotliEncoderCompress(11, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, len,
                              (const uint8_t *)json, &b, (uint8_t *)z);
        printf("  %8zu %8zu %8zu\n", len, g + 24, b + 22);
    }
    libdeflate_free_compressor(c);
}

int
main(void)
{
    static char json[300 * 1024];
    size_t n16 = market_json(json, 16 * 1024);
    table(json, n16);
    size_t n200 = market_json(json, 200 * 1024);
    table(json, n200);
    small(json);
    return 0;
}
