/* value_impl.h — the layout of struct corral_value, private to libcorral.
 * One allocation: this header, then key | aux | content type | NUL | body |
 * NUL, so a hit's reads (header, key, the embedder's pre-rendered head)
 * share a few cache lines ahead of the body. A value with other forms
 * (VALUE_FORMS) has their lengths after that, one uint32_t per form past
 * 0 (0: not kept), then their bytes; one without its body (VALUE_NO_BODY)
 * has neither the body nor its NUL. The link fields belong to the L1
 * that holds the value (at most one), and the marks to its embedder;
 * everything else is fixed once the value is stored. */
#ifndef CORRAL_VALUE_IMPL_H
#define CORRAL_VALUE_IMPL_H

#include <sys/queue.h>

#include "corral/value.h"
#include "dict.h"

enum value_flag {
    VALUE_STORED = 1 << 0,  /* stamped and immutable */
    VALUE_LINKED = 1 << 1,  /* in an L1 table and queue */
    VALUE_NOSTORE = 1 << 2, /* answered its fill's callers, kept nowhere */
    VALUE_FORMS = 1 << 3,   /* keeps forms past 0: their table follows */
    VALUE_NO_BODY = 1 << 4, /* form 0 is not kept */
};

struct corral_value {
    struct corral_dict_link hlink;   /* L1 bucket chain */
    TAILQ_ENTRY(corral_value) qlink; /* L1 S3-FIFO queue */
    uint64_t stored_at;              /* ms */
    uint64_t expires_at;             /* ms */
    uint32_t swr_ms, sie_ms;         /* stale windows, ms */
    uint32_t refs;
    uint32_t len; /* body bytes */
    uint16_t keylen, ctype_len, aux_len, aux_cap;
    uint16_t fill_ms; /* how long its fill took (early refresh's delta),
                       * saturating at 65535 */
    /* One byte for the two L1 fields and the embedder's marks, so its
     * flags fit without growing the header past its cache lines. */
    unsigned freq : 2;      /* L1 access count, 0..3 */
    unsigned queue : 2;     /* L1 queue: enum l1_queue */
    unsigned marks : 4;     /* corral_value_marks(): writable for ever */
    uint8_t flags;          /* enum value_flag */
    uint8_t embedder_flags; /* corral_value_flags(): not libcorral's */
    char etag[CORRAL_ETAG_LEN + 1];
    char data[];
};

static inline const char *
value_key(const struct corral_value *v)
{
    return v->data;
}

/* The bytes after the content type's NUL: the body's form, then the
 * other forms' table and bytes. */
static inline const char *
value_forms_start(const struct corral_value *v)
{
    return v->data + v->keylen + v->aux_cap + v->ctype_len + 1;
}

/* The last ms at which L1 may still need v: past every stale window. */
static inline uint64_t
value_keep_until(const struct corral_value *v)
{
    uint32_t w = v->swr_ms > v->sie_ms ? v->swr_ms : v->sie_ms;
    return v->expires_at + w;
}

/* Stamps a value with its times and makes it immutable. */
void corral_value_stamp(struct corral_value *v, uint64_t now_ms,
                        uint64_t ttl_ms, uint64_t swr_ms, uint64_t sie_ms);

#endif
