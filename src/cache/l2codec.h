/* l2codec.h — how a value is laid out in the second tier: binary-safe and
 * versioned, with everything a hit needs, so an L2 hit restores exactly
 * what L1 would have served (the ETag is recomputed from the body, as L1
 * does). Internal to libcorral.
 *
 * Layout, integers little-endian:
 *   "CRV" version(1)  stored_at(8) expires_at(8) swr_ms(4) sie_ms(4)
 *   keylen(2) ctype_len(2) aux_len(2) body_len(4) fill_ms(4)
 *   key | content type | aux | body
 * fill_ms (how long the fill took, for early refresh) is new in version 2;
 * version 1, without it, still decodes.
 * Anything else under a key (another version, garbage, a truncated blob, a
 * value for another key) decodes as a miss. */
#ifndef CORRAL_L2CODEC_H
#define CORRAL_L2CODEC_H

#include <stddef.h>
#include <stdint.h>

struct corral_value;

#define CORRAL_L2_VERSION 2
#define CORRAL_L2_HEADER 42 /* bytes before the key */

/* Bytes corral_l2_encode() writes for v. */
size_t corral_l2_size(const struct corral_value *v);

/* Writes v's encoding into buf (corral_l2_size(v) bytes). */
void corral_l2_encode(const struct corral_value *v, char *buf);

enum corral_l2_decode {
    CORRAL_L2_OK = 0,
    CORRAL_L2_FOREIGN,  /* another encoding version */
    CORRAL_L2_GARBAGE,  /* not an encoding, truncated, or sizes that lie */
    CORRAL_L2_OTHER_KEY /* a value for another key */
};

/* Rebuilds the value of key from len bytes of buf, with its times and
 * aux. Returns CORRAL_L2_OK and a new value (caller owns it) in *out. */
int corral_l2_decode(const char *buf, size_t len, const void *key,
                     size_t keylen, struct corral_value **out);

#endif
