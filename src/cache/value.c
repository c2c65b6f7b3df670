/* value.c — cached values: one allocation, refcounted, immutable once
 * stored. The ETag is a SipHash of the body under a fixed key, so every
 * instance that stores the same body names it the same. */
#include "value_impl.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "siphash.h"
#include "xalloc.h"

static const uint8_t etag_key[16] = "corral-etag-v1..";

void
corral_value_etag_of(const void *body, size_t len,
                     char out[CORRAL_ETAG_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t h = corral_siphash(body, len, etag_key);
    out[0] = '"';
    for (int i = 16; i >= 1; i--, h >>= 4)
        out[i] = hex[h & 0xf];
    out[17] = '"';
    out[18] = '\0';
}

/* Is etag what corral_value_etag_of() writes: a quoted 16 hex digits? */
static bool
etag_well_formed(const char *etag)
{
    if (strlen(etag) != CORRAL_ETAG_LEN || etag[0] != '"' ||
        etag[CORRAL_ETAG_LEN - 1] != '"')
        return false;
    for (int i = 1; i < CORRAL_ETAG_LEN - 1; i++)
        if (!((etag[i] >= '0' && etag[i] <= '9') ||
              (etag[i] >= 'a' && etag[i] <= 'f')))
            return false;
    return true;
}

struct corral_value *
corral_value_new_forms(const void *key, size_t keylen,
                       const struct corral_value_form *forms, size_t len,
                       const char *etag, const char *content_type,
                       size_t aux_cap)
{
    if (content_type == NULL)
        content_type = "";
    size_t ctype_len = strlen(content_type);
    bool body = forms[0].bytes != NULL;
    if (keylen == 0 || keylen > CORRAL_KEY_MAX || len > CORRAL_BODY_MAX ||
        ctype_len > 1024 || aux_cap > UINT16_MAX ||
        (body && forms[0].len != len) || (!body && etag == NULL) ||
        (etag != NULL && !etag_well_formed(etag)))
        return NULL;
    /* The body's form, then the others' table and bytes. */
    size_t stored = body ? len + 1 : 0, others = 0;
    for (int i = 1; i < CORRAL_VALUE_FORMS; i++) {
        if (forms[i].bytes == NULL || forms[i].len == 0)
            continue;
        if (forms[i].len > CORRAL_BODY_MAX)
            return NULL;
        others += forms[i].len;
    }
    if (!body && others == 0)
        return NULL;
    size_t table = others ? 4 * (CORRAL_VALUE_FORMS - 1) : 0;
    struct corral_value *v = xmalloc(sizeof(*v) + keylen + aux_cap + ctype_len +
                                     1 + stored + table + others);
    memset(v, 0, sizeof(*v));
    v->refs = 1;
    v->len = (uint32_t)len;
    v->keylen = (uint16_t)keylen;
    v->ctype_len = (uint16_t)ctype_len;
    v->aux_cap = (uint16_t)aux_cap;
    v->flags = (others ? VALUE_FORMS : 0) | (body ? 0 : VALUE_NO_BODY);
    /* key | aux | content type NUL | body NUL: what a hit reads (the
     * header, key and pre-rendered head) sits together in a few cache
     * lines, the body (which the kernel copies) after it. */
    char *p = v->data;
    memcpy(p, key, keylen);
    p += keylen + aux_cap;
    memcpy(p, content_type, ctype_len + 1);
    p += ctype_len + 1;
    if (body) {
        if (len)
            memcpy(p, forms[0].bytes, len);
        p[len] = '\0';
        p += len + 1;
    }
    if (etag != NULL)
        memcpy(v->etag, etag, CORRAL_ETAG_LEN + 1);
    else
        corral_value_etag_of(forms[0].bytes, len, v->etag);
    if (others == 0)
        return v;
    char *bytes = p + table;
    for (int i = 1; i < CORRAL_VALUE_FORMS; i++) {
        uint32_t n = forms[i].bytes != NULL ? (uint32_t)forms[i].len : 0;
        memcpy(p + 4 * (i - 1), &n, 4);
        if (n)
            memcpy(bytes, forms[i].bytes, n);
        bytes += n;
    }
    return v;
}

struct corral_value *
corral_value_new(const void *key, size_t keylen, const void *body, size_t len,
                 const char *content_type, size_t aux_cap)
{
    struct corral_value_form forms[CORRAL_VALUE_FORMS] = {
        {body != NULL ? body : "", len}};
    return corral_value_new_forms(key, keylen, forms, len, NULL, content_type,
                                  aux_cap);
}

struct corral_value *
corral_value_ref(struct corral_value *v)
{
    v->refs++;
    return v;
}

void
corral_value_unref(struct corral_value *v)
{
    if (v != NULL && --v->refs == 0)
        free(v);
}

const char *
corral_value_key(const struct corral_value *v)
{
    return v->data;
}

size_t
corral_value_keylen(const struct corral_value *v)
{
    return v->keylen;
}

const char *
corral_value_body(const struct corral_value *v)
{
    return v->flags & VALUE_NO_BODY ? NULL : value_forms_start(v);
}

size_t
corral_value_len(const struct corral_value *v)
{
    return v->len;
}

const char *
corral_value_form(const struct corral_value *v, unsigned i, size_t *len)
{
    *len = 0;
    if (i == 0) {
        if (v->flags & VALUE_NO_BODY)
            return NULL;
        *len = v->len;
        return value_forms_start(v);
    }
    if (i >= CORRAL_VALUE_FORMS || !(v->flags & VALUE_FORMS))
        return NULL;
    const char *p = value_forms_start(v);
    if (!(v->flags & VALUE_NO_BODY))
        p += v->len + 1;
    const char *bytes = p + 4 * (CORRAL_VALUE_FORMS - 1);
    uint32_t n = 0;
    for (unsigned j = 1; j <= i; j++) {
        bytes += n;
        memcpy(&n, p + 4 * (j - 1), 4);
    }
    if (n == 0)
        return NULL;
    *len = n;
    return bytes;
}

unsigned
corral_value_forms(const struct corral_value *v)
{
    unsigned mask = 0;
    size_t len;
    for (unsigned i = 0; i < CORRAL_VALUE_FORMS; i++)
        if (corral_value_form(v, i, &len) != NULL)
            mask |= 1u << i;
    return mask;
}

size_t
corral_value_stored_len(const struct corral_value *v)
{
    size_t n = 0, len;
    for (unsigned i = 0; i < CORRAL_VALUE_FORMS; i++)
        if (corral_value_form(v, i, &len) != NULL)
            n += len;
    return n;
}

const char *
corral_value_content_type(const struct corral_value *v)
{
    return v->data + v->keylen + v->aux_cap;
}

const char *
corral_value_etag(const struct corral_value *v)
{
    return v->etag;
}

const char *
corral_value_aux(const struct corral_value *v)
{
    return v->data + v->keylen;
}

size_t
corral_value_aux_len(const struct corral_value *v)
{
    return v->aux_len;
}

char *
corral_value_aux_mut(struct corral_value *v, size_t *cap)
{
    if (v->flags & VALUE_STORED)
        return NULL;
    *cap = v->aux_cap;
    return (char *)corral_value_aux(v);
}

int
corral_value_set_aux_len(struct corral_value *v, size_t len)
{
    if (v->flags & VALUE_STORED)
        return -EPERM;
    if (len > v->aux_cap)
        return -EINVAL;
    v->aux_len = (uint16_t)len;
    return 0;
}

uint8_t
corral_value_flags(const struct corral_value *v)
{
    return v->embedder_flags;
}

int
corral_value_set_flags(struct corral_value *v, uint8_t flags)
{
    if (v->flags & VALUE_STORED)
        return -EPERM;
    v->embedder_flags = flags;
    return 0;
}

unsigned
corral_value_marks(const struct corral_value *v)
{
    return v->marks;
}

void
corral_value_mark(struct corral_value *v, unsigned marks)
{
    v->marks |= marks & 0xfu;
}

uint64_t
corral_value_stored_at(const struct corral_value *v)
{
    return v->stored_at;
}

uint64_t
corral_value_expires_at(const struct corral_value *v)
{
    return v->expires_at;
}

uint64_t
corral_value_swr_ms(const struct corral_value *v)
{
    return v->swr_ms;
}

uint64_t
corral_value_sie_ms(const struct corral_value *v)
{
    return v->sie_ms;
}

uint64_t
corral_value_fill_ms(const struct corral_value *v)
{
    return v->fill_ms;
}

bool
corral_value_nostore(const struct corral_value *v)
{
    return (v->flags & VALUE_NOSTORE) != 0;
}

static uint32_t
clamp32(uint64_t ms)
{
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

int
corral_value_set_times(struct corral_value *v, uint64_t stored_at_ms,
                       uint64_t expires_at_ms, uint64_t swr_ms, uint64_t sie_ms)
{
    if (v->flags & VALUE_STORED)
        return -EPERM;
    v->stored_at = stored_at_ms;
    v->expires_at = expires_at_ms;
    v->swr_ms = clamp32(swr_ms);
    v->sie_ms = clamp32(sie_ms);
    return 0;
}

void
corral_value_stamp(struct corral_value *v, uint64_t now_ms, uint64_t ttl_ms,
                   uint64_t swr_ms, uint64_t sie_ms)
{
    corral_value_set_times(v, now_ms, now_ms + ttl_ms, swr_ms, sie_ms);
    v->flags |= VALUE_STORED;
}

int64_t
corral_value_ttl_s(const struct corral_value *v, uint64_t now_ms)
{
    if (now_ms < v->expires_at)
        return (int64_t)((v->expires_at - now_ms) / 1000);
    uint64_t past = (now_ms - v->expires_at) / 1000;
    return -(int64_t)(past > 0 ? past : 1);
}

uint64_t
corral_value_age_s(const struct corral_value *v, uint64_t now_ms)
{
    return now_ms > v->stored_at ? (now_ms - v->stored_at) / 1000 : 0;
}
