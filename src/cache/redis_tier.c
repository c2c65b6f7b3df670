/* redis_tier.c — the second tier in Redis (see corral/redis_tier.h).
 *
 * A get is a struct req with its own timer. Sent to Redis, hiredis owns it
 * until the reply callback, which hiredis calls exactly once (with a NULL
 * reply when the connection goes); the timer may answer first, and then
 * the reply only frees it. Not sent (Redis down), the timer answers it on
 * the next loop turn, so no callback fires inside get(). A connection that
 * times out STUCK_AFTER gets in a row is taken for stuck (accepting, never
 * answering) and replaced. */
#include "corral/redis_tier.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <unistd.h>

#include "corral/value.h"
#include "l2codec.h"
#include "timeutil.h"
#include "xalloc.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 500
#define CONNECT_TIMEOUT_MS 1000
#define STUCK_AFTER 3 /* gets in a row that time out */

struct req {
    struct corral_redis_tier *t;
    corral_tier_get_cb *cb;        /* a get */
    corral_tier_lease_cb *lease_cb; /* or a lease */
    corral_redis_admit_cb *admit_cb; /* or an admission */
    uint64_t admit_ms;               /* its answer's ms */
    void *arg;
    struct event *timer;
    bool sent; /* hiredis holds it until its reply callback */
    bool done; /* cb has fired */
    TAILQ_ENTRY(req) link;
    size_t keylen;
    char key[];
};

struct corral_redis_tier {
    struct event_base *base;
    char *host, *unix_path, *prefix, *password;
    char name[280]; /* "host:port" or the path, for logs */
    uint16_t port;
    unsigned db;
    uint64_t timeout_ms;
    redisAsyncContext *ac; /* NULL while down */
    bool connected;        /* ac finished connecting */
    unsigned timeouts_in_row;
    uint64_t backoff_ms;
    struct event *retry_ev;   /* reconnect, or give up connecting */
    struct event *reset_ev;   /* drop a stuck connection, off the stack */
    /* The subscriber connection, for invalidations from other instances:
     * up while someone subscribes. */
    redisAsyncContext *sub_ac;
    struct event *sub_retry_ev; /* its own reconnect timer */
    char *channel;  /* prefix + "invalidate" */
    char *rchannel; /* prefix + "released" */
    char *nchannel; /* prefix + "notes" */
    corral_redis_note_cb *note_cb;
    void *note_arg;
    char **note_names; /* read again at every connect */
    size_t n_notes;
    corral_tier_invalidate_cb *sub_cb;
    corral_tier_released_cb *rel_cb;
    void *sub_arg, *rel_arg;
    char owner[40]; /* this instance's lease token */
    uint64_t admits; /* admissions asked: unique members of a window */
    TAILQ_HEAD(, req) reqs;   /* gets not answered or not freed yet */
    struct corral_redis_stats stats;
};

const char *
corral_redis_state_name(enum corral_redis_state s)
{
    return s == CORRAL_REDIS_UP ? "up" : "down";
}

/* ---- connection ---- */

static void start_connect(struct corral_redis_tier *t);
static void start_sub(struct corral_redis_tier *t);

static void
schedule_retry(struct corral_redis_tier *t)
{
    struct timeval tv = corral_ms_to_tv(t->backoff_ms);

    event_add(t->retry_ev, &tv);
    t->backoff_ms *= 2;
    if (t->backoff_ms > BACKOFF_MAX_MS)
        t->backoff_ms = BACKOFF_MAX_MS;
}

static void
went_down(struct corral_redis_tier *t, const char *why)
{
    if (t->stats.state == CORRAL_REDIS_UP)
        corral_log(CORRAL_LOG_WARNING, "redis %s: down (%s)", t->name, why);
    t->stats.state = CORRAL_REDIS_DOWN;
    t->ac = NULL;
    t->connected = false;
    schedule_retry(t);
}

static void read_notes(struct corral_redis_tier *t);

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct corral_redis_tier *t = ac->data;

    if (t == NULL || t->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback. */
        went_down(t, ac->errstr);
        return;
    }
    event_del(t->retry_ev);
    t->connected = true;
    t->backoff_ms = BACKOFF_MIN_MS;
    t->timeouts_in_row = 0;
    t->stats.connects++;
    if (t->stats.state != CORRAL_REDIS_UP)
        corral_log(CORRAL_LOG_NOTICE, "redis %s: up", t->name);
    t->stats.state = CORRAL_REDIS_UP;
    read_notes(t);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    struct corral_redis_tier *t = ac->data;

    (void)status;
    if (t == NULL || t->ac != ac)
        return; /* one we dropped on purpose */
    went_down(t, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void
start_connect(struct corral_redis_tier *t)
{
    redisAsyncContext *ac = t->unix_path ? redisAsyncConnectUnix(t->unix_path)
                                         : redisAsyncConnect(t->host, t->port);
    struct timeval tv = corral_ms_to_tv(CONNECT_TIMEOUT_MS);

    if (ac == NULL || ac->err) {
        if (ac != NULL)
            redisAsyncFree(ac);
        t->ac = NULL;
        schedule_retry(t);
        return;
    }
    ac->data = t;
    t->ac = ac;
    t->connected = false;
    redisLibeventAttach(ac, t->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (t->password != NULL)
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", t->password);
    if (t->db != 0)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %u", t->db);
    /* A connect that hangs (a black hole) is given up at the retry timer. */
    event_add(t->retry_ev, &tv);
}

/* Drops the current connection (its pending replies come back NULL). */
static void
drop(struct corral_redis_tier *t, const char *why)
{
    redisAsyncContext *ac = t->ac;

    if (ac == NULL)
        return;
    t->ac = NULL; /* on_disconnect ignores it now */
    ac->data = NULL;
    if (t->stats.state == CORRAL_REDIS_UP)
        corral_log(CORRAL_LOG_WARNING, "redis %s: down (%s)", t->name, why);
    t->stats.state = CORRAL_REDIS_DOWN;
    t->connected = false;
    redisAsyncFree(ac);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis_tier *t = arg;

    (void)fd;
    (void)what;
    if (t->ac != NULL && !t->connected) {
        drop(t, "connect timed out");
        schedule_retry(t);
        return;
    }
    if (t->ac == NULL)
        start_connect(t);
}

static void
sub_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis_tier *t = arg;

    (void)fd;
    (void)what;
    if (t->sub_ac == NULL &&
        (t->sub_cb != NULL || t->rel_cb != NULL || t->note_cb != NULL))
        start_sub(t);
}

static void
schedule_sub_retry(struct corral_redis_tier *t)
{
    struct timeval tv = corral_ms_to_tv(BACKOFF_MAX_MS);

    event_add(t->sub_retry_ev, &tv);
}

static void
reset_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis_tier *t = arg;

    (void)fd;
    (void)what;
    drop(t, "no answer: connection taken for stuck");
    schedule_retry(t);
}

/* ---- the subscriber connection ---- */

static void
on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis_tier *t = privdata;
    redisReply *r = reply;

    (void)ac;
    if (r == NULL || t->sub_ac != ac || r->type != REDIS_REPLY_ARRAY ||
        r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "message") != 0 ||
        r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return; /* the subscribe confirmation, or the connection going */
    const char *key = r->element[2]->str;
    size_t len = (size_t)r->element[2]->len;
    if (strcmp(r->element[1]->str, t->rchannel) == 0) {
        /* "<owner>:<0|1>:<key>": whose release, whether it stored. */
        size_t olen = strlen(t->owner);
        if (t->rel_cb == NULL || len < 4)
            return;
        const char *sp = memchr(key, ':', len);
        if (sp == NULL || (size_t)(sp - key) + 3 > len || sp[2] != ':')
            return;
        if ((size_t)(sp - key) == olen && memcmp(key, t->owner, olen) == 0)
            return; /* our own */
        int stored = sp[1] == '1';
        size_t skip = (size_t)(sp - key) + 3;
        t->rel_cb(key + skip, len - skip, stored, t->rel_arg);
    } else if (strcmp(r->element[1]->str, t->nchannel) == 0) {
        /* "<value>:<name>" */
        const char *colon = memchr(key, ':', len);
        if (t->note_cb == NULL || colon == NULL || colon == key)
            return;
        uint64_t v = 0;
        for (const char *p = key; p < colon; p++) {
            if (*p < '0' || *p > '9' || v > UINT64_MAX / 10 - 9)
                return;
            v = v * 10 + (uint64_t)(*p - '0');
        }
        t->note_cb(colon + 1, len - (size_t)(colon + 1 - key), v,
                   t->note_arg);
    } else if (t->sub_cb != NULL) {
        t->sub_cb(key, len, t->sub_arg);
    }
}

static void
on_sub_disconnect(const redisAsyncContext *ac, int status)
{
    struct corral_redis_tier *t = ac->data;

    (void)status;
    if (t == NULL || t->sub_ac != ac)
        return;
    t->sub_ac = NULL; /* hiredis frees it; sub_retry_cb subscribes again */
    schedule_sub_retry(t);
}

static void
on_sub_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        on_sub_disconnect(ac, status);
}

static void
start_sub(struct corral_redis_tier *t)
{
    redisAsyncContext *ac = t->unix_path ? redisAsyncConnectUnix(t->unix_path)
                                         : redisAsyncConnect(t->host, t->port);

    if (ac == NULL || ac->err) {
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_sub_retry(t);
        return;
    }
    ac->data = t;
    t->sub_ac = ac;
    redisLibeventAttach(ac, t->base);
    redisAsyncSetConnectCallback(ac, on_sub_connect);
    redisAsyncSetDisconnectCallback(ac, on_sub_disconnect);
    if (t->password != NULL)
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", t->password);
    redisAsyncCommand(ac, on_message, t, "SUBSCRIBE %s %s %s", t->channel,
                      t->rchannel, t->nchannel);
}

static void
stop_sub(struct corral_redis_tier *t)
{
    redisAsyncContext *ac = t->sub_ac;

    if (ac == NULL)
        return;
    t->sub_ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

/* The subscriber connection runs while anyone listens. */
static void
sub_update(struct corral_redis_tier *t)
{
    if (t->sub_cb == NULL && t->rel_cb == NULL && t->note_cb == NULL)
        stop_sub(t);
    else if (t->sub_ac == NULL)
        start_sub(t);
}

static void
redis_subscribe(void *ctx, corral_tier_invalidate_cb *cb, void *arg)
{
    struct corral_redis_tier *t = ctx;

    t->sub_cb = cb;
    t->sub_arg = arg;
    sub_update(t);
}

static void
redis_watch_released(void *ctx, corral_tier_released_cb *cb, void *arg)
{
    struct corral_redis_tier *t = ctx;

    t->rel_cb = cb;
    t->rel_arg = arg;
    sub_update(t);
}

/* ---- gets ---- */

static void
req_free(struct req *r)
{
    TAILQ_REMOVE(&r->t->reqs, r, link);
    event_free(r->timer);
    free(r);
}

static void
answer(struct req *r, struct corral_value *v, int error)
{
    r->done = true;
    event_del(r->timer);
    if (r->admit_cb != NULL)
        r->admit_cb(error, error >= 0 || error == -EBUSY ? r->admit_ms : 0,
                    r->arg);
    else if (r->lease_cb != NULL)
        r->lease_cb(error, r->arg); /* error: 1 won, 0 lost, -errno */
    else
        r->cb(v, error, r->arg);
}

static void
req_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct req *r = arg;
    struct corral_redis_tier *t = r->t;

    (void)fd;
    (void)what;
    if (!r->sent) { /* Redis was down: a miss, answered off the stack */
        t->stats.misses += r->lease_cb == NULL && r->admit_cb == NULL;
        answer(r, NULL, -ENOTCONN);
        req_free(r);
        return;
    }
    t->stats.timeouts++;
    if (++t->timeouts_in_row >= STUCK_AFTER && t->ac != NULL)
        event_active(t->reset_ev, EV_TIMEOUT, 1);
    answer(r, NULL, -ETIMEDOUT); /* hiredis still owns r */
}

static void
get_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct req *r = privdata;
    struct corral_redis_tier *t = r->t;
    redisReply *rep = reply;
    struct corral_value *v = NULL;

    (void)ac;
    if (r->done) {
        req_free(r);
        return;
    }
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        t->stats.errors++;
        answer(r, NULL, -EIO);
    } else if (rep->type != REDIS_REPLY_STRING) {
        t->timeouts_in_row = 0;
        t->stats.misses++;
        answer(r, NULL, -ENOENT);
    } else {
        t->timeouts_in_row = 0;
        int rc = corral_l2_decode(rep->str, (size_t)rep->len, r->key,
                                  r->keylen, &v);
        if (rc == CORRAL_L2_OK) {
            t->stats.hits++;
            answer(r, v, 0);
        } else {
            t->stats.bad_values++;
            t->stats.misses++;
            answer(r, NULL, -ENOENT);
        }
    }
    req_free(r);
}

/* prefix + key, in buf when it fits, else allocated (caller frees if
 * != buf). */
static char *
full_key(const struct corral_redis_tier *t, const void *key, size_t keylen,
         char *buf, size_t cap, size_t *len)
{
    size_t plen = strlen(t->prefix);
    char *k = plen + keylen <= cap ? buf : xmalloc(plen + keylen);

    memcpy(k, t->prefix, plen);
    memcpy(k + plen, key, keylen);
    *len = plen + keylen;
    return k;
}

/* A request for key, listed, with its timer not yet armed. */
static struct req *
req_new(struct corral_redis_tier *t, const void *key, size_t keylen,
        void *arg)
{
    struct req *r = xcalloc(1, sizeof(*r) + keylen);

    r->t = t;
    r->arg = arg;
    r->keylen = keylen;
    memcpy(r->key, key, keylen);
    r->timer = evtimer_new(t->base, req_timer_cb, r);
    if (r->timer == NULL)
        abort(); /* the policy of xalloc.h */
    TAILQ_INSERT_TAIL(&t->reqs, r, link);
    return r;
}

/* Sent: the reply has timeout_ms. Not sent (Redis down): answered on the
 * next loop turn. */
static void
req_arm(struct req *r)
{
    struct timeval tv = corral_ms_to_tv(r->sent ? r->t->timeout_ms : 0);

    evtimer_add(r->timer, &tv);
}

static void
redis_get(void *ctx, const void *key, size_t keylen, corral_tier_get_cb *cb,
          void *arg)
{
    struct corral_redis_tier *t = ctx;
    struct req *r = req_new(t, key, keylen, arg);
    char buf[512], *k;
    size_t klen;

    r->cb = cb;
    if (t->ac != NULL && t->connected) {
        k = full_key(t, key, keylen, buf, sizeof(buf), &klen);
        r->sent = redisAsyncCommand(t->ac, get_reply, r, "GET %b", k, klen) ==
                  REDIS_OK;
        if (k != buf)
            free(k);
    }
    req_arm(r);
}

static void
count_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis_tier *t = privdata;
    redisReply *rep = reply;

    (void)ac;
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
        t->stats.errors++;
}

static void
redis_set(void *ctx, const struct corral_value *v, uint64_t ttl_ms)
{
    struct corral_redis_tier *t = ctx;
    char buf[512], *k, *blob;
    size_t klen, n;

    if (t->ac == NULL || !t->connected || ttl_ms == 0) {
        t->stats.errors += t->ac == NULL || !t->connected;
        return;
    }
    n = corral_l2_size(v);
    blob = xmalloc(n);
    corral_l2_encode(v, blob);
    k = full_key(t, corral_value_key(v), corral_value_keylen(v), buf,
                 sizeof(buf), &klen);
    if (redisAsyncCommand(t->ac, count_reply, t, "SET %b %b PX %llu", k, klen,
                          blob, n, (unsigned long long)ttl_ms) != REDIS_OK)
        t->stats.errors++;
    if (k != buf)
        free(k);
    free(blob);
}

static void
redis_del(void *ctx, const void *key, size_t keylen)
{
    struct corral_redis_tier *t = ctx;
    char buf[512], *k;
    size_t klen;

    if (t->ac == NULL || !t->connected) {
        t->stats.errors++;
        return;
    }
    k = full_key(t, key, keylen, buf, sizeof(buf), &klen);
    /* Every instance (this one too) hears of it and drops its L1 copy. */
    if (redisAsyncCommand(t->ac, count_reply, t, "DEL %b", k, klen) !=
            REDIS_OK ||
        redisAsyncCommand(t->ac, count_reply, t, "PUBLISH %s %b", t->channel,
                          key, keylen) != REDIS_OK)
        t->stats.errors++;
    if (k != buf)
        free(k);
}

static void
lease_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct req *r = privdata;
    struct corral_redis_tier *t = r->t;
    redisReply *rep = reply;

    (void)ac;
    if (r->done) {
        req_free(r);
        return;
    }
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        t->stats.errors++;
        answer(r, NULL, -EIO);
    } else {
        t->timeouts_in_row = 0;
        answer(r, NULL, rep->type == REDIS_REPLY_STATUS ? 1 : 0);
    }
    req_free(r);
}

/* SET <prefix>lease:<key> <owner> NX PX ttl: one holder fleet-wide. */
static void
redis_lease(void *ctx, const void *key, size_t keylen, uint64_t ttl_ms,
            corral_tier_lease_cb *cb, void *arg)
{
    struct corral_redis_tier *t = ctx;
    struct req *r = req_new(t, key, keylen, arg);

    r->lease_cb = cb;
    if (t->ac != NULL && t->connected)
        r->sent = redisAsyncCommand(t->ac, lease_reply, r,
                                    "SET %blease:%b %s NX PX %llu", t->prefix,
                                    strlen(t->prefix), key, keylen, t->owner,
                                    (unsigned long long)ttl_ms) == REDIS_OK;
    req_arm(r);
}

/* Deletes the lease only if it is still ours (it may have run out and been
 * taken by another instance), then announces the key. */
static const char release_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

static void
redis_release(void *ctx, const void *key, size_t keylen, int ok)
{
    struct corral_redis_tier *t = ctx;
    size_t plen = strlen(t->prefix);
    char *lk;

    if (t->ac == NULL || !t->connected)
        return; /* the lease runs out by itself */
    lk = xmalloc(plen + 6 + keylen);
    memcpy(lk, t->prefix, plen);
    memcpy(lk + plen, "lease:", 6);
    memcpy(lk + plen + 6, key, keylen);
    /* The others read L2 either way (a miss means take over); a new value
     * also means their copies are older. */
    if (redisAsyncCommand(t->ac, count_reply, t, "EVAL %s 1 %b %s",
                          release_script, lk, plen + 6 + keylen,
                          t->owner) != REDIS_OK ||
        redisAsyncCommand(t->ac, count_reply, t, "PUBLISH %s %s:%d:%b",
                          t->rchannel, t->owner, ok ? 1 : 0, key,
                          keylen) != REDIS_OK)
        t->stats.errors++;
    free(lk);
}

/* ---- upstream budgets ---- */

/* One call to the upstream named KEYS: refused while <name>'s pause key
 * lives; else granted when the window's sorted set (one member per call,
 * scored by Redis's own clock in ms) holds fewer than count calls younger
 * than window_ms. Answers {1, 0} granted, {0, ms} full until ms from now,
 * {-1, ms} paused for ms more. */
static const char admit_script[] =
    "local p = redis.call('pttl', KEYS[2]) "
    "if p > 0 then return {-1, p} end "
    "local n = tonumber(ARGV[1]) "
    "if n == 0 then return {1, 0} end "
    "local w = tonumber(ARGV[2]) "
    "local t = redis.call('time') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "redis.call('zremrangebyscore', KEYS[1], '-inf', now - w) "
    "if redis.call('zcard', KEYS[1]) < n then "
    "redis.call('zadd', KEYS[1], now, ARGV[3]) "
    "redis.call('pexpire', KEYS[1], w) "
    "return {1, 0} end "
    "local first = redis.call('zrange', KEYS[1], 0, 0, 'withscores') "
    "return {0, tonumber(first[2]) + w - now}";

static void
admit_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct req *r = privdata;
    struct corral_redis_tier *t = r->t;
    redisReply *rep = reply;

    (void)ac;
    if (r->done) {
        req_free(r);
        return;
    }
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER ||
        rep->element[1]->type != REDIS_REPLY_INTEGER) {
        t->stats.errors++;
        answer(r, NULL, -EIO);
    } else {
        t->timeouts_in_row = 0;
        long long verdict = rep->element[0]->integer;
        long long ms = rep->element[1]->integer;
        r->admit_ms = ms > 0 ? (uint64_t)ms : 1;
        answer(r, NULL, verdict > 0 ? 1 : verdict == 0 ? 0 : -EBUSY);
    }
    req_free(r);
}

void
corral_redis_tier_admit(struct corral_redis_tier *t, const char *name,
                        unsigned count, uint64_t window_ms,
                        corral_redis_admit_cb *cb, void *arg)
{
    size_t nlen = strlen(name);
    struct req *r = req_new(t, name, nlen, arg);
    char member[64];

    r->admit_cb = cb;
    snprintf(member, sizeof(member), "%s-%llu", t->owner,
             (unsigned long long)++t->admits);
    if (t->ac != NULL && t->connected)
        r->sent = redisAsyncCommand(
                      t->ac, admit_reply, r, "EVAL %s 2 %srate:%b %spause:%b "
                      "%u %llu %s", admit_script, t->prefix, name, nlen,
                      t->prefix, name, nlen, count,
                      (unsigned long long)window_ms, member) == REDIS_OK;
    req_arm(r);
}

void
corral_redis_tier_pause(struct corral_redis_tier *t, const char *name,
                        uint64_t ms)
{
    if (t->ac == NULL || !t->connected || ms == 0) {
        t->stats.errors += ms > 0;
        return;
    }
    if (redisAsyncCommand(t->ac, count_reply, t, "SET %spause:%s 1 PX %llu",
                          t->prefix, name, (unsigned long long)ms) != REDIS_OK)
        t->stats.errors++;
}

/* ---- notes: small numbers the fleet shares ---- */

/* Keeps the larger value, and tells every instance. */
static const char note_script[] =
    "local v = tonumber(redis.call('get', KEYS[1]) or '0') "
    "local n = tonumber(ARGV[1]) "
    "if n > v then redis.call('set', KEYS[1], ARGV[1]) else n = v end "
    "redis.call('publish', KEYS[2], string.format('%d', n) .. ':' .. ARGV[2]) "
    "return n";

void
corral_redis_tier_note(struct corral_redis_tier *t, const char *name,
                       uint64_t value)
{
    if (t->ac == NULL || !t->connected) {
        t->stats.errors++;
        return;
    }
    if (redisAsyncCommand(t->ac, count_reply, t, "EVAL %s 2 %snote:%s %s %llu %s",
                          note_script, t->prefix, name, t->nchannel,
                          (unsigned long long)value, name) != REDIS_OK)
        t->stats.errors++;
}

struct note_read {
    struct corral_redis_tier *t;
    char name[];
};

static void
note_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct note_read *nr = privdata;
    redisReply *rep = reply;
    (void)ac;
    if (rep != NULL && rep->type == REDIS_REPLY_STRING && nr->t->note_cb) {
        char *end;
        unsigned long long v = strtoull(rep->str, &end, 10);
        if (end != rep->str && *end == '\0')
            nr->t->note_cb(nr->name, strlen(nr->name), v, nr->t->note_arg);
    }
    free(nr);
}

static void
read_notes(struct corral_redis_tier *t)
{
    for (size_t i = 0; i < t->n_notes; i++) {
        size_t n = strlen(t->note_names[i]);
        struct note_read *nr = xmalloc(sizeof(*nr) + n + 1);
        nr->t = t;
        memcpy(nr->name, t->note_names[i], n + 1);
        if (redisAsyncCommand(t->ac, note_reply, nr, "GET %snote:%s",
                              t->prefix, nr->name) != REDIS_OK)
            free(nr);
    }
}

void
corral_redis_tier_watch_notes(struct corral_redis_tier *t,
                              const char *const *names, size_t n,
                              corral_redis_note_cb *cb, void *arg)
{
    for (size_t i = 0; i < t->n_notes; i++)
        free(t->note_names[i]);
    free(t->note_names);
    t->note_names = n ? xcalloc(n, sizeof(*t->note_names)) : NULL;
    t->n_notes = n;
    for (size_t i = 0; i < n; i++)
        t->note_names[i] = xstrndup(names[i], strlen(names[i]));
    t->note_cb = cb;
    t->note_arg = arg;
    sub_update(t);
    if (cb != NULL && t->ac != NULL && t->connected)
        read_notes(t);
}

const struct corral_tier corral_redis_tier_ops = {
    .name = "redis",
    .get = redis_get,
    .set = redis_set,
    .del = redis_del,
    .subscribe = redis_subscribe,
    .lease = redis_lease,
    .release = redis_release,
    .watch_released = redis_watch_released,
};

/* ---- lifecycle ---- */

struct corral_redis_tier *
corral_redis_tier_new(struct event_base *base,
                      const struct corral_redis_options *o, char *err,
                      size_t errlen)
{
    struct corral_redis_tier *t;

    if (base == NULL || o == NULL ||
        (o->unix_path == NULL && (o->host == NULL || o->port == 0))) {
        snprintf(err, errlen, "redis: a host and port, or a unix path");
        return NULL;
    }
    t = xcalloc(1, sizeof(*t));
    t->base = base;
    t->host = o->host ? strdup(o->host) : NULL;
    t->unix_path = o->unix_path ? strdup(o->unix_path) : NULL;
    t->prefix = strdup(o->prefix ? o->prefix : "");
    if (t->prefix && asprintf(&t->channel, "%sinvalidate", t->prefix) < 0)
        t->channel = NULL;
    if (t->prefix && asprintf(&t->rchannel, "%sreleased", t->prefix) < 0)
        t->rchannel = NULL;
    if (t->prefix && asprintf(&t->nchannel, "%snotes", t->prefix) < 0)
        t->nchannel = NULL;
    uint64_t nonce[2] = {0, 0};
    if (getrandom(nonce, sizeof(nonce), 0) != sizeof(nonce))
        nonce[0] = (uint64_t)(uintptr_t)t ^ corral_now_ms();
    snprintf(t->owner, sizeof(t->owner), "%d-%016llx%08llx", (int)getpid(),
             (unsigned long long)nonce[0],
             (unsigned long long)(nonce[1] & 0xffffffff));
    t->password = o->password ? strdup(o->password) : NULL;
    t->port = o->port;
    t->db = o->db;
    t->timeout_ms = o->timeout_ms ? o->timeout_ms : 50;
    t->backoff_ms = BACKOFF_MIN_MS;
    if (o->unix_path)
        snprintf(t->name, sizeof(t->name), "unix:%s", o->unix_path);
    else
        snprintf(t->name, sizeof(t->name), "%s:%u", o->host,
                 (unsigned)o->port);
    TAILQ_INIT(&t->reqs);
    t->retry_ev = evtimer_new(base, retry_cb, t);
    t->reset_ev = event_new(base, -1, 0, reset_cb, t);
    t->sub_retry_ev = evtimer_new(base, sub_retry_cb, t);
    if ((o->host && !t->host) || (o->unix_path && !t->unix_path) ||
        !t->prefix || !t->channel || !t->rchannel || (o->password && !t->password) ||
        !t->retry_ev || !t->sub_retry_ev ||
        !t->reset_ev) {
        snprintf(err, errlen, "redis: out of memory");
        corral_redis_tier_free(t);
        return NULL;
    }
    start_connect(t);
    return t;
}

void
corral_redis_tier_free(struct corral_redis_tier *t)
{
    struct req *r;

    if (t == NULL)
        return;
    TAILQ_FOREACH(r, &t->reqs, link)
        if (!r->done)
            answer(r, NULL, -ECANCELED); /* cannot free r: no free here */
    drop(t, "closing"); /* hiredis hands back and we free the sent ones */
    stop_sub(t);
    while ((r = TAILQ_FIRST(&t->reqs)) != NULL)
        req_free(r);
    if (t->retry_ev)
        event_free(t->retry_ev);
    if (t->reset_ev)
        event_free(t->reset_ev);
    if (t->sub_retry_ev)
        event_free(t->sub_retry_ev);
    free(t->host);
    free(t->unix_path);
    free(t->prefix);
    free(t->channel);
    free(t->rchannel);
    free(t->nchannel);
    for (size_t i = 0; i < t->n_notes; i++)
        free(t->note_names[i]);
    free(t->note_names);
    if (t->password)
        explicit_bzero(t->password, strlen(t->password));
    free(t->password);
    free(t);
}

void
corral_redis_tier_stats(const struct corral_redis_tier *t,
                        struct corral_redis_stats *out)
{
    *out = t->stats;
}
