/* l2codec.c — the second tier's value encoding (see l2codec.h). */
#include "l2codec.h"

#include <stdbool.h>
#include <string.h>

#include "value_impl.h"

static char *
put(char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        *p++ = (char)(v >> (8 * i));
    return p;
}

static uint64_t
get(const char *p, int bytes)
{
    uint64_t v = 0;

    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)(unsigned char)p[i] << (8 * i);
    return v;
}

size_t
corral_l2_size(const struct corral_value *v)
{
    return CORRAL_L2_HEADER + v->keylen + v->ctype_len + v->aux_len +
           corral_value_stored_len(v);
}

void
corral_l2_encode(const struct corral_value *v, char *buf)
{
    char *p = buf;

    memcpy(p, "CRV", 3);
    p += 3;
    p = put(p, CORRAL_L2_VERSION, 1);
    p = put(p, v->stored_at, 8);
    p = put(p, v->expires_at, 8);
    p = put(p, v->swr_ms, 4);
    p = put(p, v->sie_ms, 4);
    p = put(p, v->keylen, 2);
    p = put(p, v->ctype_len, 2);
    p = put(p, v->aux_len, 2);
    p = put(p, v->len, 4);
    p = put(p, v->fill_ms, 4);
    p = put(p, corral_value_forms(v), 1);
    for (unsigned i = 1; i < CORRAL_VALUE_FORMS; i++) {
        size_t n;
        corral_value_form(v, i, &n);
        p = put(p, n, 4);
    }
    memcpy(p, v->etag, CORRAL_ETAG_LEN);
    p += CORRAL_ETAG_LEN;
    memcpy(p, corral_value_key(v), v->keylen);
    p += v->keylen;
    memcpy(p, corral_value_content_type(v), v->ctype_len);
    p += v->ctype_len;
    memcpy(p, corral_value_aux(v), v->aux_len);
    p += v->aux_len;
    for (unsigned i = 0; i < CORRAL_VALUE_FORMS; i++) {
        size_t n;
        const char *f = corral_value_form(v, i, &n);
        if (f != NULL) {
            memcpy(p, f, n);
            p += n;
        }
    }
}

/* The header's size in each version, 0 for one not known. */
static size_t
header_of(unsigned version)
{
    switch (version) {
    case 1:
        return 38;
    case 2:
        return 42;
    case CORRAL_L2_VERSION:
        return CORRAL_L2_HEADER;
    default:
        return 0;
    }
}

int
corral_l2_decode(const char *buf, size_t len, const void *key, size_t keylen,
                 struct corral_value **out)
{
    *out = NULL;
    if (len < 4 || memcmp(buf, "CRV", 3) != 0)
        return CORRAL_L2_GARBAGE;
    /* Version 1 had no fill_ms: read as 0 (no early refresh until the
     * key's next fill here). Versions 1 and 2 keep the body only. */
    unsigned version = (unsigned char)buf[3];
    size_t header = header_of(version);
    if (header == 0)
        return CORRAL_L2_FOREIGN;
    if (len < header)
        return CORRAL_L2_GARBAGE;
    uint64_t stored_at = get(buf + 4, 8), expires_at = get(buf + 12, 8);
    uint64_t swr = get(buf + 20, 4), sie = get(buf + 24, 4);
    size_t klen = get(buf + 28, 2), clen = get(buf + 30, 2);
    size_t alen = get(buf + 32, 2), blen = get(buf + 34, 4);
    uint64_t fill_ms = version == 1 ? 0 : get(buf + 38, 4);
    unsigned mask = 1;
    size_t flen[CORRAL_VALUE_FORMS] = {blen};
    char etag[CORRAL_ETAG_LEN + 1] = "";
    if (version == CORRAL_L2_VERSION) {
        mask = (unsigned char)buf[42];
        for (unsigned i = 1; i < CORRAL_VALUE_FORMS; i++)
            flen[i] = get(buf + 43 + 4 * (i - 1), 4);
        memcpy(etag, buf + header - CORRAL_ETAG_LEN, CORRAL_ETAG_LEN);
    }
    if (mask >> CORRAL_VALUE_FORMS != 0 || mask == 0)
        return CORRAL_L2_GARBAGE;
    /* A form is kept exactly when its length says so (the body may be
     * empty). */
    size_t total = header + klen + clen + alen;
    for (unsigned i = 0; i < CORRAL_VALUE_FORMS; i++) {
        bool kept = mask & 1u << i;
        if (i > 0 && kept != (flen[i] > 0))
            return CORRAL_L2_GARBAGE;
        if (kept)
            total += flen[i];
    }
    if (total != len || expires_at < stored_at)
        return CORRAL_L2_GARBAGE;
    const char *k = buf + header, *ct = k + klen, *aux = ct + clen;
    if (klen != keylen || memcmp(k, key, keylen) != 0)
        return CORRAL_L2_OTHER_KEY;
    char ctype[1025];
    if (clen >= sizeof(ctype) || memchr(ct, '\0', clen) != NULL)
        return CORRAL_L2_GARBAGE;
    memcpy(ctype, ct, clen);
    ctype[clen] = '\0';
    struct corral_value_form forms[CORRAL_VALUE_FORMS] = {{NULL, 0}};
    const char *p = aux + alen;
    for (unsigned i = 0; i < CORRAL_VALUE_FORMS; i++) {
        if (!(mask & 1u << i))
            continue;
        forms[i] = (struct corral_value_form){p, flen[i]};
        p += flen[i];
    }
    /* A kept body's ETag is computed from it, never read. A value an
     * older version wrote gets room to grow its aux area, for the
     * embedder to bring it up to date (see l2codec.h). */
    size_t room = version < CORRAL_L2_VERSION ? CORRAL_L2_AUX_ROOM : 0;
    struct corral_value *v = corral_value_new_forms(
        k, klen, forms, blen, mask & 1 ? NULL : etag, ctype, alen + room);
    if (v == NULL)
        return CORRAL_L2_GARBAGE;
    size_t cap;
    char *a = corral_value_aux_mut(v, &cap);
    if (alen > 0)
        memcpy(a, aux, alen);
    corral_value_set_aux_len(v, alen);
    corral_value_set_times(v, stored_at, expires_at, swr, sie);
    v->fill_ms = fill_ms > UINT16_MAX ? UINT16_MAX : (uint16_t)fill_ms;
    *out = v;
    return CORRAL_L2_OK;
}
