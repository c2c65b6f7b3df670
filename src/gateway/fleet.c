/* fleet.c — the gateway's fleet state in Redis (see fleet.h and
 * doc/fleet.md). Admissions, bumps and probes are ops listed until the
 * connection answers them; freeing the fleet answers them -ECANCELED and
 * orphans them (op->f = NULL), so the connection's later callback only
 * frees them.
 *
 * Names: an upstream's rate window, pause and breaker share a hash tag
 * made from its name (corral_redis_tagged_name()), one slot per upstream
 * on a cluster; the generations hash has the fleet's one tag. No script
 * touches names of two tags: a resync is one script per upstream beside
 * the generations' own. */
#include "fleet.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "corral/redis.h"
#include "timeutil.h"
#include "xalloc.h"

#define RETRY_MS 300 /* a resync or write-back that failed, again */
/* How often the fleet state is read and written back anyway: Redis can
 * lose it (FLUSHALL) without dropping a connection, so no resync would
 * follow. */
#define SYNC_EVERY_MS 2000
#define SYNC_MAX 100 /* routes per generations sync script */

enum op_kind { OP_ADMIT, OP_BUMP, OP_SYNC_GENS, OP_SYNC_UPSTREAM, OP_PROBE };

struct op {
    TAILQ_ENTRY(op) link;
    struct corral_fleet *f; /* NULL: orphaned */
    enum op_kind kind;
    bool listed;
    corral_fleet_admit_cb *admit_cb;
    corral_fleet_bump_cb *bump_cb;
    corral_fleet_probe_cb *probe_cb;
    void *arg;
    char member[80];       /* OP_ADMIT */
    size_t path0, n_paths; /* OP_SYNC_GENS: the batch it covers */
    size_t up;             /* OP_SYNC_UPSTREAM: which */
    char name[];           /* OP_BUMP: the path */
};
TAILQ_HEAD(op_list, op);

struct corral_fleet {
    struct event_base *base;
    struct corral_redis *conn;
    char *prefix;
    char *channel, *gens_key;
    char id[64];
    uint64_t admits; /* members of a window: unique per instance */
    const struct corral_fleet_events *ev;
    void *arg;
    char **paths, **upstreams;
    size_t n_paths, n_upstreams;
    bool synced;        /* a resync has completed */
    bool sync_pending;  /* subscribed again, or a write-back owed */
    unsigned sync_left; /* sync scripts in flight */
    bool sync_failed;
    struct corral_redis_script *admit, *bump, *sync_gens, *sync_upstream, *trip,
        *probe;
    struct event *retry_ev;
    struct event *every_ev; /* SYNC_EVERY_MS */
    struct op_list ops;
};

/* One call to the upstream named by KEYS[1]: refused while KEYS[2] (its
 * pause) lives; else granted when the window (one member per call, scored
 * by Redis's own clock in ms) holds fewer than count calls younger than
 * window_ms. {1, 0} granted, {0, ms} full until ms from now, {-1, ms}
 * paused for ms more. */
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

/* KEYS: the generations hash. ARGV: path, here, channel. The generation
 * above both Redis's and here, told to every instance. */
static const char bump_script[] =
    "local v = tonumber(redis.call('hget', KEYS[1], ARGV[1]) or '0') "
    "local n = math.max(v, tonumber(ARGV[2])) + 1 "
    "redis.call('hset', KEYS[1], ARGV[1], n) "
    "redis.call('publish', ARGV[3], 'g ' .. n .. ' ' .. ARGV[1]) "
    "return n";

/* KEYS: the generations hash. ARGV: channel, the number of paths, then
 * path and here for each. Redis keeps the larger of each generation
 * (telling every instance when here was larger: a flush undone); answers
 * the generations. */
static const char sync_gens_script[] =
    "local n = tonumber(ARGV[2]) "
    "local gens = {} "
    "for i = 1, n do "
    "local p, h = ARGV[1 + 2 * i], tonumber(ARGV[2 + 2 * i]) "
    "local v = tonumber(redis.call('hget', KEYS[1], p) or '0') "
    "if h > v then redis.call('hset', KEYS[1], p, h) "
    "redis.call('publish', ARGV[1], 'g ' .. h .. ' ' .. p) v = h end "
    "gens[i] = v end "
    "return gens";

/* KEYS: an upstream's pause, its breaker. {the pause's pttl, the
 * breaker's pttl, its step}. */
static const char sync_upstream_script[] =
    "local b = redis.call('pttl', KEYS[2]) "
    "local step = 0 "
    "if b > 0 then step = tonumber(redis.call('get', KEYS[2])) or 0 end "
    "return {redis.call('pttl', KEYS[1]), b, step}";

/* KEYS: an upstream's breaker. ARGV: step, nx, channel, message. Opens
 * the fleet's breaker (no probe for step ms) and tells every instance;
 * with nx only if it is not open already. 1 when it did. */
static const char trip_script[] =
    "if ARGV[2] == '1' then "
    "if not redis.call('set', KEYS[1], ARGV[1], 'nx', 'px', ARGV[1]) then "
    "return 0 end "
    "else redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[1]) end "
    "redis.call('publish', ARGV[3], ARGV[4]) "
    "return 1";

/* KEYS: an upstream's breaker. ARGV: step, hold. The fleet's one probe:
 * granted {1, 0, step} when no step runs and no probe is out (the key
 * holds the probe for hold ms), else {0, ms left, the fleet's step}. */
static const char probe_script[] =
    "local p = redis.call('pttl', KEYS[1]) "
    "if p > 0 then "
    "return {0, p, tonumber(redis.call('get', KEYS[1])) or 0} end "
    "redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) "
    "return {1, 0, tonumber(ARGV[1])}";

/* ---- names ---- */

/* An upstream's name of one kind ("rate:", "pause:", "breaker:"). */
static void
upstream_key(const struct corral_fleet *f, const char *kind, const char *name,
             char *key, size_t cap)
{
    size_t n = corral_redis_tagged_name(key, cap - 1, f->prefix, kind, name,
                                        strlen(name));
    key[n < cap - 1 ? n : cap - 1] = '\0';
}

/* ---- ops ---- */

static struct op *
op_new(struct corral_fleet *f, enum op_kind kind, const char *name, void *arg)
{
    size_t n = name ? strlen(name) : 0;
    struct op *op = xcalloc(1, sizeof(*op) + n + 1);
    op->f = f;
    op->kind = kind;
    op->arg = arg;
    if (n)
        memcpy(op->name, name, n);
    op->listed = true;
    TAILQ_INSERT_TAIL(&f->ops, op, link);
    return op;
}

static struct corral_fleet *
op_done(struct op *op)
{
    struct corral_fleet *f = op->f;
    if (f != NULL && op->listed) {
        TAILQ_REMOVE(&f->ops, op, link);
        op->listed = false;
    }
    return f;
}

/* ---- admission ---- */

static void
admit_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_fleet *f = op_done(op);
    if (f == NULL) {
        free(op);
        return;
    }
    if (error != 0 || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER ||
        rep->element[1]->type != REDIS_REPLY_INTEGER) {
        op->admit_cb(error ? error : -EIO, 0, NULL, op->arg);
    } else {
        long long verdict = rep->element[0]->integer;
        long long ms = rep->element[1]->integer;
        op->admit_cb(verdict > 0    ? 1
                     : verdict == 0 ? 0
                                    : -EBUSY,
                     ms > 0 ? (uint64_t)ms : 1, op->member, op->arg);
    }
    free(op);
}

void
corral_fleet_admit(struct corral_fleet *f, const char *name, unsigned count,
                   uint64_t window_ms, corral_fleet_admit_cb *cb, void *arg)
{
    struct op *op = op_new(f, OP_ADMIT, NULL, arg);
    op->admit_cb = cb;
    snprintf(op->member, sizeof(op->member), "%s-%" PRIu64, f->id, ++f->admits);
    char rate[512], pause[512], n[16], w[24];
    upstream_key(f, "rate:", name, rate, sizeof(rate));
    upstream_key(f, "pause:", name, pause, sizeof(pause));
    snprintf(n, sizeof(n), "%u", count);
    snprintf(w, sizeof(w), "%" PRIu64, window_ms);
    const char *argv[5] = {rate, pause, n, w, op->member};
    corral_redis_eval(f->conn, f->admit, admit_reply, op, 2, 5, argv, NULL);
}

void
corral_fleet_unadmit(struct corral_fleet *f, const char *name,
                     const char *member)
{
    char rate[512];
    upstream_key(f, "rate:", name, rate, sizeof(rate));
    const char *argv[3] = {"ZREM", rate, member};
    corral_redis_command(f->conn, NULL, NULL, 3, argv, NULL);
}

/* ---- pauses ---- */

void
corral_fleet_pause(struct corral_fleet *f, const char *name, uint64_t ms)
{
    char key[512], msg[512], px[24];
    upstream_key(f, "pause:", name, key, sizeof(key));
    snprintf(px, sizeof(px), "%" PRIu64, ms);
    snprintf(msg, sizeof(msg), "z %" PRIu64 " %s", ms, name);
    const char *set[5] = {"SET", key, "1", "PX", px};
    const char *pub[3] = {"PUBLISH", f->channel, msg};
    corral_redis_command(f->conn, NULL, NULL, 5, set, NULL);
    corral_redis_command(f->conn, NULL, NULL, 3, pub, NULL);
}

/* ---- breakers ---- */

static void
breaker_key(const struct corral_fleet *f, const char *name, char *key,
            size_t cap)
{
    upstream_key(f, "breaker:", name, key, cap);
}

void
corral_fleet_breaker_open(struct corral_fleet *f, const char *name,
                          uint64_t step_ms, bool nx)
{
    char key[512], msg[512], px[24];
    breaker_key(f, name, key, sizeof(key));
    snprintf(px, sizeof(px), "%" PRIu64, step_ms);
    snprintf(msg, sizeof(msg), "b %" PRIu64 " %s", step_ms, name);
    const char *argv[5] = {key, px, nx ? "1" : "0", f->channel, msg};
    corral_redis_eval(f->conn, f->trip, NULL, NULL, 1, 5, argv, NULL);
}

void
corral_fleet_breaker_close(struct corral_fleet *f, const char *name)
{
    char key[512], msg[512];
    breaker_key(f, name, key, sizeof(key));
    snprintf(msg, sizeof(msg), "b 0 %s", name);
    const char *del[2] = {"DEL", key};
    const char *pub[3] = {"PUBLISH", f->channel, msg};
    corral_redis_command(f->conn, NULL, NULL, 2, del, NULL);
    corral_redis_command(f->conn, NULL, NULL, 3, pub, NULL);
}

static void
probe_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_fleet *f = op_done(op);
    if (f == NULL) {
        free(op);
        return;
    }
    if (error != 0 || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER ||
        rep->element[1]->type != REDIS_REPLY_INTEGER ||
        rep->element[2]->type != REDIS_REPLY_INTEGER) {
        op->probe_cb(error ? error : -EIO, 0, 0, op->arg);
    } else {
        long long ms = rep->element[1]->integer;
        long long step = rep->element[2]->integer;
        op->probe_cb(rep->element[0]->integer > 0 ? 1 : 0,
                     ms > 0 ? (uint64_t)ms : 1, step > 0 ? (uint64_t)step : 0,
                     op->arg);
    }
    free(op);
}

void
corral_fleet_probe(struct corral_fleet *f, const char *name, uint64_t step_ms,
                   uint64_t hold_ms, corral_fleet_probe_cb *cb, void *arg)
{
    struct op *op = op_new(f, OP_PROBE, NULL, arg);
    op->probe_cb = cb;
    char key[512], step[24], hold[24];
    breaker_key(f, name, key, sizeof(key));
    snprintf(step, sizeof(step), "%" PRIu64, step_ms);
    snprintf(hold, sizeof(hold), "%" PRIu64, hold_ms);
    const char *argv[3] = {key, step, hold};
    corral_redis_eval(f->conn, f->probe, probe_reply, op, 1, 3, argv, NULL);
}

/* ---- generations ---- */

static void
bump_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_fleet *f = op_done(op);
    if (f == NULL) {
        free(op);
        return;
    }
    if (error == 0 && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0) {
        op->bump_cb(0, (uint64_t)rep->integer, op->arg);
    } else {
        /* The caller raises it here; the next resync writes it back. */
        f->sync_pending = true;
        struct timeval tv = corral_ms_to_tv(RETRY_MS);
        evtimer_add(f->retry_ev, &tv);
        op->bump_cb(error ? error : -EIO, 0, op->arg);
    }
    free(op);
}

void
corral_fleet_bump(struct corral_fleet *f, const char *path, uint64_t here,
                  corral_fleet_bump_cb *cb, void *arg)
{
    struct op *op = op_new(f, OP_BUMP, path, arg);
    op->bump_cb = cb;
    char h[24];
    snprintf(h, sizeof(h), "%" PRIu64, here);
    const char *argv[4] = {f->gens_key, path, h, f->channel};
    corral_redis_eval(f->conn, f->bump, bump_reply, op, 1, 4, argv, NULL);
}

/* ---- resync ---- */

static void start_sync(struct corral_fleet *f);

/* The generations of one batch of paths. False for a reply of another
 * shape. */
static bool
read_gens(struct corral_fleet *f, const struct op *b, const redisReply *g)
{
    if (g->type != REDIS_REPLY_ARRAY || b->path0 + b->n_paths > f->n_paths)
        return false;
    for (size_t i = 0; i < g->elements && i < b->n_paths; i++)
        if (g->element[i]->type == REDIS_REPLY_INTEGER &&
            g->element[i]->integer > 0 && f->ev->generation)
            f->ev->generation(f->paths[b->path0 + i],
                              (uint64_t)g->element[i]->integer, f->arg);
    return true;
}

/* One upstream's pause and breaker. False for a reply of another shape. */
static bool
read_upstream(struct corral_fleet *f, const struct op *b, const redisReply *u)
{
    if (u->type != REDIS_REPLY_ARRAY || u->elements != 3 ||
        b->up >= f->n_upstreams)
        return false;
    for (size_t i = 0; i < 3; i++)
        if (u->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
    const char *name = f->upstreams[b->up];
    long long pause = u->element[0]->integer, open = u->element[1]->integer;
    long long step = u->element[2]->integer;
    if (pause > 0 && f->ev->paused)
        f->ev->paused(name, (uint64_t)pause, f->arg);
    /* Only an open one: a close missed is heard by the next probe, which
     * finds no step running and goes. */
    if (open > 0 && step > 0 && f->ev->breaker)
        f->ev->breaker(name, (uint64_t)open, (uint64_t)step, f->arg);
    return true;
}

static void
sync_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_fleet *f = op_done(op);
    struct op b = *op;
    free(op);
    if (f == NULL)
        return;
    f->sync_left--;
    if (error != 0 || !(b.kind == OP_SYNC_GENS ? read_gens(f, &b, rep)
                                               : read_upstream(f, &b, rep)))
        f->sync_failed = true;
    if (f->sync_left > 0)
        return;
    if (f->sync_failed) {
        struct timeval tv = corral_ms_to_tv(RETRY_MS);
        evtimer_add(f->retry_ev, &tv);
        return;
    }
    f->sync_pending = false;
    bool first = !f->synced;
    f->synced = true;
    if (first && f->ev->synced)
        f->ev->synced(f->arg);
}

/* Writes SYNC_MAX of this instance's generations back and reads Redis's. */
static void
sync_gens(struct corral_fleet *f, size_t path0, size_t n_paths)
{
    /* args: channel, n, path and here for each */
    size_t argc = 1 + 2 + 2 * n_paths;
    const char **argv = xcalloc(argc, sizeof(*argv));
    char **owned = xcalloc(n_paths + 1, sizeof(*owned));
    size_t o = 0, a = 0;
    argv[a++] = f->gens_key;
    argv[a++] = f->channel;
    if (asprintf(&owned[o], "%zu", n_paths) < 0)
        abort();
    argv[a++] = owned[o++];
    for (size_t i = 0; i < n_paths; i++) {
        const char *path = f->paths[path0 + i];
        argv[a++] = path;
        uint64_t here = f->ev->current ? f->ev->current(path, f->arg) : 0;
        if (asprintf(&owned[o], "%" PRIu64, here) < 0)
            abort();
        argv[a++] = owned[o++];
    }
    struct op *op = op_new(f, OP_SYNC_GENS, NULL, NULL);
    op->path0 = path0;
    op->n_paths = n_paths;
    f->sync_left++;
    corral_redis_eval(f->conn, f->sync_gens, sync_reply, op, 1, (int)a, argv,
                      NULL);
    for (size_t i = 0; i < o; i++)
        free(owned[i]);
    free(owned);
    free(argv);
}

/* Reads one upstream's pause and breaker. */
static void
sync_upstream(struct corral_fleet *f, size_t up)
{
    char pause[512], breaker[512];
    upstream_key(f, "pause:", f->upstreams[up], pause, sizeof(pause));
    breaker_key(f, f->upstreams[up], breaker, sizeof(breaker));
    const char *argv[2] = {pause, breaker};
    struct op *op = op_new(f, OP_SYNC_UPSTREAM, NULL, NULL);
    op->up = up;
    f->sync_left++;
    corral_redis_eval(f->conn, f->sync_upstream, sync_reply, op, 2, 2, argv,
                      NULL);
}

/* Writes this instance's generations back and reads Redis's, SYNC_MAX per
 * script (one at least, so a resync always ends in a reply), and reads
 * every upstream's pause and breaker, one script each. */
static void
start_sync(struct corral_fleet *f)
{
    if (f->sync_left > 0)
        return;
    f->sync_failed = false;
    size_t path0 = 0;
    do {
        size_t n =
            f->n_paths - path0 < SYNC_MAX ? f->n_paths - path0 : SYNC_MAX;
        sync_gens(f, path0, n);
        path0 += n;
    } while (path0 < f->n_paths);
    for (size_t i = 0; i < f->n_upstreams; i++)
        sync_upstream(f, i);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fleet *f = arg;
    (void)fd;
    (void)what;
    if (f->sync_pending)
        start_sync(f);
}

static void
every_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_fleet *f = arg;
    (void)fd;
    (void)what;
    if (corral_redis_listening(f->conn) && corral_redis_ready(f->conn))
        start_sync(f);
}

/* ---- what the fleet says ---- */

static void
on_message(const char *msg, size_t len, void *arg)
{
    struct corral_fleet *f = arg;
    if (len < 5 || msg[1] != ' ')
        return;
    const char *p = msg + 2, *end = msg + len;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9' && v < UINT64_MAX / 10 - 9)
        v = v * 10 + (uint64_t)(*p++ - '0');
    if (p >= end || *p != ' ' || p == msg + 2 || p + 1 >= end)
        return;
    char name[512];
    size_t n = (size_t)(end - p - 1);
    if (n >= sizeof(name))
        return;
    memcpy(name, p + 1, n);
    name[n] = '\0';
    if (msg[0] == 'g' && f->ev->generation)
        f->ev->generation(name, v, f->arg);
    else if (msg[0] == 'z' && f->ev->paused)
        f->ev->paused(name, v, f->arg);
    else if (msg[0] == 'b' && f->ev->breaker)
        f->ev->breaker(name, v, v, f->arg);
}

static void
on_subscribed(void *arg)
{
    struct corral_fleet *f = arg;
    f->sync_pending = true;
    start_sync(f);
}

static void
on_lost(void *arg)
{
    struct corral_fleet *f = arg;
    f->sync_pending = true;
}

static const struct corral_redis_listener listener = {
    .message = on_message,
    .subscribed = on_subscribed,
    .lost = on_lost,
};

/* ---- lifecycle ---- */

static void
free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static char **
copy_list(const char *const *src, size_t n)
{
    char **list = xcalloc(n + 1, sizeof(*list));
    for (size_t i = 0; i < n; i++)
        list[i] = xstrndup(src[i], strlen(src[i]));
    return list;
}

void
corral_fleet_track(struct corral_fleet *f, const char *const *paths,
                   size_t n_paths, const char *const *upstreams,
                   size_t n_upstreams)
{
    free_list(f->paths, f->n_paths);
    free_list(f->upstreams, f->n_upstreams);
    f->paths = copy_list(paths, n_paths);
    f->n_paths = n_paths;
    f->upstreams = copy_list(upstreams, n_upstreams);
    f->n_upstreams = n_upstreams;
    /* New routes or upstreams: read theirs now. */
    if (f->synced && corral_redis_listening(f->conn)) {
        f->sync_pending = true;
        start_sync(f);
    }
}

bool
corral_fleet_synced(const struct corral_fleet *f)
{
    return f->synced;
}

bool
corral_fleet_struggling(const struct corral_fleet *f)
{
    return corral_redis_struggling(f->conn);
}

struct corral_fleet *
corral_fleet_new(struct event_base *base, struct corral_redis *conn,
                 const char *prefix, unsigned db, const char *id,
                 const struct corral_fleet_events *ev, void *arg)
{
    struct corral_fleet *f = xcalloc(1, sizeof(*f));
    f->base = base;
    f->conn = conn;
    f->prefix = xstrndup(prefix, strlen(prefix));
    if (asprintf(&f->channel, "%sfleet:%u", prefix, db) < 0 ||
        asprintf(&f->gens_key, "%s" CORRAL_FLEET_GENS, prefix) < 0)
        abort(); /* the policy of xalloc.h */
    snprintf(f->id, sizeof(f->id), "%s", id);
    f->ev = ev;
    f->arg = arg;
    TAILQ_INIT(&f->ops);
    f->paths = copy_list(NULL, 0);
    f->upstreams = copy_list(NULL, 0);
    f->retry_ev = evtimer_new(base, retry_cb, f);
    f->every_ev = event_new(base, -1, EV_PERSIST, every_cb, f);
    struct timeval every = corral_ms_to_tv(SYNC_EVERY_MS);
    if (f->retry_ev == NULL || f->every_ev == NULL ||
        event_add(f->every_ev, &every) != 0)
        abort();
    f->admit = corral_redis_script_new(conn, admit_script);
    f->bump = corral_redis_script_new(conn, bump_script);
    f->sync_gens = corral_redis_script_new(conn, sync_gens_script);
    f->sync_upstream = corral_redis_script_new(conn, sync_upstream_script);
    f->trip = corral_redis_script_new(conn, trip_script);
    f->probe = corral_redis_script_new(conn, probe_script);
    if (corral_redis_subscribe(conn, f->channel, &listener, f) != 0)
        abort(); /* a programming error: too many channels */
    return f;
}

void
corral_fleet_free(struct corral_fleet *f)
{
    if (f == NULL)
        return;
    corral_redis_subscribe(f->conn, f->channel, NULL, NULL);
    struct op *op;
    while ((op = TAILQ_FIRST(&f->ops)) != NULL) {
        TAILQ_REMOVE(&f->ops, op, link);
        op->listed = false;
        op->f = NULL;
        if (op->admit_cb)
            op->admit_cb(-ECANCELED, 0, NULL, op->arg);
        if (op->bump_cb)
            op->bump_cb(-ECANCELED, 0, op->arg);
        if (op->probe_cb)
            op->probe_cb(-ECANCELED, 0, 0, op->arg);
    }
    event_free(f->retry_ev);
    event_free(f->every_ev);
    free_list(f->paths, f->n_paths);
    free_list(f->upstreams, f->n_upstreams);
    free(f->prefix);
    free(f->channel);
    free(f->gens_key);
    free(f);
}
