/* redis_tier.c — the second tier in Redis (see corral/redis_tier.h and the
 * design in doc/fleet.md).
 *
 * Every command whose answer matters is a struct op, listed on the tier
 * until the connection answers it. When the tier is freed first, its ops
 * are answered -ECANCELED at once and orphaned (op->t = NULL): the
 * connection's later callback then only frees them. Leases this instance
 * holds are listed too, renewed together every RENEW_MS by one script per
 * slot, and given back with the fill's outcome.
 *
 * A value is read with a plain GETRANGE of at most max_value + 1 bytes, no
 * script: a get, and an acquire's first step while most recent acquires
 * found a fresh value, which is answered at once; only a missing, stale or
 * unusable one costs the acquire script, which reads it again and takes
 * the lease in one step. While most found none (a cold start), acquires
 * go straight to the script: a miss pays one round trip, not two.
 *
 * Names: a key's value and lease (which holds a failed fill's outcome)
 * share the key's hash tag (corral_redis_tagged_name()), so one script
 * may touch both on a cluster; the purge log and its epoch share the
 * fleet's one tag. No script touches names of two tags: a purge is two
 * scripts, the key's and then the log's. While a key's slot is being
 * migrated, Redis refuses a script on several of its names (TRYAGAIN)
 * unless one node holds them all: acquires, purges and renewals then ask
 * for them one at a time. */
#include "corral/redis_tier.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
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

#define LEASE_MS 1000        /* a lease nobody renews dies this soon */
#define RENEW_MS 300         /* how often the holder renews its leases */
#define RENEW_BATCH 100      /* leases renewed by one script */
#define POLL_HEARING_MS 1000 /* a remote wait looks again this often, */
#define POLL_DEAF_MS 100     /* or this often while the subscriber is deaf */
#define PURGE_LOG_MAX 10000  /* entries the purge log keeps */
#define RESYNC_PAGE 1000     /* purge log entries read per resync script */
#define REPLAY_MAX 4096      /* purges kept for a replay */
#define OWN_MAX 64           /* own purges whose message may still come */
#define OWN_MS 2000          /* how long an own purge's message is awaited */
#define MESSAGE_MAX 200      /* bytes of a failure's message kept */
#define SHARE_ONE 1024       /* hit_share: all of the recent acquires */
#define SHARE_SHIFT 4        /* hit_share averages over about 2^4 of them */
/* How often the epoch and the purge log's last entry are read anyway:
 * Redis can lose its data (FLUSHALL) without dropping a connection, and a
 * cluster can lose a message (see epoch_reply()), so no resync would
 * follow. */
#define EPOCH_EVERY_MS 1000

enum op_kind { OP_GET, OP_ACQUIRE, OP_PURGE, OP_RESYNC, OP_RELEASE, OP_RENEW };

/* Where an acquire is. Past STEP_BOTH, the key's slot is being migrated
 * and its names are asked one at a time. */
enum acquire_step {
    STEP_READ,    /* the value alone, by a plain read: fresh, or go on */
    STEP_BOTH,    /* the acquire script: value and lease at once */
    STEP_VALUE,   /* the value alone */
    STEP_LEASE,   /* the lease alone */
    STEP_RECHECK, /* the lease won: the value again */
};

struct corral_tier_lease {
    TAILQ_ENTRY(corral_tier_lease) link; /* t->held, once won */
    char token[64];                      /* "H:<id>.<seq>" */
    size_t keylen;
    char key[];
};
TAILQ_HEAD(lease_list, corral_tier_lease);

struct op {
    TAILQ_ENTRY(op) link;        /* t->ops until answered */
    struct corral_redis_tier *t; /* NULL: orphaned */
    enum op_kind kind;
    bool listed;
    corral_tier_get_cb *get_cb;
    corral_tier_acquire_cb *acquire_cb;
    corral_tier_done_cb *done_cb;
    void *arg;
    struct corral_tier_lease *lease; /* OP_ACQUIRE: the one it asks for */
    enum acquire_step step;          /* OP_ACQUIRE: */
    struct corral_tier_want want;
    uint64_t deadline;          /* monotonic ms: answered by then */
    struct event *deadline_ev;  /* from the second step on */
    struct corral_value *stale; /* read before: for the answer */
    bool counted;               /* STEP_READ counted an unusable value */
    unsigned slot;              /* OP_RENEW: its leases' */
    bool replayed;              /* OP_PURGE: from the replay queue */
    size_t keylen;
    char key[];
};
TAILQ_HEAD(op_list, op);

/* A purge this instance gave, until its message comes. */
struct own_purge {
    uint64_t at; /* monotonic ms given; 0: unused */
    size_t keylen;
    char *key;
};

struct replay {
    TAILQ_ENTRY(replay) link;
    size_t keylen;
    char key[];
};
TAILQ_HEAD(replay_list, replay);

struct corral_redis_tier {
    struct event_base *base;
    struct corral_redis *conn;
    char *prefix;
    size_t plen;
    char *channel; /* prefix "l2:" db */
    char *stream, *epoch_key;
    size_t max_value;
    char max_value_str[24]; /* in digits: a read's last byte, a script's */
    char id[48];            /* this instance, in the fleet */
    uint64_t seq;           /* lease tokens */
    char epoch_new[80];     /* what this instance writes if Redis has none */
    uint64_t epochs;        /* proposed: each proposal is new */
    char epoch[64];         /* Redis's, as last read; "" before */
    char last_id[48];       /* the last purge log entry applied */
    char log_last[48];      /* the log's last entry at the last epoch read */
    bool resync_pending;    /* deaf, or (re)subscribed but not resynced */
    bool resync_lost;       /* this resync found purges missed */
    bool resync_running;
    struct corral_redis_script *acquire, *lease, *release, *renew, *purge_key,
        *purge_outcome, *purge_log, *resync, *epoch_read;
    struct event *epoch_ev; /* EPOCH_EVERY_MS */
    bool epoch_asking;
    const struct corral_tier_events *ev;
    void *ev_arg;
    struct op_list ops;
    struct lease_list held;
    struct replay_list replays;
    size_t n_replays;
    struct own_purge own[OWN_MAX]; /* a ring */
    size_t own_next;
    struct event *tick_ev; /* renew, resync, replay */
    struct corral_redis_tier_stats stats;
    unsigned hit_share; /* of recent acquires, found a fresh value: of
                         * SHARE_ONE, a moving average */
};

/* ---- scripts ---- */

/* Reads a little-endian u64 at byte i (1-based) of s. */
#define LUA_U64                                                                \
    "local function u64(s, i) local x = 0 "                                    \
    "for j = i + 7, i, -1 do x = x * 256 + string.byte(s, j) end "             \
    "return x end "

/* The value under KEYS[1] if it is a string of at most ARGV[1] bytes;
 * 1 when larger, 2 when not a string, false when absent. */
#define LUA_READ                                                               \
    "local function read(k, max) "                                             \
    "local n = redis.pcall('strlen', k) "                                      \
    "if type(n) ~= 'number' then return 2 end "                                \
    "if n == 0 then return false end "                                         \
    "if n > max then return 1 end "                                            \
    "return redis.call('get', k) end "

/* The lease under k for token (ms long) if free, else who has it: the
 * acquire answer from step 2 on, carrying v. */
#define LUA_TAKE                                                               \
    "local function take(k, token, ms, v) "                                    \
    "if redis.call('set', k, token, 'NX', 'PX', ms) then return {1, v} end "   \
    "local ttl = redis.call('pttl', k) "                                       \
    "local cur = redis.pcall('get', k) "                                       \
    "if ttl < 0 or type(cur) ~= 'string' then "                                \
    "redis.call('set', k, token, 'PX', ms) return {1, v} end "                 \
    "if string.sub(cur, 1, 2) == 'F:' then return {3, v, ttl, cur} end "       \
    "return {2, v, ttl} end "

/* KEYS: value, lease. ARGV: now, newer_than, max bytes, token, lease ms.
 * {0, v}: usable; {1, v}: lease won; {2, v, pttl}: held; {3, v, pttl,
 * outcome}: failed. v: the value, 1 (too large), 2 (not a string) or
 * false. */
static const char acquire_script[] = LUA_U64 LUA_READ LUA_TAKE
    "local v = read(KEYS[1], tonumber(ARGV[3])) "
    "if type(v) == 'string' and #v >= 20 and string.sub(v, 1, 3) == 'CRV' "
    "and u64(v, 13) > tonumber(ARGV[1]) and u64(v, 5) > tonumber(ARGV[2]) "
    "then return {0, v} end "
    "return take(KEYS[2], ARGV[4], ARGV[5], v)";

/* KEYS: lease. ARGV: token, lease ms. The acquire script without the
 * value: {1, false}, {2, false, pttl} or {3, false, pttl, outcome}. */
static const char lease_script[] =
    LUA_TAKE "return take(KEYS[1], ARGV[1], ARGV[2], false)";

/* KEYS: lease. ARGV: token, kind, outcome, retry ms, channel, message,
 * message if abandoned. Only the holder may set an outcome; one whose
 * lease ran out says "abandoned" instead of "failed". Returns 1 if it
 * still held the lease. */
static const char release_script[] =
    "local mine = redis.pcall('get', KEYS[1]) == ARGV[1] "
    "local k = ARGV[2] "
    "local body = ARGV[6] "
    "if mine then "
    "if k == 'f' and tonumber(ARGV[4]) > 0 then "
    "redis.call('set', KEYS[1], ARGV[3], 'PX', ARGV[4]) "
    "else redis.call('del', KEYS[1]) end "
    "elseif k == 'f' then k = 'a' body = ARGV[7] end "
    "redis.call('publish', ARGV[5], k .. body) "
    "if mine then return 1 end return 0";

/* KEYS: leases. ARGV: ms, then each lease's token. */
static const char renew_script[] =
    "local n = 0 "
    "for i = 1, #KEYS do "
    "if redis.pcall('get', KEYS[i]) == ARGV[i + 1] then "
    "redis.call('pexpire', KEYS[i], ARGV[1]) n = n + 1 end end "
    "return n";

/* Deletes the lease under k if it holds a failed fill's outcome (a lease
 * held by a fill stays). */
#define LUA_DROP_OUTCOME                                                       \
    "local function drop_outcome(k) "                                          \
    "local l = redis.pcall('get', k) "                                         \
    "if type(l) == 'string' and string.sub(l, 1, 2) == 'F:' then "             \
    "redis.call('del', k) end end "

/* KEYS: value, lease. The key's part of a purge: its value, and its
 * failed fill's outcome. */
static const char purge_key_script[] = LUA_DROP_OUTCOME
    "redis.call('del', KEYS[1]) drop_outcome(KEYS[2]) return 1";

/* KEYS: lease. The outcome's half of the key's part, alone. */
static const char purge_outcome_script[] =
    LUA_DROP_OUTCOME "drop_outcome(KEYS[1]) return 1";

/* KEYS: purge log. ARGV: key, channel, log length. The fleet's part: the
 * log entry, and the message that carries its id and the id of the entry
 * before it ("p <id>/<previous> <key>"): a subscriber that applied less
 * than the previous one lost a message. An older corral reads the id word
 * up to the '/'. */
static const char purge_log_script[] =
    "local b = redis.call('xrevrange', KEYS[1], '+', '-', 'COUNT', 1) "
    "local prev = '0-0' if #b > 0 then prev = b[1][1] end "
    "local id = redis.call('xadd', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', "
    "'k', ARGV[1]) "
    "redis.call('publish', ARGV[2], 'p ' .. id .. '/' .. prev .. ' ' .. "
    "ARGV[1]) "
    "return id";

/* KEYS: epoch, purge log. ARGV: an epoch to write if there is none, the
 * last entry applied, entries to read. {epoch, first id, last id, length,
 * entries after ARGV[2]}. */
static const char resync_script[] =
    "redis.call('set', KEYS[1], ARGV[1], 'NX') "
    "local e = redis.call('get', KEYS[1]) "
    "local f, l, n = false, false, 0 "
    "if redis.call('exists', KEYS[2]) == 1 then "
    "local a = redis.call('xrange', KEYS[2], '-', '+', 'COUNT', 1) "
    "local b = redis.call('xrevrange', KEYS[2], '+', '-', 'COUNT', 1) "
    "if #a > 0 then f = a[1][1] end "
    "if #b > 0 then l = b[1][1] end "
    "n = redis.call('xlen', KEYS[2]) end "
    "local es = {} "
    "if n > 0 then es = redis.call('xrange', KEYS[2], '(' .. ARGV[2], '+', "
    "'COUNT', ARGV[3]) end "
    "return {e, f, l, n, es}";

/* KEYS: epoch, purge log. ARGV: an epoch to write if there is none.
 * {epoch, last id}. */
static const char epoch_script[] =
    "redis.call('set', KEYS[1], ARGV[1], 'NX') "
    "local l = false "
    "local b = redis.call('xrevrange', KEYS[2], '+', '-', 'COUNT', 1) "
    "if #b > 0 then l = b[1][1] end "
    "return {redis.call('get', KEYS[1]), l}";

/* ---- keys ---- */

/* A key's value and lease: tagged names (corral/redis.h). */
#define KIND_VALUE "v:"
#define KIND_LEASE "l:"

/* A key's name of one kind, in a caller's buffer when it fits. */
struct kbuf {
    char *p;
    size_t len;
    char small[512];
};

static void
kbuf_make(struct kbuf *b, const struct corral_redis_tier *t, const char *kind,
          const void *key, size_t keylen)
{
    size_t n = t->plen + CORRAL_REDIS_TAG_LEN + strlen(kind) + keylen;
    b->p = n <= sizeof(b->small) ? b->small : xmalloc(n);
    b->len = corral_redis_tagged_name(b->p, n, t->prefix, kind, key, keylen);
}

static void
kbuf_free(struct kbuf *b)
{
    if (b->p != b->small)
        free(b->p);
}

/* ---- ops ---- */

static struct op *
op_new(struct corral_redis_tier *t, enum op_kind kind, const void *key,
       size_t keylen, void *arg)
{
    struct op *op = xcalloc(1, sizeof(*op) + keylen);
    op->t = t;
    op->kind = kind;
    op->arg = arg;
    op->keylen = keylen;
    if (keylen)
        memcpy(op->key, key, keylen);
    op->listed = true;
    TAILQ_INSERT_TAIL(&t->ops, op, link);
    return op;
}

/* The connection answered op: off the list. Returns its tier, or NULL
 * when it was orphaned (then only free it). */
static struct corral_redis_tier *
op_done(struct op *op)
{
    struct corral_redis_tier *t = op->t;
    if (t != NULL && op->listed) {
        TAILQ_REMOVE(&t->ops, op, link);
        op->listed = false;
    }
    return t;
}

/* op is owed another answer by the connection: listed again. */
static void
relist(struct corral_redis_tier *t, struct op *op)
{
    op->listed = true;
    TAILQ_INSERT_TAIL(&t->ops, op, link);
}

static void
op_free(struct op *op)
{
    if (op->deadline_ev != NULL)
        event_free(op->deadline_ev);
    corral_value_unref(op->stale);
    free(op->lease);
    free(op);
}

/* ---- values ---- */

/* The value in a script's reply element: decoded and checked against
 * key, or NULL (counted when it was there but unusable, unless count is
 * false: a plain read counted it already). */
static struct corral_value *
value_of(struct corral_redis_tier *t, const redisReply *e, const void *key,
         size_t keylen, bool count)
{
    if (e == NULL || e->type == REDIS_REPLY_NIL)
        return NULL;
    if (e->type == REDIS_REPLY_INTEGER) {
        if (count && e->integer == 1)
            t->stats.large_found++;
        else if (count)
            t->stats.bad_values++;
        return NULL;
    }
    struct corral_value *v;
    if (e->type != REDIS_REPLY_STRING ||
        corral_l2_decode(e->str, (size_t)e->len, key, keylen, &v) !=
            CORRAL_L2_OK) {
        t->stats.bad_values += count;
        return NULL;
    }
    return v;
}

/* Reads the value of key with GETRANGE name 0 max_value: a plain command,
 * no script. Its reply: read_value(). */
static void
send_read(struct corral_redis_tier *t, const void *key, size_t keylen,
          corral_redis_reply_cb *cb, void *arg)
{
    struct kbuf k;
    kbuf_make(&k, t, KIND_VALUE, key, keylen);
    const char *argv[4] = {"GETRANGE", k.p, "0", t->max_value_str};
    size_t lens[4] = {8, k.len, 1, strlen(t->max_value_str)};
    corral_redis_command(t->conn, cb, arg, 4, argv, lens);
    kbuf_free(&k);
}

/* The value in send_read()'s reply: decoded and checked against key, or
 * NULL: absent (an empty string), or counted as unusable: larger than
 * max_value (max_value + 1 bytes came), not a string (WRONGTYPE: *error
 * is then 0, Redis answered) or not a value of this key. *error is the
 * reply's, else. */
static struct corral_value *
read_value(struct corral_redis_tier *t, const redisReply *rep, int *error,
           const void *key, size_t keylen)
{
    if (*error == -EIO && rep != NULL && rep->type == REDIS_REPLY_ERROR &&
        strncmp(rep->str, "WRONGTYPE", 9) == 0) {
        *error = 0;
        t->stats.bad_values++;
        return NULL;
    }
    if (*error != 0)
        return NULL;
    if (rep->type == REDIS_REPLY_STRING && rep->len == 0)
        return NULL;
    if (rep->type == REDIS_REPLY_STRING && (size_t)rep->len > t->max_value) {
        t->stats.large_found++;
        return NULL;
    }
    return value_of(t, rep, key, keylen, true);
}

static void
get_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    if (t == NULL) {
        op_free(op);
        return;
    }
    struct corral_value *v = read_value(t, rep, &error, op->key, op->keylen);
    if (v)
        t->stats.hits++;
    else
        t->stats.misses++;
    op->get_cb(v, v ? 0 : error ? error : -ENOENT, op->arg);
    op_free(op);
}

static void
redis_get(void *ctx, const void *key, size_t keylen, corral_tier_get_cb *cb,
          void *arg)
{
    struct corral_redis_tier *t = ctx;
    struct op *op = op_new(t, OP_GET, key, keylen, arg);
    op->get_cb = cb;
    send_read(t, key, keylen, get_reply, op);
}

static void
redis_set(void *ctx, const struct corral_value *v, uint64_t ttl_ms)
{
    struct corral_redis_tier *t = ctx;
    if (ttl_ms == 0)
        return;
    size_t n = corral_l2_size(v);
    if (n > t->max_value) {
        t->stats.too_large++;
        return;
    }
    char *blob = xmalloc(n);
    corral_l2_encode(v, blob);
    struct kbuf k;
    char ttl[24];
    kbuf_make(&k, t, KIND_VALUE, corral_value_key(v), corral_value_keylen(v));
    snprintf(ttl, sizeof(ttl), "%" PRIu64, ttl_ms);
    const char *argv[5] = {"SET", k.p, blob, "PX", ttl};
    size_t lens[5] = {3, k.len, n, 2, strlen(ttl)};
    corral_redis_command(t->conn, NULL, NULL, 5, argv, lens);
    kbuf_free(&k);
    free(blob);
}

/* ---- leases ---- */

static struct corral_tier_lease *
lease_new(struct corral_redis_tier *t, const void *key, size_t keylen)
{
    struct corral_tier_lease *l = xcalloc(1, sizeof(*l) + keylen);
    snprintf(l->token, sizeof(l->token), "H:%s.%" PRIu64, t->id, ++t->seq);
    l->keylen = keylen;
    memcpy(l->key, key, keylen);
    return l;
}

static void
arm_tick(struct corral_redis_tier *t)
{
    if (!evtimer_pending(t->tick_ev, NULL)) {
        struct timeval tv = corral_ms_to_tv(RENEW_MS);
        evtimer_add(t->tick_ev, &tv);
    }
}

/* "F:<errno>:<message>" */
static void
parse_outcome(const redisReply *e, int *error, char *msg, size_t cap)
{
    *error = -EIO;
    snprintf(msg, cap, "fill failed (elsewhere in the fleet)");
    if (e == NULL || e->type != REDIS_REPLY_STRING || e->len < 3)
        return;
    const char *p = e->str + 2, *end = e->str + e->len;
    long n = 0;
    while (p < end && *p >= '0' && *p <= '9' && n < 4096)
        n = n * 10 + (*p++ - '0');
    if (p >= end || *p != ':' || n <= 0 || n >= 4096)
        return;
    *error = -(int)n;
    size_t len = (size_t)(end - p - 1);
    if (len >= cap)
        len = cap - 1;
    memcpy(msg, p + 1, len);
    msg[len] = '\0';
}

static bool
deaf(const struct corral_redis_tier *t)
{
    return !corral_redis_listening(t->conn) || t->resync_pending;
}

static void send_release(struct corral_redis_tier *t,
                         struct corral_tier_lease *l,
                         const struct corral_outcome *o);

/* Answers op's acquire once; a carries the references it hands over. */
static void
acquire_answer(struct op *op, struct corral_tier_answer *a)
{
    corral_tier_acquire_cb *cb = op->acquire_cb;
    op->acquire_cb = NULL;
    if (cb != NULL)
        cb(a, op->arg);
    else
        corral_value_unref(a->value);
}

/* An acquire or lease script's reply that hands out the lease. */
static bool
grants(const redisReply *rep, int error)
{
    return error == 0 && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1 &&
           rep->element[0]->type == REDIS_REPLY_INTEGER &&
           rep->element[0]->integer == 1;
}

/* op holds its lease but will not fill: give it back (not freed). */
static void
give_back(struct corral_redis_tier *t, struct op *op)
{
    static const struct corral_outcome gone = {.kind =
                                                   CORRAL_OUTCOME_ABANDONED};
    send_release(t, op->lease, &gone);
}

/* The lease was granted after its asker stopped waiting: give it back,
 * so nobody waits on a lease whose holder does not know it has it. */
static void
give_back_late(struct corral_redis_tier *t, struct op *op)
{
    t->stats.late_leases++;
    give_back(t, op);
}

/* An acquire found a fresh value (hit) or not: counted, and the share of
 * hits that decides whether the next acquire reads first. */
static void
tally(struct corral_redis_tier *t, bool hit)
{
    if (hit) {
        t->stats.hits++;
        t->hit_share += (SHARE_ONE - t->hit_share) >> SHARE_SHIFT;
    } else {
        t->stats.misses++;
        t->hit_share -= t->hit_share >> SHARE_SHIFT;
    }
}

static void
answer_won(struct corral_redis_tier *t, struct op *op,
           struct corral_value *stale)
{
    struct corral_tier_answer a = {
        .verdict = CORRAL_TIER_WON, .value = stale, .lease = op->lease};
    tally(t, false);
    t->stats.leases_won++;
    op->lease = NULL;
    TAILQ_INSERT_TAIL(&t->held, a.lease, link);
    arm_tick(t);
    acquire_answer(op, &a);
}

/* What the acquire script calls usable: it expires after the asker's
 * clock and, for a refresh, was stored after the copy the asker has. */
static bool
fresh(const struct corral_value *v, const struct corral_tier_want *w)
{
    return corral_value_expires_at(v) > w->now_ms &&
           corral_value_stored_at(v) > w->newer_than;
}

/* Redis runs a script on two names of a slot being migrated only on a
 * node that holds both; elsewhere it answers TRYAGAIN. */
static bool
migrating(const redisReply *rep, int error)
{
    return error == -EIO && rep != NULL && rep->type == REDIS_REPLY_ERROR &&
           strncmp(rep->str, "TRYAGAIN", 8) == 0;
}

/* Answers op's acquire "unknown" for error, with the copy it read, if
 * any (handed over). */
static void
answer_unknown(struct op *op, int error)
{
    struct corral_tier_answer a = {
        .verdict = CORRAL_TIER_UNKNOWN, .error = error, .value = op->stale};
    op->stale = NULL;
    acquire_answer(op, &a);
}

static void split_start(struct corral_redis_tier *t, struct op *op);
static void split_value(struct corral_redis_tier *t, struct op *op,
                        enum acquire_step step);

static void
acquire_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    if (error == -ETIMEDOUT) {
        /* Answered now; the op stays listed for its late reply (which
         * frees it), so a tier freed first still orphans it. */
        answer_unknown(op, error);
        return;
    }
    struct corral_redis_tier *t = op_done(op);
    if (t == NULL || op->acquire_cb == NULL) {
        /* Orphaned, or answered at its deadline already. */
        if (t != NULL && grants(rep, error))
            give_back_late(t, op);
        op_free(op);
        return;
    }
    if (op->step == STEP_BOTH && migrating(rep, error)) {
        split_start(t, op);
        return;
    }
    struct corral_tier_answer a = {.verdict = CORRAL_TIER_UNKNOWN};
    char msg[MESSAGE_MAX + 1];
    if (error != 0 || rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER) {
        a.error = error ? error : -EIO;
        a.value = op->stale;
        op->stale = NULL;
        acquire_answer(op, &a);
        op_free(op);
        return;
    }
    long long kind = rep->element[0]->integer;
    if (kind == 1 && op->step == STEP_LEASE) {
        split_value(t, op, STEP_RECHECK);
        return;
    }
    /* The lease script carries no value: the one read before it. */
    a.value = value_of(t, rep->element[1], op->key, op->keylen, !op->counted);
    if (a.value == NULL) {
        a.value = op->stale;
        op->stale = NULL;
    }
    long long ms =
        rep->elements > 2 && rep->element[2]->type == REDIS_REPLY_INTEGER
            ? rep->element[2]->integer
            : -1;
    switch (kind) {
    case 0:
        if (a.value != NULL) {
            tally(t, true);
            a.verdict = CORRAL_TIER_VALUE;
        }
        break;
    case 1:
        answer_won(t, op, a.value);
        op_free(op);
        return;
    case 2: {
        tally(t, false);
        uint64_t poll = deaf(t) ? POLL_DEAF_MS : POLL_HEARING_MS;
        a.verdict = CORRAL_TIER_HELD;
        a.ms = ms >= 0 && (uint64_t)ms + 10 < poll ? (uint64_t)ms + 10 : poll;
        break;
    }
    case 3:
        tally(t, false);
        a.verdict = CORRAL_TIER_FAILED;
        a.ms = ms > 0 ? (uint64_t)ms : 1;
        parse_outcome(rep->elements > 3 ? rep->element[3] : NULL, &a.error, msg,
                      sizeof(msg));
        a.message = msg;
        break;
    default:
        t->stats.bad_values++;
        break;
    }
    acquire_answer(op, &a);
    op_free(op);
}

/* The lease was granted after its asker stopped waiting: give it back. */
static void
acquire_late(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    if (t != NULL && grants(rep, error))
        give_back_late(t, op);
    op_free(op);
}

/* ---- a slot being migrated ----
 *
 * The acquire script answered TRYAGAIN: the key's value and lease are
 * asked one at a time, each a single name that the cluster client
 * follows (ASK) to whichever node holds it: the value; if not fresh, the
 * lease; once won, the value again, since another instance may have
 * stored it and given its lease back between the two. All of it by the
 * deadline of the first. */

static void
split_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct op *op = arg;
    (void)fd;
    (void)what;
    if (op->acquire_cb == NULL)
        return;
    /* Answered: the step out now frees op (and gives a lease back). */
    struct corral_tier_answer a = {.verdict = CORRAL_TIER_UNKNOWN,
                                   .error = -ETIMEDOUT,
                                   .value = op->stale};
    op->stale = NULL;
    acquire_answer(op, &a);
}

static void split_value_reply(const redisReply *rep, int error, void *arg);

static void
split_value(struct corral_redis_tier *t, struct op *op, enum acquire_step step)
{
    op->step = step;
    relist(t, op);
    send_read(t, op->key, op->keylen, split_value_reply, op);
}

/* op takes a second step: all of it by the deadline of the first, which
 * is armed now (once). Returns false when it has passed: op answered
 * -ETIMEDOUT (with the value read, if any) and freed. */
static bool
arm_deadline(struct corral_redis_tier *t, struct op *op)
{
    uint64_t now = corral_now_ms();
    if (now >= op->deadline) {
        struct corral_tier_answer a = {.verdict = CORRAL_TIER_UNKNOWN,
                                       .error = -ETIMEDOUT,
                                       .value = op->stale};
        op->stale = NULL;
        acquire_answer(op, &a);
        op_free(op);
        return false;
    }
    if (op->deadline_ev != NULL)
        return true;
    op->deadline_ev = evtimer_new(t->base, split_deadline_cb, op);
    if (op->deadline_ev == NULL)
        abort(); /* the policy of xalloc.h */
    struct timeval tv = corral_ms_to_tv(op->deadline - now);
    evtimer_add(op->deadline_ev, &tv);
    return true;
}

static void
split_start(struct corral_redis_tier *t, struct op *op)
{
    t->stats.split_acquires++;
    if (arm_deadline(t, op))
        split_value(t, op, STEP_VALUE);
}

static void
split_lease(struct corral_redis_tier *t, struct op *op)
{
    struct kbuf l;
    char ms[16];
    op->step = STEP_LEASE;
    relist(t, op);
    kbuf_make(&l, t, KIND_LEASE, op->key, op->keylen);
    snprintf(ms, sizeof(ms), "%d", LEASE_MS);
    const char *argv[3] = {l.p, op->lease->token, ms};
    size_t lens[3] = {l.len, strlen(op->lease->token), strlen(ms)};
    corral_redis_eval_late(t->conn, t->lease, acquire_reply, acquire_late, op,
                           1, 3, argv, lens);
    kbuf_free(&l);
}

static void
split_value_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    bool holding = op->step == STEP_RECHECK;
    if (t == NULL || op->acquire_cb == NULL) {
        if (t != NULL && holding)
            give_back_late(t, op);
        op_free(op);
        return;
    }
    struct corral_value *v = read_value(t, rep, &error, op->key, op->keylen);
    if (v != NULL && fresh(v, &op->want)) {
        if (holding)
            give_back(t, op);
        tally(t, true);
        struct corral_tier_answer a = {.verdict = CORRAL_TIER_VALUE,
                                       .value = v};
        acquire_answer(op, &a);
        op_free(op);
        return;
    }
    if (v != NULL) {
        corral_value_unref(op->stale);
        op->stale = v;
    }
    if (holding) { /* the lease is this fill's, whatever the read said */
        answer_won(t, op, op->stale);
        op->stale = NULL;
        op_free(op);
        return;
    }
    if (error != 0) {
        answer_unknown(op, error);
        op_free(op);
        return;
    }
    split_lease(t, op);
}

/* The acquire script: the value read again and, unless fresh, the lease
 * in one step (another instance may have stored the value, or taken the
 * lease, since the plain read). */
static void
send_acquire(struct corral_redis_tier *t, struct op *op)
{
    struct kbuf k, l;
    char now[24], newer[24], ms[16];
    op->step = STEP_BOTH;
    op->lease = lease_new(t, op->key, op->keylen);
    kbuf_make(&k, t, KIND_VALUE, op->key, op->keylen);
    kbuf_make(&l, t, KIND_LEASE, op->key, op->keylen);
    snprintf(now, sizeof(now), "%" PRIu64, op->want.now_ms);
    snprintf(newer, sizeof(newer), "%" PRIu64, op->want.newer_than);
    snprintf(ms, sizeof(ms), "%d", LEASE_MS);
    const char *argv[7] = {
        k.p, l.p, now, newer, t->max_value_str, op->lease->token, ms};
    size_t lens[7] = {k.len,
                      l.len,
                      strlen(now),
                      strlen(newer),
                      strlen(t->max_value_str),
                      strlen(op->lease->token),
                      strlen(ms)};
    corral_redis_eval_late(t->conn, t->acquire, acquire_reply, acquire_late, op,
                           2, 7, argv, lens);
    kbuf_free(&k);
    kbuf_free(&l);
}

static void
read_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    if (t == NULL || op->acquire_cb == NULL) {
        op_free(op); /* no lease asked for yet */
        return;
    }
    uint64_t unusable = t->stats.bad_values + t->stats.large_found;
    struct corral_value *v = read_value(t, rep, &error, op->key, op->keylen);
    op->counted = t->stats.bad_values + t->stats.large_found != unusable;
    if (v != NULL && fresh(v, &op->want)) {
        tally(t, true);
        struct corral_tier_answer a = {.verdict = CORRAL_TIER_VALUE,
                                       .value = v};
        acquire_answer(op, &a);
        op_free(op);
        return;
    }
    op->stale = v;
    if (error != 0) {
        answer_unknown(op, error);
        op_free(op);
        return;
    }
    if (arm_deadline(t, op)) {
        relist(t, op);
        send_acquire(t, op);
    }
}

static void
redis_acquire(void *ctx, const void *key, size_t keylen,
              const struct corral_tier_want *want, corral_tier_acquire_cb *cb,
              void *arg)
{
    struct corral_redis_tier *t = ctx;
    struct op *op = op_new(t, OP_ACQUIRE, key, keylen, arg);
    op->acquire_cb = cb;
    op->want = *want;
    op->deadline = corral_now_ms() + corral_redis_timeout(t->conn);
    if (t->hit_share < SHARE_ONE / 2) {
        send_acquire(t, op);
        return;
    }
    op->step = STEP_READ;
    send_read(t, key, keylen, read_reply, op);
}

static void
release_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    if (t != NULL && error == 0 && rep->type == REDIS_REPLY_INTEGER &&
        rep->integer == 0)
        t->stats.leases_lost++;
    op_free(op);
}

/* Gives l back (not freed) with o. */
static void
send_release(struct corral_redis_tier *t, struct corral_tier_lease *l,
             const struct corral_outcome *o)
{
    struct kbuf lk;
    char kind[2] = {'a', '\0'}, retry[24] = "0", outcome[MESSAGE_MAX + 32];
    char head[MESSAGE_MAX + 120], ahead[80];
    size_t olen = 0;
    const char *message = o->message ? o->message : "";
    size_t mlen = strnlen(message, MESSAGE_MAX);
    int hl;
    kbuf_make(&lk, t, KIND_LEASE, l->key, l->keylen);
    snprintf(ahead, sizeof(ahead), " %s ", t->id);
    if (o->kind == CORRAL_OUTCOME_STORED) {
        kind[0] = 's';
        hl = snprintf(head, sizeof(head), " %s %" PRIu64 " ", t->id,
                      o->stored_at);
    } else if (o->kind == CORRAL_OUTCOME_FAILED) {
        int e = o->error < 0 && o->error > -4096 ? -o->error : EIO;
        kind[0] = 'f';
        snprintf(retry, sizeof(retry), "%" PRIu64, o->retry_ms);
        olen = (size_t)snprintf(outcome, sizeof(outcome), "F:%d:%.*s", e,
                                (int)mlen, message);
        hl = snprintf(head, sizeof(head), " %s %s %d %zu:%.*s", t->id, retry, e,
                      mlen, (int)mlen, message);
    } else {
        hl = snprintf(head, sizeof(head), " %s ", t->id);
    }
    /* The message ends with the key: its bytes follow the head. */
    size_t mcap = (size_t)hl + l->keylen, alen = strlen(ahead) + l->keylen;
    char *body = xmalloc(mcap + alen);
    char *abody = body + mcap;
    memcpy(body, head, (size_t)hl);
    memcpy(body + hl, l->key, l->keylen);
    memcpy(abody, ahead, strlen(ahead));
    memcpy(abody + strlen(ahead), l->key, l->keylen);
    const char *argv[8] = {lk.p,  l->token,   kind, outcome,
                           retry, t->channel, body, abody};
    size_t lens[8] = {lk.len,        strlen(l->token),   1,    olen,
                      strlen(retry), strlen(t->channel), mcap, alen};
    struct op *op = op_new(t, OP_RELEASE, NULL, 0, NULL);
    corral_redis_eval(t->conn, t->release, release_reply, op, 1, 7, argv, lens);
    free(body);
    kbuf_free(&lk);
}

static void
redis_release(void *ctx, struct corral_tier_lease *l,
              const struct corral_outcome *o)
{
    struct corral_redis_tier *t = ctx;
    TAILQ_REMOVE(&t->held, l, link);
    send_release(t, l, o);
    free(l);
    /* The value's SET and this release reach Redis before the fill's
     * callers are answered: a caller who then asks another instance finds
     * the value, not a lease. */
    corral_redis_flush(t->conn);
}

struct renewal {
    unsigned slot;
    struct corral_tier_lease *l;
};

static int
renewal_cmp(const void *a, const void *b)
{
    unsigned x = ((const struct renewal *)a)->slot;
    unsigned y = ((const struct renewal *)b)->slot;
    return x < y ? -1 : x > y;
}

/* The leases held (only those in slot *only, when not NULL) by slot, in
 * *out (caller frees). Returns how many. */
static size_t
renewals(struct corral_redis_tier *t, const unsigned *only,
         struct renewal **out)
{
    size_t total = 0, i = 0;
    struct corral_tier_lease *l;
    TAILQ_FOREACH(l, &t->held, link)
    {
        total++;
    }
    struct renewal *v = xcalloc(total ? total : 1, sizeof(*v));
    TAILQ_FOREACH(l, &t->held, link)
    {
        struct kbuf k;
        kbuf_make(&k, t, KIND_LEASE, l->key, l->keylen);
        unsigned slot = corral_redis_slot(t->conn, k.p, k.len);
        kbuf_free(&k);
        if (only != NULL && slot != *only)
            continue;
        v[i].slot = slot;
        v[i++].l = l;
    }
    qsort(v, i, sizeof(*v), renewal_cmp);
    *out = v;
    return i;
}

static void renew_reply(const redisReply *rep, int error, void *arg);

/* One script renewing the n leases of v, all in one slot. */
static void
renew_send(struct corral_redis_tier *t, const struct renewal *v, size_t n)
{
    const char *argv[2 * RENEW_BATCH + 1];
    size_t lens[2 * RENEW_BATCH + 1];
    struct kbuf keys[RENEW_BATCH];
    char ms[16];
    snprintf(ms, sizeof(ms), "%d", LEASE_MS);
    argv[n] = ms;
    lens[n] = strlen(ms);
    for (size_t i = 0; i < n; i++) {
        kbuf_make(&keys[i], t, KIND_LEASE, v[i].l->key, v[i].l->keylen);
        argv[i] = keys[i].p;
        lens[i] = keys[i].len;
        /* ARGV[1] is the ms; the tokens follow in the keys' order. */
        argv[n + 1 + i] = v[i].l->token;
        lens[n + 1 + i] = strlen(v[i].l->token);
    }
    struct op *op = NULL;
    if (n > 1) { /* only several names can hear TRYAGAIN */
        op = op_new(t, OP_RENEW, NULL, 0, NULL);
        op->slot = v[0].slot;
    }
    corral_redis_eval(t->conn, t->renew, op ? renew_reply : NULL, op, (int)n,
                      (int)(2 * n + 1), argv, lens);
    for (size_t i = 0; i < n; i++)
        kbuf_free(&keys[i]);
}

/* The total leases of v, one script per slot and per batch leases. */
static void
renew_in(struct corral_redis_tier *t, const struct renewal *v, size_t total,
         size_t batch)
{
    size_t i = 0;
    while (i < total) {
        size_t n = 1;
        while (i + n < total && n < batch && v[i + n].slot == v[i].slot)
            n++;
        renew_send(t, v + i, n);
        i += n;
    }
}

/* One script renews the leases held in one slot (on one server, every
 * lease), RENEW_BATCH at a time. */
static void
renew(struct corral_redis_tier *t)
{
    struct renewal *v;
    size_t n = renewals(t, NULL, &v);
    renew_in(t, v, n, RENEW_BATCH);
    free(v);
}

/* The slot is being migrated and its leases are not all on one node yet:
 * Redis renews them together only where they are. One script each. */
static void
renew_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    if (t != NULL && migrating(rep, error)) {
        struct renewal *v;
        size_t n = renewals(t, &op->slot, &v);
        renew_in(t, v, n, 1);
        free(v);
    }
    op_free(op);
}

/* ---- purges ---- */

static void purge_send(struct corral_redis_tier *t, const void *key,
                       size_t keylen, corral_tier_done_cb *cb, void *arg,
                       bool replayed);

static void
replay_keep(struct corral_redis_tier *t, const void *key, size_t keylen)
{
    if (t->n_replays >= REPLAY_MAX) {
        struct replay *old = TAILQ_FIRST(&t->replays);
        TAILQ_REMOVE(&t->replays, old, link);
        free(old);
        t->n_replays--;
        t->stats.purges_dropped++;
    }
    struct replay *rp = xmalloc(sizeof(*rp) + keylen);
    rp->keylen = keylen;
    memcpy(rp->key, key, keylen);
    TAILQ_INSERT_TAIL(&t->replays, rp, link);
    t->n_replays++;
    t->stats.purges_queued++;
}

/* Sends every kept purge again (those that fail are kept again). */
static void
replay(struct corral_redis_tier *t)
{
    struct replay_list todo = TAILQ_HEAD_INITIALIZER(todo);
    TAILQ_CONCAT(&todo, &t->replays, link);
    t->n_replays = 0;
    struct replay *rp;
    while ((rp = TAILQ_FIRST(&todo)) != NULL) {
        TAILQ_REMOVE(&todo, rp, link);
        purge_send(t, rp->key, rp->keylen, NULL, NULL, true);
        free(rp);
    }
}

/* ---- own purges ----
 *
 * This instance's purge's message changes nothing here: the purge was
 * applied here when it was given (corral_purge()), and every read of the
 * key given since went to the key's node after the purge's key part.
 * Applied again, it would throw away a fill begun after the purge, whose
 * message may come late (over a cluster's bus, tens of milliseconds after
 * the purge was answered): the key computed once more. So the first message
 * for the key within OWN_MS of an own purge is not applied; a second (the
 * own one, when another instance's came first) is. A replay's message is
 * applied: while Redis did not have the purge, the old value may have
 * been read back here. */

static void
own_note(struct corral_redis_tier *t, const void *key, size_t keylen)
{
    struct own_purge *o = &t->own[t->own_next];
    t->own_next = (t->own_next + 1) % OWN_MAX;
    free(o->key);
    o->key = xmalloc(keylen ? keylen : 1);
    memcpy(o->key, key, keylen);
    o->keylen = keylen;
    o->at = corral_now_ms();
}

/* The own purge of key given last and not heard yet, or NULL. */
static struct own_purge *
own_find(struct corral_redis_tier *t, const void *key, size_t keylen)
{
    uint64_t now = corral_now_ms();
    for (size_t i = 1; i <= OWN_MAX; i++) {
        struct own_purge *o = &t->own[(t->own_next + OWN_MAX - i) % OWN_MAX];
        if (o->at != 0 && now - o->at <= OWN_MS && o->keylen == keylen &&
            memcmp(o->key, key, keylen) == 0)
            return o;
    }
    return NULL;
}

/* A message for key came: is it one not to apply (forgotten now)? */
static bool
own_heard(struct corral_redis_tier *t, const void *key, size_t keylen)
{
    struct own_purge *o = own_find(t, key, keylen);
    if (o != NULL)
        o->at = 0;
    return o != NULL;
}

/* The purge's end, confirmed (error 0) or not. */
static void
purge_done(struct corral_redis_tier *t, struct op *op, int error)
{
    /* Not confirmed (a timeout may still have run either part): keep it
     * for a replay, which is harmless if it did. */
    if (error != 0) {
        struct own_purge *o = own_find(t, op->key, op->keylen);
        if (o != NULL && !op->replayed) /* the replay's message applies */
            o->at = 0;
        replay_keep(t, op->key, op->keylen);
        arm_tick(t);
    }
    if (op->done_cb)
        op->done_cb(error, op->arg);
    op_free(op);
}

static void
purge_log_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    (void)rep;
    if (t == NULL) {
        op_free(op);
        return;
    }
    purge_done(t, op, error);
}

static void purge_value(struct corral_redis_tier *t, struct op *op);

static void
purge_key_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    if (t == NULL) {
        op_free(op);
        return;
    }
    if (migrating(rep, error)) {
        purge_value(t, op);
        return;
    }
    if (error != 0) {
        purge_done(t, op, error);
        return;
    }
    char max[16];
    snprintf(max, sizeof(max), "%d", PURGE_LOG_MAX);
    const char *argv[4] = {t->stream, op->key, t->channel, max};
    size_t lens[4] = {strlen(t->stream), op->keylen, strlen(t->channel),
                      strlen(max)};
    relist(t, op); /* owed again: the log part */
    corral_redis_eval(t->conn, t->purge_log, purge_log_reply, op, 1, 4, argv,
                      lens);
}

static void
purge_value_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    struct kbuf l;
    (void)rep;
    if (t == NULL) {
        op_free(op);
        return;
    }
    if (error != 0) {
        purge_done(t, op, error);
        return;
    }
    relist(t, op); /* owed again: the outcome */
    kbuf_make(&l, t, KIND_LEASE, op->key, op->keylen);
    const char *argv[1] = {l.p};
    size_t lens[1] = {l.len};
    corral_redis_eval(t->conn, t->purge_outcome, purge_key_reply, op, 1, 1,
                      argv, lens);
    kbuf_free(&l);
}

/* The key's part on a slot being migrated, whose script on two names
 * heard TRYAGAIN: the value, then the outcome, one name each (each
 * followed to wherever it is). */
static void
purge_value(struct corral_redis_tier *t, struct op *op)
{
    struct kbuf k;
    relist(t, op);
    kbuf_make(&k, t, KIND_VALUE, op->key, op->keylen);
    const char *argv[2] = {"DEL", k.p};
    size_t lens[2] = {3, k.len};
    corral_redis_command(t->conn, purge_value_reply, op, 2, argv, lens);
    kbuf_free(&k);
}

/* A purge is two scripts, as its names have two tags: the key's part
 * (value, failed outcome), then, once Redis confirmed it, the log's part
 * (the log entry, the message). In that order: whoever hears the message,
 * or reads the entry when it resyncs after being deaf, drops its copy and
 * asks Redis again, and must find the value gone by then. Log first, a
 * resync or a message landing between the two parts would read the old
 * value back and keep it, purge confirmed and all. Key first, an instance
 * not told yet serves its copy a moment longer, as before any purge is
 * told; and a log part that fails leaves the purge unconfirmed, to be
 * replayed whole (deleting again is harmless, a second entry only drops
 * copies again). */
static void
purge_send(struct corral_redis_tier *t, const void *key, size_t keylen,
           corral_tier_done_cb *cb, void *arg, bool replayed)
{
    struct op *op = op_new(t, OP_PURGE, key, keylen, arg);
    op->done_cb = cb;
    op->replayed = replayed;
    if (!replayed)
        own_note(t, key, keylen);
    struct kbuf k, l;
    kbuf_make(&k, t, KIND_VALUE, key, keylen);
    kbuf_make(&l, t, KIND_LEASE, key, keylen);
    const char *argv[2] = {k.p, l.p};
    size_t lens[2] = {k.len, l.len};
    corral_redis_eval(t->conn, t->purge_key, purge_key_reply, op, 2, 2, argv,
                      lens);
    kbuf_free(&k);
    kbuf_free(&l);
}

static void
redis_del(void *ctx, const void *key, size_t keylen, corral_tier_done_cb *cb,
          void *arg)
{
    purge_send(ctx, key, keylen, cb, arg, false);
}

/* ---- resync ---- */

/* Compares stream ids "<ms>-<seq>". */
static int
id_cmp(const char *a, const char *b)
{
    unsigned long long am = 0, as = 0, bm = 0, bs = 0;
    sscanf(a, "%llu-%llu", &am, &as);
    sscanf(b, "%llu-%llu", &bm, &bs);
    if (am != bm)
        return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs;
}

static void start_resync(struct corral_redis_tier *t);

static bool
is_str(const redisReply *e)
{
    return e != NULL && e->type == REDIS_REPLY_STRING;
}

static void
resync_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    op_free(op);
    if (t == NULL)
        return;
    t->resync_running = false;
    if (error != 0 || rep->type != REDIS_REPLY_ARRAY || rep->elements != 5 ||
        !is_str(rep->element[0]) ||
        rep->element[4]->type != REDIS_REPLY_ARRAY) {
        arm_tick(t); /* try again */
        return;
    }
    const redisReply *epoch = rep->element[0], *first = rep->element[1];
    const redisReply *last = rep->element[2], *es = rep->element[4];
    long long len = rep->element[3]->type == REDIS_REPLY_INTEGER
                        ? rep->element[3]->integer
                        : 0;
    /* A new epoch: Redis lost its data (restarted empty, flushed), the
     * purge log with it. A log that starts after the last entry applied
     * and has been trimmed: entries are gone. Either way, purges may
     * have been missed. */
    bool lost = t->epoch[0] != '\0' && strcmp(t->epoch, epoch->str) != 0;
    if (!lost && is_str(first) && id_cmp(first->str, t->last_id) > 0 &&
        len >= PURGE_LOG_MAX)
        lost = true;
    snprintf(t->epoch, sizeof(t->epoch), "%s", epoch->str);
    t->resync_lost |= lost;
    if (t->resync_lost) {
        snprintf(t->last_id, sizeof(t->last_id), "%s",
                 is_str(last) ? last->str : "0-0");
    } else {
        for (size_t i = 0; i < es->elements; i++) {
            const redisReply *e = es->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                !is_str(e->element[0]))
                continue;
            const redisReply *f = e->element[1];
            for (size_t j = 0;
                 f->type == REDIS_REPLY_ARRAY && j + 1 < f->elements; j += 2)
                if (is_str(f->element[j]) && is_str(f->element[j + 1]) &&
                    strcmp(f->element[j]->str, "k") == 0 && t->ev &&
                    t->ev->invalidated)
                    t->ev->invalidated(f->element[j + 1]->str,
                                       (size_t)f->element[j + 1]->len,
                                       t->ev_arg);
            snprintf(t->last_id, sizeof(t->last_id), "%s", e->element[0]->str);
        }
        if (es->elements >= RESYNC_PAGE) {
            start_resync(t); /* more to read */
            return;
        }
    }
    lost = t->resync_lost;
    t->resync_pending = false;
    t->resync_lost = false;
    t->stats.resyncs++;
    if (lost) {
        t->stats.resync_losses++;
        corral_log(CORRAL_LOG_NOTICE,
                   "redis %s: purges may have been missed (Redis lost its "
                   "data, or the purge log was trimmed): every cached copy "
                   "is dropped",
                   corral_redis_name(t->conn));
    }
    if (t->ev && t->ev->resync)
        t->ev->resync(lost, t->ev_arg);
    replay(t);
}

/* A new epoch to propose: never one proposed before, by anyone, so a
 * flush is seen even when this instance wrote the epoch it replaced. */
static const char *
propose_epoch(struct corral_redis_tier *t)
{
    snprintf(t->epoch_new, sizeof(t->epoch_new), "%s.%" PRIu64, t->id,
             ++t->epochs);
    return t->epoch_new;
}

static void
start_resync(struct corral_redis_tier *t)
{
    if (t->resync_running || !t->resync_pending ||
        !corral_redis_listening(t->conn))
        return;
    t->resync_running = true;
    struct op *op = op_new(t, OP_RESYNC, NULL, 0, NULL);
    char page[16];
    snprintf(page, sizeof(page), "%d", RESYNC_PAGE);
    const char *argv[5] = {t->epoch_key, t->stream, propose_epoch(t),
                           t->last_id, page};
    corral_redis_eval(t->conn, t->resync, resync_reply, op, 2, 5, argv, NULL);
}

/* The purge log must be read on from the last entry applied: the
 * subscription is new, the epoch changed, or a message was lost (unheard,
 * counted). */
static void
need_resync(struct corral_redis_tier *t, bool unheard)
{
    t->stats.unheard += unheard;
    t->resync_pending = true;
    start_resync(t);
}

/* ---- what the fleet says ---- */

/* "<word> " at *p: the word, and *p past it. */
static bool
word(const char **p, const char *end, const char **w, size_t *n)
{
    const char *sp = memchr(*p, ' ', (size_t)(end - *p));
    if (sp == NULL || sp == *p)
        return false;
    *w = *p;
    *n = (size_t)(sp - *p);
    *p = sp + 1;
    return true;
}

static uint64_t
number(const char *w, size_t n, bool *ok)
{
    uint64_t v = 0;
    *ok = n > 0 && n < 20;
    for (size_t i = 0; *ok && i < n; i++) {
        if (w[i] < '0' || w[i] > '9')
            *ok = false;
        else
            v = v * 10 + (uint64_t)(w[i] - '0');
    }
    return v;
}

static void
on_message(const char *msg, size_t len, void *arg)
{
    struct corral_redis_tier *t = arg;
    const char *p = msg + 2, *end = msg + len, *w;
    size_t n;
    bool ok;
    if (len < 4 || msg[1] != ' ' || t->ev == NULL)
        return;
    if (msg[0] == 'p') { /* p <id>[/<previous>] <key> */
        if (!word(&p, end, &w, &n) || n >= 2 * sizeof(t->last_id) || p == end)
            return;
        char id[2 * sizeof(t->last_id)];
        memcpy(id, w, n);
        id[n] = '\0';
        char *prev = strchr(id, '/');
        if (prev != NULL)
            *prev++ = '\0';
        size_t idlen = strlen(id);
        if (idlen >= sizeof(t->last_id))
            return;
        if (!own_heard(t, p, (size_t)(end - p)) && t->ev->invalidated)
            t->ev->invalidated(p, (size_t)(end - p), t->ev_arg);
        if (t->resync_pending)
            return; /* the resync reads on from last_id */
        /* An entry between the last one applied and this one: its message
         * was lost, and the log has it. */
        if (prev != NULL && id_cmp(prev, t->last_id) > 0) {
            need_resync(t, true);
            return;
        }
        if (id_cmp(id, t->last_id) > 0)
            memcpy(t->last_id, id, idlen + 1);
        return;
    }
    if (!word(&p, end, &w, &n))
        return;
    if (n == strlen(t->id) && memcmp(w, t->id, n) == 0)
        return; /* our own */
    struct corral_outcome o = {.kind = CORRAL_OUTCOME_ABANDONED};
    char message[MESSAGE_MAX + 1];
    if (msg[0] == 's') { /* <stored at> <key> */
        if (!word(&p, end, &w, &n))
            return;
        o.stored_at = number(w, n, &ok);
        if (!ok)
            return;
        o.kind = CORRAL_OUTCOME_STORED;
    } else if (msg[0] == 'f') { /* <retry> <errno> <len>:<message><key> */
        if (!word(&p, end, &w, &n))
            return;
        o.retry_ms = number(w, n, &ok);
        if (!ok || !word(&p, end, &w, &n))
            return;
        uint64_t e = number(w, n, &ok);
        if (!ok || e == 0 || e >= 4096)
            return;
        const char *colon = memchr(p, ':', (size_t)(end - p));
        if (colon == NULL)
            return;
        uint64_t mlen = number(p, (size_t)(colon - p), &ok);
        if (!ok || mlen > MESSAGE_MAX || mlen > (uint64_t)(end - colon - 1))
            return;
        memcpy(message, colon + 1, mlen);
        message[mlen] = '\0';
        o.kind = CORRAL_OUTCOME_FAILED;
        o.error = -(int)e;
        o.message = message;
        p = colon + 1 + mlen;
    } else if (msg[0] != 'a') {
        return;
    }
    if (p < end && t->ev->released)
        t->ev->released(p, (size_t)(end - p), &o, t->ev_arg);
}

/* The epoch changed under a connection that stayed up: Redis lost its
 * data, and a resync says so. Or the purge log ends, as it did at the
 * last read a second ago, with an entry this instance has not heard: its
 * message was lost without the subscriber noticing (a cluster node that
 * publishes before its bus links are up after a restart reaches only its
 * own subscribers), and a resync applies it. */
static void
epoch_reply(const redisReply *rep, int error, void *arg)
{
    struct op *op = arg;
    struct corral_redis_tier *t = op_done(op);
    op_free(op);
    if (t == NULL)
        return;
    t->epoch_asking = false;
    if (error != 0 || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        !is_str(rep->element[0]) || t->epoch[0] == '\0')
        return;
    const redisReply *last = rep->element[1];
    bool unheard = is_str(last) && id_cmp(last->str, t->last_id) > 0 &&
                   strcmp(last->str, t->log_last) == 0;
    snprintf(t->log_last, sizeof(t->log_last), "%s",
             is_str(last) ? last->str : "");
    if (strcmp(rep->element[0]->str, t->epoch) == 0 && !unheard)
        return;
    need_resync(t, unheard);
}

static void
epoch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis_tier *t = arg;
    (void)fd;
    (void)what;
    if (t->epoch_asking || t->resync_pending || !corral_redis_ready(t->conn))
        return;
    t->epoch_asking = true;
    struct op *op = op_new(t, OP_RESYNC, NULL, 0, NULL);
    const char *argv[3] = {t->epoch_key, t->stream, propose_epoch(t)};
    corral_redis_eval(t->conn, t->epoch_read, epoch_reply, op, 2, 3, argv,
                      NULL);
}

static void
on_subscribed(void *arg)
{
    need_resync(arg, false);
}

static void
on_lost(void *arg)
{
    struct corral_redis_tier *t = arg;
    t->resync_pending = true;
    if (t->ev && t->ev->deaf)
        t->ev->deaf(t->ev_arg);
}

static const struct corral_redis_listener listener = {
    .message = on_message,
    .subscribed = on_subscribed,
    .lost = on_lost,
};

static void
redis_listen(void *ctx, const struct corral_tier_events *ev, void *arg)
{
    struct corral_redis_tier *t = ctx;
    t->ev = ev;
    t->ev_arg = arg;
}

/* Every RENEW_MS while there is work: renew the leases, and retry a
 * resync or a replay that could not run. */
static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis_tier *t = arg;
    (void)fd;
    (void)what;
    if (!TAILQ_EMPTY(&t->held))
        renew(t);
    if (t->resync_pending)
        start_resync(t);
    else if (!TAILQ_EMPTY(&t->replays) && corral_redis_ready(t->conn))
        replay(t);
    if (!TAILQ_EMPTY(&t->held) || t->resync_pending ||
        !TAILQ_EMPTY(&t->replays))
        arm_tick(t);
}

const struct corral_tier corral_redis_tier_ops = {
    .name = "redis",
    .get = redis_get,
    .set = redis_set,
    .del = redis_del,
    .listen = redis_listen,
    .acquire = redis_acquire,
    .release = redis_release,
};

/* ---- lifecycle ---- */

struct corral_redis_tier *
corral_redis_tier_new(struct event_base *base, struct corral_redis *conn,
                      const struct corral_redis_tier_options *o, char *err,
                      size_t errlen)
{
    if (base == NULL || conn == NULL) {
        snprintf(err, errlen, "redis tier: no connection");
        return NULL;
    }
    struct corral_redis_tier *t = xcalloc(1, sizeof(*t));
    const char *prefix = o && o->prefix ? o->prefix : "";
    unsigned db = o ? o->db : 0;
    t->base = base;
    t->conn = conn;
    t->prefix = xstrndup(prefix, strlen(prefix));
    t->plen = strlen(prefix);
    t->max_value = o && o->max_value_bytes ? o->max_value_bytes : 1u << 20;
    snprintf(t->max_value_str, sizeof(t->max_value_str), "%zu", t->max_value);
    t->hit_share = SHARE_ONE; /* read first, until misses prevail */
    if (asprintf(&t->channel, "%sl2:%u", prefix, db) < 0 ||
        asprintf(&t->stream, "%s" CORRAL_REDIS_FLEET_TAG "purges", prefix) <
            0 ||
        asprintf(&t->epoch_key, "%s" CORRAL_REDIS_FLEET_TAG "epoch", prefix) <
            0)
        abort(); /* the policy of xalloc.h */
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
        nonce = (uint64_t)(uintptr_t)t ^ corral_now_ms();
    snprintf(t->id, sizeof(t->id), "%d-%016" PRIx64, (int)getpid(), nonce);
    /* Purges from a minute before this instance started on may concern
     * what it caches before it first hears the fleet. */
    uint64_t start = corral_wall_ms();
    snprintf(t->last_id, sizeof(t->last_id), "%" PRIu64 "-0",
             start > 60000 ? start - 60000 : 0);
    t->resync_pending = true;
    TAILQ_INIT(&t->ops);
    TAILQ_INIT(&t->held);
    TAILQ_INIT(&t->replays);
    t->tick_ev = evtimer_new(base, tick_cb, t);
    t->epoch_ev = event_new(base, -1, EV_PERSIST, epoch_cb, t);
    struct timeval every = corral_ms_to_tv(EPOCH_EVERY_MS);
    if (t->tick_ev == NULL || t->epoch_ev == NULL ||
        event_add(t->epoch_ev, &every) != 0)
        abort();
    t->acquire = corral_redis_script_new(conn, acquire_script);
    t->lease = corral_redis_script_new(conn, lease_script);
    t->release = corral_redis_script_new(conn, release_script);
    t->renew = corral_redis_script_new(conn, renew_script);
    t->purge_key = corral_redis_script_new(conn, purge_key_script);
    t->purge_outcome = corral_redis_script_new(conn, purge_outcome_script);
    t->purge_log = corral_redis_script_new(conn, purge_log_script);
    t->resync = corral_redis_script_new(conn, resync_script);
    t->epoch_read = corral_redis_script_new(conn, epoch_script);
    if (corral_redis_subscribe(conn, t->channel, &listener, t) != 0) {
        snprintf(err, errlen, "redis tier: too many subscriptions");
        corral_redis_tier_free(t);
        return NULL;
    }
    return t;
}

void
corral_redis_tier_free(struct corral_redis_tier *t)
{
    if (t == NULL)
        return;
    corral_redis_subscribe(t->conn, t->channel, NULL, NULL);
    struct corral_tier_lease *l;
    static const struct corral_outcome gone = {.kind =
                                                   CORRAL_OUTCOME_ABANDONED};
    while ((l = TAILQ_FIRST(&t->held)) != NULL)
        redis_release(t, l, &gone);
    /* Owed answers: -ECANCELED now; the connection's callbacks later only
     * free the orphans. */
    struct op *op;
    while ((op = TAILQ_FIRST(&t->ops)) != NULL) {
        TAILQ_REMOVE(&t->ops, op, link);
        op->listed = false;
        op->t = NULL;
        if (op->deadline_ev != NULL)
            event_del(op->deadline_ev);
        if (op->get_cb)
            op->get_cb(NULL, -ECANCELED, op->arg);
        if (op->acquire_cb) {
            struct corral_tier_answer a = {.verdict = CORRAL_TIER_UNKNOWN,
                                           .error = -ECANCELED};
            acquire_answer(op, &a);
        }
        if (op->done_cb)
            op->done_cb(-ECANCELED, op->arg);
        op->get_cb = NULL;
        op->done_cb = NULL;
    }
    struct replay *rp;
    while ((rp = TAILQ_FIRST(&t->replays)) != NULL) {
        TAILQ_REMOVE(&t->replays, rp, link);
        free(rp);
    }
    for (size_t i = 0; i < OWN_MAX; i++)
        free(t->own[i].key);
    event_free(t->tick_ev);
    event_free(t->epoch_ev);
    free(t->prefix);
    free(t->channel);
    free(t->stream);
    free(t->epoch_key);
    free(t);
}

const char *
corral_redis_tier_id(const struct corral_redis_tier *t)
{
    return t->id;
}

void
corral_redis_tier_stats(const struct corral_redis_tier *t,
                        struct corral_redis_tier_stats *out)
{
    *out = t->stats;
}
