/* encoding.h — the content codings corral stores a body in: identity,
 * gzip (libdeflate, whole-buffer) and br (libbrotli), made once per fill
 * and never per hit, and decoded back only where identity bytes are needed
 * and not kept (a client that takes no coding, an aggregate's member, the
 * check of a value read from L2). A coding's number is the value form it
 * is kept in (corral/value.h). The rules of what is worth keeping are
 * here, with the measurements behind them (tests/bench-compress.c). */
#ifndef CORRAL_ENCODING_H
#define CORRAL_ENCODING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/value.h"

enum corral_coding {
    CORRAL_CODING_IDENTITY = 0, /* the body as the upstream meant it */
    CORRAL_CODING_GZIP = 1,     /* gzip (RFC 1952) */
    CORRAL_CODING_BR = 2,       /* Brotli (RFC 7932) */
    CORRAL_CODINGS = CORRAL_VALUE_FORMS,
};

/* The coding's name as Content-Encoding spells it ("identity" for 0). */
const char *corral_coding_name(enum corral_coding c);

/* Bodies shorter than this are kept identity only: below it gzip's
 * header, trailer and the Content-Encoding line eat what it saves. */
#define CORRAL_ENCODING_MIN 256 /* bytes */

/* Bodies at least this long keep no identity form once gzip's is kept: a
 * client that takes no coding gets the gzip form decoded for it. Below
 * this identity is kept too: it costs little next to the rest of the
 * value, while decoding would cost a small hit more than the hit itself
 * (and small identity hits are the common case to keep fast). */
#define CORRAL_ENCODING_IDENTITY_MAX 4096 /* bytes */

/* A body in the forms worth keeping, made by corral_encoding_make(). */
struct corral_encoded {
    struct corral_value_form form[CORRAL_CODINGS]; /* as a value keeps them */
    char *own[CORRAL_CODINGS];                     /* what this made */
    uint64_t cpu_us; /* thread CPU time the making took */
};

/* Makes the forms of body (len bytes) worth keeping: gzip when the body
 * is CORRAL_ENCODING_MIN long or more and gzip's form, with its
 * Content-Encoding line, is at least a sixteenth smaller; br when that
 * holds too and br's form is at least a sixteenth smaller than gzip's; and
 * identity (its form points at body: Borrowed, keep body alive as long as
 * out) unless gzip's is kept and len is CORRAL_ENCODING_IDENTITY_MAX or
 * more. Release with corral_encoding_finish(). */
void corral_encoding_make(const char *body, size_t len,
                          struct corral_encoded *out);
/* Frees what corral_encoding_make() made. */
void corral_encoding_finish(struct corral_encoded *e);

/* What this thread's corral_encoding_make() calls did, since it started:
 * bytes given to each coding and what came out (kept or not), and the
 * thread CPU time they took. */
struct corral_encoding_stats {
    uint64_t in_bytes[CORRAL_CODINGS];
    uint64_t out_bytes[CORRAL_CODINGS];
    uint64_t cpu_us;
};
void corral_encoding_stats(struct corral_encoding_stats *out);

/* Compresses len bytes of in with coding c (gzip or br) into out, of cap
 * bytes (corral_encoding_bound() is always enough). Returns the bytes
 * written, or 0 when they do not fit or c is not gzip or br. */
size_t corral_encoding_compress(enum corral_coding c, const void *in,
                                size_t len, void *out, size_t cap);
/* An upper bound of corral_encoding_compress()'s output for len bytes. */
size_t corral_encoding_bound(enum corral_coding c, size_t len);

/* Decodes n bytes of in, in coding c (gzip or br), into out, which must
 * decode to exactly len bytes: more, fewer, a corrupt stream, trailing
 * bytes or another coding are -EBADMSG, and nothing past out + len is
 * written (a bomb stops at len). Returns 0 or -EBADMSG. */
int corral_encoding_decode(enum corral_coding c, const void *in, size_t n,
                           void *out, size_t len);

/* The identity bytes of v: its body when kept, else its gzip form (or br
 * form) decoded into a buffer the caller frees, set in *own. Returns NULL
 * when no form decodes to v's length. */
const char *corral_encoding_identity(const struct corral_value *v, char **own);

#endif
