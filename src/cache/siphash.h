/* siphash.h — SipHash-2-4, the keyed hash behind L1's table (as in redis).
 * With a random per-process key, crafted keys cannot pile into one bucket. */
#ifndef CORRAL_SIPHASH_H
#define CORRAL_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t corral_siphash(const void *data, size_t len, const uint8_t key[16]);

#endif
