/* siphash.h — SipHash-2-4, and the key hash behind every table in
 * libcorral (as in redis): keyed by a random per-process seed, so crafted
 * keys cannot pile into one bucket. */
#ifndef CORRAL_SIPHASH_H
#define CORRAL_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t corral_siphash(const void *data, size_t len, const uint8_t key[16]);

/* The process's random seed for key hashes, set before main. */
extern uint8_t corral_key_seed[16];

/* A cache key's hash under the process's seed. Hash a key once per call
 * and pass the hash on: every table of libcorral takes it. */
static inline uint64_t
corral_key_hash(const void *key, size_t keylen)
{
    return corral_siphash(key, keylen, corral_key_seed);
}

#endif
