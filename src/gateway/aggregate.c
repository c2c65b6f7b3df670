/* aggregate.c — assembling an aggregate route's answer (see aggregate.h). */
#include "aggregate.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "compute.h"
#include "encoding.h"
#include "fmt.h"
#include "xalloc.h"

/* What one member answered. */
struct slot {
    struct asm_job *job;
    struct corral_waiter *w; /* until it answers */
    bool done;
    int error;  /* < 0: failed, with status and message */
    int status; /* the HTTP status a failure stands for */
    char *message;
    struct corral_value *value; /* a reference, when ok */
    uint64_t retry_ms;          /* of a failure */
    bool stale;
};

/* One assembly in flight. */
struct asm_job {
    struct corral_fill *fill;
    struct corral_cache *cache;
    const struct corral_aggregate_compute *af;
    size_t n, pending;
    bool aborted; /* the fill was given up: cancelling the members */
    struct slot slots[];
};

struct buf {
    char *p;
    size_t len, cap;
};

/* Room for n more bytes and a NUL. */
static void
reserve(struct buf *b, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
}

static void
put(struct buf *b, const char *s, size_t n)
{
    reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
puts_(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* s as a JSON string, quotes included; never cut. */
static void
put_json_str(struct buf *b, const char *s)
{
    size_t room = FMT_JSON_ROOM(strlen(s));
    reserve(b, room + 2);
    b->p[b->len++] = '"';
    b->len += fmt_json_escape(b->p + b->len, room, s);
    put(b, "\"", 1);
}

static void
job_free(struct asm_job *job)
{
    for (size_t i = 0; i < job->n; i++) {
        corral_value_unref(job->slots[i].value);
        free(job->slots[i].message);
    }
    free(job);
}

/* Every member has answered: splice, store, or fail if none could. */
static void
assemble(struct asm_job *job)
{
    const struct corral_config_route *route = job->af->route;
    struct corral_fill *fill = job->fill;
    struct buf body = {0}, errors = {0}, stale = {0};
    uint64_t now = corral_cache_now(job->cache);
    uint64_t ttl = corral_strategy_ttl_ms(&route->strategy);
    uint64_t retry = 0; /* the soonest a failed member is tried again */
    size_t ok = 0;
    bool pass = false; /* a member must not be stored: nor may this */

    puts_(&body, "{");
    for (size_t i = 0; i < job->n; i++) {
        struct slot *s = &job->slots[i];
        const char *name = route->members[i].name;
        if (i > 0)
            puts_(&body, ",");
        put_json_str(&body, name);
        puts_(&body, ":");
        if (s->error == 0) {
            struct corral_value *v = s->value;
            char *own;
            const char *id = corral_encoding_identity(v, &own);
            /* A member that decodes to nothing is null, as a failed
             * one; its checks at fill and promotion make that unlikely. */
            put(&body, id != NULL ? id : "null",
                id != NULL ? corral_value_len(v) : 4);
            free(own);
            ok++;
            pass = pass || corral_value_nostore(v);
            uint64_t exp = corral_value_expires_at(v);
            uint64_t left = exp > now ? exp - now : 0;
            if (s->stale || left < 1000)
                left = 1000;
            if (left < ttl)
                ttl = left;
            if (s->stale) {
                if (stale.len > 0)
                    puts_(&stale, ", ");
                puts_(&stale, name);
            }
            continue;
        }
        puts_(&body, "null");
        if (errors.len > 0)
            puts_(&errors, ",");
        put_json_str(&errors, name);
        char st[48];
        snprintf(st, sizeof(st), ":{\"status\":%d,\"error\":", s->status);
        puts_(&errors, st);
        put_json_str(&errors, s->message ? s->message : "");
        puts_(&errors, "}");
        /* Not known: again in a second, as for a stale member. */
        uint64_t r = s->retry_ms > 0 ? s->retry_ms : 1000;
        if (retry == 0 || r < retry)
            retry = r;
    }
    if (errors.len > 0) {
        puts_(&body, ",\"errors\":{");
        put(&body, errors.p, errors.len);
        puts_(&body, "}");
    }
    puts_(&body, "}");
    size_t keylen;
    const char *key = corral_fill_key(fill, &keylen);
    if (ok == 0) {
        /* Nothing to serve: the message is the body of the 502. */
        corral_fill_fail_retry(fill, -ENODATA, body.p, retry);
    } else {
        char extra[600] = "";
        if (stale.len > 0)
            snprintf(extra, sizeof(extra), "Corral-Stale-Members: %.500s\r\n",
                     stale.p);
        struct corral_value *v = corral_compute_render(
            key, keylen, body.p, body.len, "application/json", 200, extra);
        /* A failed member's next try may bring it back: this answer
         * lives no longer than that. */
        if (retry > 0 && retry < ttl)
            ttl = retry;
        if (v != NULL && stale.len > 0)
            corral_value_set_flags(v, corral_value_flags(v) |
                                          CORRAL_COMPUTE_STALE_MEMBERS);
        if (v == NULL)
            corral_fill_fail(fill, -EBADMSG, "aggregate too large to cache");
        else if (pass)
            corral_fill_done_nostore(fill, v);
        else
            corral_fill_done_ttl(fill, v, ttl > 0 ? ttl : 1000);
    }
    free(errors.p);
    free(stale.p);
    free(body.p);
}

static void
member_done(const struct corral_result *res, void *arg)
{
    struct slot *s = arg;
    struct asm_job *job = s->job;
    s->w = NULL;
    s->done = true;
    if (job->aborted)
        return; /* the abort is cancelling every member */
    s->error = res->error;
    if (res->error == 0) {
        /* A cached upstream 4xx (negative caching) is a failed member. */
        if (corral_value_flags(res->value) & CORRAL_COMPUTE_NEGATIVE) {
            int status = corral_compute_status(res->value);
            s->error = -EBADMSG;
            s->status = status;
            char msg[64];
            snprintf(msg, sizeof(msg), "upstream answered %d", status);
            s->message = xstrndup(msg, strlen(msg));
            /* Kept for its own short time: asked again once it is gone. */
            uint64_t now = corral_cache_now(job->cache);
            uint64_t exp = corral_value_expires_at(res->value);
            s->retry_ms = exp > now ? exp - now : 1;
        } else {
            s->value = corral_value_ref(res->value);
            s->stale = corral_source_stale(res->source);
        }
    } else {
        s->status = corral_compute_error_status(res->error);
        s->message = xstrndup(res->message, strlen(res->message));
        s->retry_ms = res->retry_after_ms;
    }
    /* A member cancelled by the cache's teardown counts as failed; the
     * cache then drops what the assembly reports (fill_given_up). */
    if (--job->pending == 0) {
        assemble(job);
        job_free(job);
    }
}

static void
job_abort(void *arg)
{
    struct asm_job *job = arg;
    job->aborted = true;
    for (size_t i = 0; i < job->n; i++)
        if (job->slots[i].w != NULL)
            corral_waiter_cancel(job->slots[i].w);
    job_free(job);
}

static void
job_start(struct corral_fill *fill, const char *key, size_t keylen, void *arg)
{
    const struct corral_aggregate_compute *af = arg;
    const struct corral_config_route *route = af->route;
    struct asm_job *job =
        xcalloc(1, sizeof(*job) + route->n_members * sizeof(struct slot));
    job->fill = fill;
    job->af = af;
    job->cache = af->cache;
    job->n = route->n_members;
    job->pending = job->n;
    /* Every member answers from the loop, never in here: the count holds. */
    for (size_t i = 0; i < job->n; i++) {
        struct slot *s = &job->slots[i];
        s->job = job;
        if (af->get(af->get_ctx, &route->members[i], member_done, s, &s->w) <
            0) {
            s->w = NULL;
            s->done = true;
            s->error = -EINVAL;
            s->status = 400;
            s->message = xstrndup("member path does not fit its route", 34);
            job->pending--;
        }
    }
    if (job->pending == 0) {
        assemble(job);
        job_free(job);
        return;
    }
    corral_fill_on_abort(fill, job_abort, job);
}

/* Every assembly's fill, from its start to its end, keeps af's
 * generation alive. */
static void
aggregate_hold(void *arg, int delta)
{
    const struct corral_aggregate_compute *af = arg;
    if (af->jobs)
        *af->jobs += (unsigned)delta;
}

static bool
aggregate_fit(const struct corral_value *v, uint64_t now_ms, void *arg)
{
    const struct corral_aggregate_compute *af = arg;
    return corral_compute_fit(af->route, v, now_ms);
}

int
corral_aggregate_get(struct corral_cache *c,
                     const struct corral_aggregate_compute *af, const char *key,
                     size_t keylen, corral_result_cb *cb, void *arg,
                     struct corral_waiter **out)
{
    const struct corral_compute compute = {.fn = job_start,
                                           .arg = (void *)af,
                                           .fit = aggregate_fit,
                                           .hold = aggregate_hold};
    *out = corral_get_or_compute(c, key, keylen, &af->route->strategy,
                                 af->timeout_ms, &compute, cb, arg);
    return *out != NULL ? 0 : -ESHUTDOWN;
}

int
corral_aggregate_refresh(struct corral_cache *c,
                         const struct corral_aggregate_compute *af,
                         const char *key, size_t keylen, bool refetch)
{
    const struct corral_compute compute = {.fn = job_start,
                                           .arg = (void *)af,
                                           .fit = aggregate_fit,
                                           .hold = aggregate_hold};
    return (refetch ? corral_refetch : corral_refresh)(
        c, key, keylen, &af->route->strategy, af->timeout_ms, &compute);
}
