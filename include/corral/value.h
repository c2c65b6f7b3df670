/* corral/value.h — cached values: immutable, refcounted byte blobs.
 * A value is one allocation holding its key, body, content type, ETag,
 * an embedder-owned "aux" area (e.g. a pre-rendered response prefix) and
 * flags byte, and the cache's bookkeeping, like a memcached item. It is
 * writable only until it is first stored; after that every field but four
 * bits the embedder may mark (corral_value_mark()) is read-only, and a
 * reader keeps it alive with corral_value_ref() across eviction, expiry
 * and overwrite.
 *
 * The body may be kept in more than one form: form 0 is the body itself,
 * forms 1 .. CORRAL_VALUE_FORMS - 1 are encodings of it (compressed, say)
 * that the embedder makes and names. libcorral keeps them, counts their
 * bytes and carries them through the tier below, but never reads them.
 * Form 0 may be left out when another form is kept: the value's length
 * and ETag stay the body's. */
#ifndef CORRAL_VALUE_H
#define CORRAL_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct corral_value; /* opaque */

#define CORRAL_KEY_MAX 4096        /* bytes */
#define CORRAL_BODY_MAX (1u << 30) /* bytes */
#define CORRAL_ETAG_LEN 18         /* "\"" 16 hex digits "\"" */
#define CORRAL_VALUE_FORMS 3       /* the body and two encodings of it */

/* A new value holding copies of key, body and content_type (NULL = ""), with
 * aux_cap bytes of aux area for the caller to fill before storing it. The
 * ETag is computed here, once. Returns NULL on bad sizes (key empty or over
 * CORRAL_KEY_MAX, body over CORRAL_BODY_MAX, aux_cap over 64 KB).
 * Caller owns the one reference: corral_value_unref() it. */
struct corral_value *corral_value_new(const void *key, size_t keylen,
                                      const void *body, size_t len,
                                      const char *content_type, size_t aux_cap);

/* One form of a body: bytes NULL (or, for forms past 0, len 0): not
 * kept. */
struct corral_value_form {
    const void *bytes;
    size_t len;
};

/* As corral_value_new(), with the body in forms[0 .. CORRAL_VALUE_FORMS -
 * 1]: forms[0] is the body itself, len the body's length whether forms[0]
 * is kept or not, and etag the body's quoted ETag as corral_value_etag_of()
 * writes it (CORRAL_ETAG_LEN characters; taken as given), or NULL to have
 * it computed from forms[0], which must then be kept. Returns NULL on bad
 * sizes (as corral_value_new(), and any form over CORRAL_BODY_MAX), when
 * no form is kept, when forms[0] is kept with a length other than len, or
 * without forms[0] and an etag, or with an etag not well formed. Caller
 * owns the one reference. */
struct corral_value *corral_value_new_forms(
    const void *key, size_t keylen, const struct corral_value_form *forms,
    size_t len, const char *etag, const char *content_type, size_t aux_cap);

/* Writes the quoted ETag corral_value_new() gives a body to out
 * (CORRAL_ETAG_LEN characters and a NUL). */
void corral_value_etag_of(const void *body, size_t len,
                          char out[CORRAL_ETAG_LEN + 1]);

/* Takes one more reference. Returns v. */
struct corral_value *corral_value_ref(struct corral_value *v);
/* Drops one reference; the last one frees. NULL is a no-op. */
void corral_value_unref(struct corral_value *v);

/* Borrowed; valid while the caller holds a reference. The body is NULL
 * when its form 0 is not kept; its length is the body's either way. */
const char *corral_value_key(const struct corral_value *v);
size_t corral_value_keylen(const struct corral_value *v);
const char *corral_value_body(const struct corral_value *v);
size_t corral_value_len(const struct corral_value *v);
/* Form i of the body and its length in *len (Borrowed, as the body), or
 * NULL (and *len 0) when v does not keep it or i is out of range. Form 0
 * is corral_value_body(). */
const char *corral_value_form(const struct corral_value *v, unsigned i,
                              size_t *len);
/* Bit i set: v keeps form i. */
unsigned corral_value_forms(const struct corral_value *v);
/* The bytes of every form v keeps. */
size_t corral_value_stored_len(const struct corral_value *v);
const char *corral_value_content_type(const struct corral_value *v);
/* The quoted strong ETag, CORRAL_ETAG_LEN characters, NUL-terminated. */
const char *corral_value_etag(const struct corral_value *v);
const char *corral_value_aux(const struct corral_value *v);
size_t corral_value_aux_len(const struct corral_value *v);
/* The writable aux area, or NULL once the value has been stored. */
char *corral_value_aux_mut(struct corral_value *v, size_t *cap);
/* Sets the used length of the aux area (<= its capacity) before storing.
 * Returns 0, or -EINVAL (too long) / -EPERM (already stored). */
int corral_value_set_aux_len(struct corral_value *v, size_t len);

/* Eight bits the embedder owns, as memcached's item flags: what it knows
 * of the value when it makes it (say, what its pre-rendered head says), so
 * a hit reads a byte rather than parsing. 0 until set; libcorral neither
 * reads them nor carries them through the tier below (a value rebuilt from
 * there has 0, until the embedder sets them, e.g. in its fit callback). */
uint8_t corral_value_flags(const struct corral_value *v);
/* Sets them before the value is stored. Returns 0, or -EPERM once
 * stored. */
int corral_value_set_flags(struct corral_value *v, uint8_t flags);

/* Four more bits the embedder owns, the only part of a value that stays
 * writable once it is stored: what the embedder learns of the value while
 * serving it (say, that a form it took unchecked from the tier below
 * decodes right), so the next reader need not learn it again. Marks are
 * only ever added; 0 until the first, and not carried through the tier
 * below. Plain stores, not atomic: a value belongs to the one loop that
 * owns its cache. corral_value_mark() adds marks & 0xf. */
unsigned corral_value_marks(const struct corral_value *v);
void corral_value_mark(struct corral_value *v, unsigned marks);

/* Freshness, all in ms of the cache's clock; 0 until stored. */
uint64_t corral_value_stored_at(const struct corral_value *v);
uint64_t corral_value_expires_at(const struct corral_value *v);
uint64_t corral_value_swr_ms(const struct corral_value *v);
uint64_t corral_value_sie_ms(const struct corral_value *v);
/* How long the work of the fill that made v took, ms (from
 * corral_fill_started(), else from the compute's start; 0: not known, e.g.
 * stored with corral_set_with_strategy()); saturates at 65535. */
uint64_t corral_value_fill_ms(const struct corral_value *v);
/* True for a value its fill answered with corral_fill_done_nostore():
 * handed to that fill's callers and kept nowhere, its lifetime 0 (stored
 * at and expiring at that moment). */
bool corral_value_nostore(const struct corral_value *v);

/* Sets the freshness of a value not yet stored (a tier rebuilding a value it
 * kept, so L1 keeps the original age). Returns 0 or -EPERM once stored. */
int corral_value_set_times(struct corral_value *v, uint64_t stored_at_ms,
                           uint64_t expires_at_ms, uint64_t swr_ms,
                           uint64_t sie_ms);

/* Whole seconds of freshness left at now_ms, and once expired minus the
 * whole seconds past expiry, at least 1 (never "-0": expired is
 * negative); and the age in whole seconds: as Cache-Status "ttl=" and the
 * Age header want them. */
int64_t corral_value_ttl_s(const struct corral_value *v, uint64_t now_ms);
uint64_t corral_value_age_s(const struct corral_value *v, uint64_t now_ms);

#endif
