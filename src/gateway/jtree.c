/* jtree.c — yajl callbacks that build a struct jnode tree, tracking the
 * line each value starts on. */
#include "jtree.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#define MAX_DEPTH 64

struct builder {
    const char *text;
    size_t len;
    yajl_handle h;
    bool finishing; /* in yajl_complete_parse: yajl's offsets are not ours */
    size_t scan_off;
    unsigned scan_line;
    struct jnode *root;
    struct jnode *stack[MAX_DEPTH];
    size_t depth;
    char *key;
    unsigned key_line;
    const char *error; /* why a callback stopped the parse */
};

void
corral_jtree_free(struct jnode *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->n; i++)
        corral_jtree_free(n->kids[i]);
    free(n->kids);
    free(n->key);
    free(n->raw);
    free(n->val);
    free(n);
}

static unsigned
line_at(struct builder *b, size_t off)
{
    if (off > b->len)
        off = b->len;
    if (off < b->scan_off) {
        b->scan_off = 0;
        b->scan_line = 1;
    }
    for (; b->scan_off < off; b->scan_off++)
        if (b->text[b->scan_off] == '\n')
            b->scan_line++;
    return b->scan_line;
}

/* The line of the token yajl just read: it ends at the bytes consumed. */
static unsigned
current_line(struct builder *b)
{
    return line_at(b, b->finishing ? b->len : yajl_get_bytes_consumed(b->h));
}

static int
stop(struct builder *b, const char *why)
{
    b->error = why;
    return 0;
}

static struct jnode *
add(struct builder *b, enum jtype type)
{
    struct jnode *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    n->type = type;
    n->line = current_line(b);
    if (b->depth == 0) {
        b->root = n;
        return n;
    }
    struct jnode *p = b->stack[b->depth - 1];
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 4;
        struct jnode **kids = realloc(p->kids, cap * sizeof(*kids));
        if (kids == NULL) {
            free(n);
            return NULL;
        }
        p->kids = kids;
        p->cap = cap;
    }
    if (p->type == J_OBJECT) {
        n->key = b->key;
        n->line = b->key_line;
        b->key = NULL;
    }
    p->kids[p->n++] = n;
    return n;
}

static int
on_scalar(struct builder *b, enum jtype type, long long num)
{
    struct jnode *n = add(b, type);
    if (n == NULL)
        return stop(b, "out of memory");
    n->num = num;
    n->dbl = (double)num;
    return 1;
}

static int
on_null(void *b)
{
    return on_scalar(b, J_NULL, 0);
}

static int
on_bool(void *b, int v)
{
    return on_scalar(b, J_BOOL, v);
}

static int
on_int(void *b, long long v)
{
    return on_scalar(b, J_INT, v);
}

static int
on_double(void *ctx, double v)
{
    struct builder *b = ctx;
    struct jnode *n = add(b, J_DOUBLE);
    if (n == NULL)
        return stop(b, "out of memory");
    n->dbl = v;
    return 1;
}

static int
on_string(void *ctx, const unsigned char *s, size_t len)
{
    struct builder *b = ctx;
    if (memchr(s, '\0', len))
        return stop(b, "strings must not contain \\u0000");
    struct jnode *n = add(b, J_STRING);
    if (n == NULL || (n->raw = strndup((const char *)s, len)) == NULL)
        return stop(b, "out of memory");
    return 1;
}

static int
on_key(void *ctx, const unsigned char *s, size_t len)
{
    struct builder *b = ctx;
    if (memchr(s, '\0', len))
        return stop(b, "keys must not contain \\u0000");
    free(b->key);
    b->key_line = current_line(b);
    if ((b->key = strndup((const char *)s, len)) == NULL)
        return stop(b, "out of memory");
    return 1;
}

static int
on_open(struct builder *b, enum jtype type)
{
    struct jnode *n = add(b, type);
    if (n == NULL)
        return stop(b, "out of memory");
    if (b->depth == MAX_DEPTH)
        return stop(b, "nested too deeply");
    b->stack[b->depth++] = n;
    return 1;
}

static int
on_start_map(void *b)
{
    return on_open(b, J_OBJECT);
}

static int
on_start_array(void *b)
{
    return on_open(b, J_ARRAY);
}

static int
on_close(void *ctx)
{
    ((struct builder *)ctx)->depth--;
    return 1;
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_bool,
    .yajl_integer = on_int,
    .yajl_double = on_double,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_close,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_close,
};

struct jnode *
corral_jtree_parse(const char *text, size_t len, const char *name, char *err,
                   size_t errlen)
{
    struct builder b = {.text = text, .len = len, .scan_line = 1};
    if ((b.h = yajl_alloc(&callbacks, NULL, &b)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    yajl_config(b.h, yajl_allow_comments, 1);
    yajl_status st = yajl_parse(b.h, (const unsigned char *)text, len);
    if (st == yajl_status_ok) {
        b.finishing = true;
        st = yajl_complete_parse(b.h);
    }
    if (st != yajl_status_ok) {
        unsigned line = current_line(&b);
        if (b.error) {
            snprintf(err, errlen, "%s:%u: %s", name, line, b.error);
        } else {
            /* "parse error: premature EOF\n": keep what follows ": " */
            unsigned char *e = yajl_get_error(b.h, 0, NULL, 0);
            const char *why = e ? (const char *)e : "unknown error";
            const char *colon = strstr(why, ": ");
            if (colon)
                why = colon + 2;
            snprintf(err, errlen, "%s:%u: invalid JSON: %.*s", name, line,
                     (int)strcspn(why, "\n"), why);
            if (e)
                yajl_free_error(b.h, e);
        }
        corral_jtree_free(b.root);
        b.root = NULL;
    }
    free(b.key);
    yajl_free(b.h);
    return b.root;
}
