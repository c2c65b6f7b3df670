/* l2codec.h — how a value is laid out in the second tier: binary-safe and
 * versioned, with everything a hit needs, so an L2 hit restores exactly
 * what L1 would have served (the ETag is recomputed from the body when
 * the body is kept, as L1 does). Internal to libcorral.
 *
 * Layout, integers little-endian:
 *   "CRV" version(1)  stored_at(8) expires_at(8) swr_ms(4) sie_ms(4)
 *   keylen(2) ctype_len(2) aux_len(2) body_len(4) fill_ms(4)
 *   forms(1) form_len(4) x (CORRAL_VALUE_FORMS - 1) etag(18)
 *   key | content type | aux | body (when kept) | each other form kept
 * forms is the value's bit mask of forms kept (bit 0: the body); a form
 * not kept has length 0. body_len is the body's length, kept or not; etag
 * is the body's, the one a value without its body is rebuilt with.
 * Version 3 added forms, their lengths and the ETag; version 2 fill_ms
 * (how long the fill took, for early refresh). Versions 1 and 2, a body
 * and nothing else, still decode.
 * Anything else under a key (another version, garbage, a truncated blob, a
 * value for another key) decodes as a miss. */
#ifndef CORRAL_L2CODEC_H
#define CORRAL_L2CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "corral/value.h"

#define CORRAL_L2_VERSION 3
/* Bytes before the key. */
#define CORRAL_L2_HEADER (43 + 4 * (CORRAL_VALUE_FORMS - 1) + CORRAL_ETAG_LEN)

/* Bytes of aux area a value decoded from an older version has beyond
 * its aux: what an embedder's aux grew by since (a head with more lines)
 * fits there, so its fit callback can rewrite the aux in place. */
#define CORRAL_L2_AUX_ROOM 128

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
