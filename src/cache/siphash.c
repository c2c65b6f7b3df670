/* siphash.c — SipHash-2-4 (Aumasson and Bernstein), 64-bit output, and
 * the process's key seed. Reads input byte-wise into little-endian words,
 * so alignment and host byte order do not matter. */
#include "siphash.h"

#include <string.h>
#include <sys/random.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1;                                                              \
        v1 = ROTL(v1, 13);                                                     \
        v1 ^= v0;                                                              \
        v0 = ROTL(v0, 32);                                                     \
        v2 += v3;                                                              \
        v3 = ROTL(v3, 16);                                                     \
        v3 ^= v2;                                                              \
        v0 += v3;                                                              \
        v3 = ROTL(v3, 21);                                                     \
        v3 ^= v0;                                                              \
        v2 += v1;                                                              \
        v1 = ROTL(v1, 17);                                                     \
        v1 ^= v2;                                                              \
        v2 = ROTL(v2, 32);                                                     \
    } while (0)

static uint64_t
load64_le(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
           (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
           (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

uint64_t
corral_siphash(const void *data, size_t len, const uint8_t key[16])
{
    const uint8_t *in = data;
    uint64_t k0 = load64_le(key), k1 = load64_le(key + 8);
    uint64_t v0 = 0x736f6d6570736575ull ^ k0;
    uint64_t v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0;
    uint64_t v3 = 0x7465646279746573ull ^ k1;
    size_t blocks = len - len % 8, i;

    /* Indexes, not pointer arithmetic: data may be NULL when len is 0. */
    for (i = 0; i < blocks; i += 8) {
        uint64_t m = load64_le(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint8_t tail[8] = {0};
    if (len % 8)
        memcpy(tail, in + blocks, len % 8);
    uint64_t b = (uint64_t)len << 56 | load64_le(tail);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint8_t corral_key_seed[16];

/* Before main: every table hashes under the same seed from the first key
 * on, with no check on the hit path. Forked workers share it. */
__attribute__((constructor)) static void
seed_init(void)
{
    if (getrandom(corral_key_seed, sizeof(corral_key_seed), 0) !=
        sizeof(corral_key_seed)) {
        /* No entropy source: still correct, only predictable. */
        memcpy(corral_key_seed, "corral-key-seed!", sizeof(corral_key_seed));
    }
}
