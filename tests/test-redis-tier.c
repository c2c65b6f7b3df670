/* test-redis-tier.c — the L2 tier (corral/redis_tier.h) on a real
 * redis-server: values restored exactly, garbage, wrong types and values
 * over max_value_bytes as counted misses; acquire's verdicts (value, lease
 * won, held, failed) and leases that live a second unless renewed;
 * outcomes published to the other instances; a lease granted after its
 * asker gave up is given back; purges confirmed, or kept and replayed; a
 * deaf subscriber's resync replays the purge log, and says "lost" when
 * Redis lost its data; a key's names share one slot whatever its bytes. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <strings.h>

#include "corral/cache.h"
#include "corral/cluster.h"
#include "corral/redis.h"
#include "corral/redis_tier.h"
#include "corral/value.h"
#include "redisd.h"

#define MAX_VALUE 4096

struct inst {
    struct corral_redis *conn;
    struct corral_redis_tier *tier;
};

struct events {
    int invalidated, released, resyncs, lost;
    enum corral_outcome_kind kind;
    int error;
    uint64_t retry_ms;
    char key[64], message[128];
};

static void
ev_invalidated(const void *key, size_t keylen, void *arg)
{
    struct events *e = arg;
    e->invalidated++;
    snprintf(e->key, sizeof(e->key), "%.*s", (int)keylen, (const char *)key);
}

static void
ev_released(const void *key, size_t keylen, const struct corral_outcome *o,
            void *arg)
{
    struct events *e = arg;
    e->released++;
    e->kind = o->kind;
    e->error = o->error;
    e->retry_ms = o->retry_ms;
    snprintf(e->message, sizeof(e->message), "%s",
             o->message ? o->message : "");
    snprintf(e->key, sizeof(e->key), "%.*s", (int)keylen, (const char *)key);
}

static void
ev_resync(bool lost, void *arg)
{
    struct events *e = arg;
    e->resyncs++;
    e->lost += lost;
}

static const struct corral_tier_events events = {
    .invalidated = ev_invalidated,
    .released = ev_released,
    .resync = ev_resync,
};

static struct inst
inst_new(uint64_t timeout_ms, struct events *ev)
{
    struct corral_redis_options o = {
        .host = "127.0.0.1", .port = redisd_port, .timeout_ms = timeout_ms};
    struct corral_redis_tier_options to = {.prefix = "t:",
                                           .max_value_bytes = MAX_VALUE};
    char err[128];
    struct inst i;
    i.conn = corral_redis_new(base, &o, err, sizeof(err));
    CHECK(i.conn != NULL);
    i.tier = corral_redis_tier_new(base, i.conn, &to, err, sizeof(err));
    CHECK(i.tier != NULL);
    if (ev != NULL)
        corral_redis_tier_ops.listen(i.tier, &events, ev);
    RUN_UNTIL(base,
              corral_redis_ready(i.conn) && corral_redis_listening(i.conn),
              2000);
    CHECK(corral_redis_ready(i.conn));
    if (ev != NULL) {
        RUN_UNTIL(base, ev->resyncs > 0, 2000);
        CHECK_EQ_INT(ev->resyncs, 1); /* the first resync: nothing lost */
        CHECK_EQ_INT(ev->lost, 0);
    }
    return i;
}

static void
inst_free(struct inst *i)
{
    corral_redis_tier_free(i->tier);
    corral_redis_free(i->conn);
}

static struct corral_redis_tier_stats
stats(const struct inst *i)
{
    struct corral_redis_tier_stats st;
    corral_redis_tier_stats(i->tier, &st);
    return st;
}

static struct corral_value *
value(const char *key, const char *body, uint64_t stored, uint64_t expires)
{
    struct corral_value *v =
        corral_value_new(key, strlen(key), body, strlen(body), "text/plain", 0);
    CHECK(v != NULL);
    corral_value_set_times(v, stored, expires, 0, 0);
    return v;
}

struct got {
    int calls, error;
    struct corral_value *v;
};

static void
got_cb(struct corral_value *v, int error, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->error = error;
    g->v = v;
}

static struct got
get(struct inst *i, const char *key)
{
    struct got g = {0};
    corral_redis_tier_ops.get(i->tier, key, strlen(key), got_cb, &g);
    CHECK_EQ_INT(g.calls, 0); /* never from inside get() */
    RUN_UNTIL(base, g.calls > 0, 2000);
    CHECK_EQ_INT(g.calls, 1);
    return g;
}

struct acq {
    int calls;
    enum corral_tier_verdict verdict;
    struct corral_value *value;
    struct corral_tier_lease *lease;
    uint64_t ms;
    int error;
    char message[128];
};

static void
acq_cb(const struct corral_tier_answer *a, void *arg)
{
    struct acq *x = arg;
    x->calls++;
    x->verdict = a->verdict;
    x->value = a->value;
    x->lease = a->lease;
    x->ms = a->ms;
    x->error = a->error;
    snprintf(x->message, sizeof(x->message), "%s",
             a->message ? a->message : "");
}

static struct acq
acquire(struct inst *i, const char *key, uint64_t now, uint64_t newer)
{
    struct acq x = {0};
    struct corral_tier_want want = {.now_ms = now, .newer_than = newer};
    corral_redis_tier_ops.acquire(i->tier, key, strlen(key), &want, acq_cb, &x);
    CHECK_EQ_INT(x.calls, 0);
    RUN_UNTIL(base, x.calls > 0, 3000);
    CHECK_EQ_INT(x.calls, 1);
    return x;
}

/* The tier's name in Redis of key's value or lease. */
static const char *
name(const char *kind, const char *key, size_t keylen)
{
    static char buf[4][256];
    static unsigned next;
    char *b = buf[next++ % 4];
    size_t n = corral_redis_tagged_name(b, sizeof(buf[0]) - 1, "t:", kind, key,
                                        keylen);
    CHECK(n < sizeof(buf[0]));
    b[n] = '\0';
    return b;
}
#define VNAME(k) name("v:", (k), strlen(k))
#define LNAME(k) name("l:", (k), strlen(k))

static long long
pttl(const char *key)
{
    redisReply *r = sync_cmd("PTTL %s", key);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -3;
    freeReplyObject(r);
    return n;
}

static bool
str_starts(const char *key, const char *prefix)
{
    redisReply *r = sync_cmd("GET %s", key);
    bool ok = r && r->type == REDIS_REPLY_STRING &&
              strncmp(r->str, prefix, strlen(prefix)) == 0;
    freeReplyObject(r);
    return ok;
}

/* A key's value and lease share one slot whatever its bytes: braces in
 * it, or none at all (an empty "{}" would hash the whole name and split
 * them); names of two keys, or two kinds, never meet; keys spread over
 * the slots; and the tier reads and writes under those names. */
static void
test_names(void)
{
    static const char *const keys[] = {
        "",     "{",    "}",           "{}", "}{",  "a{b}c",
        "{x}1", "{x}2", "/api/{coin}", "v:", "l:x", "x\x00y"};
    size_t n = sizeof(keys) / sizeof(keys[0]);
    char v[16][256], l[16][256];
    for (size_t i = 0; i < n; i++) {
        size_t len = i == n - 1 ? 3 : strlen(keys[i]);
        snprintf(v[i], sizeof(v[i]), "%s", name("v:", keys[i], len));
        snprintf(l[i], sizeof(l[i]), "%s", name("l:", keys[i], len));
        CHECK(strcmp(v[i], l[i]) != 0);
        CHECK_EQ_INT(corral_redis_key_slot(v[i], strlen(v[i])),
                     corral_redis_key_slot(l[i], strlen(l[i])));
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(v[i], v[j]) != 0 && strcmp(v[i], l[j]) != 0 &&
                  strcmp(l[i], v[j]) != 0);
    }
    static bool seen[CORRAL_REDIS_SLOTS];
    unsigned distinct = 0;
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof(key), "/api/price/{%d}", i);
        const char *vn = VNAME(key);
        unsigned slot = corral_redis_key_slot(vn, strlen(vn));
        distinct += !seen[slot];
        seen[slot] = true;
    }
    CHECK(distinct > 150);

    struct inst a = inst_new(300, NULL);
    struct corral_value *val = value("{b}x", "1", 1000, 5000000000000ull);
    corral_redis_tier_ops.set(a.tier, val, 60000);
    run_for(base, 50);
    CHECK(pttl(VNAME("{b}x")) > 0);
    struct got g = get(&a, "{b}x");
    CHECK_EQ_INT(g.error, 0);
    corral_value_unref(g.v);
    struct acq x = acquire(&a, "}{", 1000, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
    CHECK(str_starts(LNAME("}{"), "H:"));
    struct corral_outcome gone = {.kind = CORRAL_OUTCOME_ABANDONED};
    corral_redis_tier_ops.release(a.tier, x.lease, &gone);
    run_for(base, 50);
    CHECK_EQ_INT(pttl(LNAME("}{")), -2);
    corral_value_unref(val);
    inst_free(&a);
}

/* Set and get restore a value exactly; what is not corral's is a counted
 * miss; a value over max_value_bytes is neither written nor read. */
static void
test_values(void)
{
    struct inst a = inst_new(300, NULL);
    struct corral_value *v = value("k1", "{\"x\":1}", 1000, 5000000000000ull);
    corral_redis_tier_ops.set(a.tier, v, 60000);
    struct got g = get(&a, "k1");
    CHECK_EQ_INT(g.error, 0);
    CHECK(g.v != NULL);
    CHECK_EQ_STR(corral_value_body(g.v), "{\"x\":1}");
    CHECK_EQ_STR(corral_value_etag(g.v), corral_value_etag(v));
    CHECK_EQ_INT(corral_value_stored_at(g.v), 1000);
    corral_value_unref(g.v);
    CHECK(pttl(VNAME("k1")) > 50000 && pttl(VNAME("k1")) <= 60000);
    g = get(&a, "nope");
    CHECK_EQ_INT(g.error, -ENOENT);
    freeReplyObject(sync_cmd("SET %s garbage", VNAME("junk")));
    freeReplyObject(
        sync_cmd("SET %s %b", VNAME("v9"), "CRV\x09xxxxxxxx", (size_t)12));
    freeReplyObject(sync_cmd("HSET %s f v", VNAME("hash")));
    CHECK_EQ_INT(get(&a, "junk").error, -ENOENT);
    CHECK_EQ_INT(get(&a, "v9").error, -ENOENT);
    CHECK_EQ_INT(get(&a, "hash").error, -ENOENT);
    CHECK_EQ_INT(stats(&a).bad_values, 3);
    /* Too large: not written (counted), and a planted one not read. */
    char big[MAX_VALUE + 10];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    struct corral_value *bv = value("big", big, 1000, 5000000000000ull);
    corral_redis_tier_ops.set(a.tier, bv, 60000);
    run_for(base, 50);
    CHECK_EQ_INT(pttl(VNAME("big")), -2);
    CHECK_EQ_INT(stats(&a).too_large, 1);
    freeReplyObject(sync_cmd("SET %s %s", VNAME("big"), big));
    CHECK_EQ_INT(get(&a, "big").error, -ENOENT);
    CHECK_EQ_INT(stats(&a).large_found, 1);
    corral_value_unref(bv);
    corral_value_unref(v);
    inst_free(&a);
}

/* Commands Redis ran (its slow log, which logs every command while the
 * test runs) named cmd with one of the key's names (value or lease) among
 * their arguments: scripts of the tier's own (the epoch read, the resync)
 * do not count. */
static long long
calls(const char *cmd, const char *key)
{
    redisReply *r = sync_cmd("SLOWLOG GET -1");
    CHECK(r != NULL && r->type == REDIS_REPLY_ARRAY);
    const char *vn = VNAME(key), *ln = LNAME(key);
    long long n = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
            e->element[3]->type != REDIS_REPLY_ARRAY ||
            e->element[3]->elements < 2)
            continue;
        const redisReply *args = e->element[3];
        if (strcasecmp(args->element[0]->str, cmd) != 0)
            continue;
        for (size_t j = 1; j < args->elements; j++)
            if (strcmp(args->element[j]->str, vn) == 0 ||
                strcmp(args->element[j]->str, ln) == 0) {
                n++;
                break;
            }
    }
    freeReplyObject(r);
    return n;
}

/* An acquire reads the value with a plain GETRANGE first: a fresh value
 * is answered with no script at all; a stale, missing, too large or
 * foreign one (a hash under the name: WRONGTYPE, counted once, and no
 * failure of Redis) goes on to the acquire script, which takes the lease
 * and hands back the stale copy. After a run of misses it goes to the
 * script at once, until hits prevail again. */
static void
test_plain_read(void)
{
    freeReplyObject(sync_cmd("CONFIG SET slowlog-log-slower-than 0"));
    freeReplyObject(sync_cmd("CONFIG SET slowlog-max-len 100000"));
    struct inst a = inst_new(300, NULL);
    uint64_t now = 1000000;
    struct corral_value *v = value("/pr", "{\"x\":1}", now - 10, now + 60000);
    corral_redis_tier_ops.set(a.tier, v, 60000);
    run_for(base, 50);
    freeReplyObject(sync_cmd("SLOWLOG RESET"));
    for (int i = 0; i < 5; i++) {
        struct acq x = acquire(&a, "/pr", now, 0);
        CHECK_EQ_INT(x.verdict, CORRAL_TIER_VALUE);
        CHECK(x.value != NULL && x.lease == NULL);
        CHECK_EQ_STR(corral_value_body(x.value), "{\"x\":1}");
        corral_value_unref(x.value);
    }
    CHECK_EQ_INT(calls("getrange", "/pr"), 5);
    CHECK_EQ_INT(calls("evalsha", "/pr"), 0);

    /* Stale for this asker: the copy comes with the lease. */
    struct acq x = acquire(&a, "/pr", now + 60001, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
    CHECK(x.value != NULL && x.lease != NULL);
    CHECK_EQ_STR(corral_value_body(x.value), "{\"x\":1}");
    CHECK_EQ_INT(calls("evalsha", "/pr"), 1);
    corral_value_unref(x.value);
    struct corral_outcome gone = {.kind = CORRAL_OUTCOME_ABANDONED};
    corral_redis_tier_ops.release(a.tier, x.lease, &gone);
    /* Older than the copy a refresh has: the same. */
    x = acquire(&a, "/pr", now, now - 10);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
    CHECK(x.lease != NULL);
    corral_value_unref(x.value);
    corral_redis_tier_ops.release(a.tier, x.lease, &gone);
    run_for(base, 50);

    /* Unusable: counted once, the lease taken, Redis still up. */
    struct corral_redis_stats rs0, rs1;
    corral_redis_stats(a.conn, &rs0);
    struct corral_redis_tier_stats st = stats(&a);
    char big[MAX_VALUE + 2];
    memset(big, 'x', MAX_VALUE + 1);
    big[MAX_VALUE + 1] = '\0';
    freeReplyObject(sync_cmd("SET %s %s", VNAME("/big"), big));
    freeReplyObject(sync_cmd("HSET %s f v", VNAME("/hash")));
    freeReplyObject(sync_cmd("SET %s garbage", VNAME("/junk")));
    const char *keys[3] = {"/big", "/hash", "/junk"};
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 3; i++) {
            x = acquire(&a, keys[i], now, 0);
            CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
            CHECK(x.value == NULL && x.lease != NULL);
            corral_redis_tier_ops.release(a.tier, x.lease, &gone);
        }
    CHECK_EQ_INT(stats(&a).large_found - st.large_found, 2);
    CHECK_EQ_INT(stats(&a).bad_values - st.bad_values, 4);
    corral_redis_stats(a.conn, &rs1);
    CHECK_EQ_INT(rs1.errors - rs0.errors, 0);
    CHECK_EQ_INT(rs1.state, CORRAL_REDIS_UP);
    /* Exactly max_value bytes is not too large: read, and a bad value. */
    freeReplyObject(
        sync_cmd("SET %s %b", VNAME("/edge"), big, (size_t)MAX_VALUE - 1));
    st = stats(&a);
    struct got g = get(&a, "/edge");
    CHECK_EQ_INT(g.error, -ENOENT);
    CHECK_EQ_INT(stats(&a).large_found - st.large_found, 0);
    CHECK_EQ_INT(stats(&a).bad_values - st.bad_values, 1);
    freeReplyObject(
        sync_cmd("SET %s %b", VNAME("/edge"), big, (size_t)MAX_VALUE));
    g = get(&a, "/edge");
    CHECK_EQ_INT(g.error, -ENOENT);
    CHECK_EQ_INT(stats(&a).large_found - st.large_found, 0);
    CHECK_EQ_INT(stats(&a).bad_values - st.bad_values, 2);
    freeReplyObject(sync_cmd("APPEND %s x", VNAME("/edge")));
    g = get(&a, "/edge");
    CHECK_EQ_INT(g.error, -ENOENT);
    CHECK_EQ_INT(stats(&a).large_found - st.large_found, 1);

    /* Missing: the script, and the lease. */
    x = acquire(&a, "/none", now, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
    CHECK_EQ_INT(calls("getrange", "/none"), 1);
    CHECK_EQ_INT(calls("evalsha", "/none"), 1);
    corral_redis_tier_ops.release(a.tier, x.lease, &gone);
    run_for(base, 50);
    corral_value_unref(v);
    inst_free(&a);

    /* While misses prevail (a cold start), an acquire goes straight to
     * the script: one round trip; hits it finds bring the read back. */
    struct inst b = inst_new(300, NULL);
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "/cold%d", i);
        x = acquire(&b, key, now, 0);
        CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
        corral_redis_tier_ops.release(b.tier, x.lease, &gone);
    }
    run_for(base, 50);
    x = acquire(&b, "/cold-last", now, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
    CHECK_EQ_INT(calls("getrange", "/cold-last"), 0);
    CHECK_EQ_INT(calls("evalsha", "/cold-last"), 1);
    corral_redis_tier_ops.release(b.tier, x.lease, &gone);
    v = value("/warm", "{}", now - 10, now + 60000);
    corral_redis_tier_ops.set(b.tier, v, 60000);
    run_for(base, 50);
    int via_script = 0;
    for (int i = 0; i < 40 && calls("getrange", "/warm") == 0;
         i++, via_script++) {
        x = acquire(&b, "/warm", now, 0);
        CHECK_EQ_INT(x.verdict, CORRAL_TIER_VALUE);
        corral_value_unref(x.value);
    }
    CHECK(via_script > 1 && via_script < 40);
    long long scripts = calls("evalsha", "/warm");
    x = acquire(&b, "/warm", now, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_VALUE);
    corral_value_unref(x.value);
    CHECK_EQ_INT(calls("evalsha", "/warm"), scripts);
    CHECK_EQ_INT(calls("getrange", "/warm"), 2);
    corral_value_unref(v);
    inst_free(&b);
    freeReplyObject(sync_cmd("CONFIG SET slowlog-log-slower-than 10000"));
    freeReplyObject(sync_cmd("SLOWLOG RESET"));
}

/* One holder fleet-wide: won, held (with the holder's time left), the
 * holder's renewals keep it past a second, its outcome reaches the other
 * instance (not itself), and a failure outcome answers every acquire until
 * its backoff ends. */
static void
test_leases(void)
{
    struct events ea = {0}, eb = {0};
    struct inst a = inst_new(300, &ea), b = inst_new(300, &eb);
    uint64_t now = 1000000;
    struct acq x = acquire(&a, "/k", now, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
    CHECK(x.lease != NULL && x.value == NULL);
    CHECK(str_starts(LNAME("/k"), "H:"));
    CHECK(pttl(LNAME("/k")) > 0 && pttl(LNAME("/k")) <= 1000);
    struct acq y = acquire(&b, "/k", now, 0);
    CHECK_EQ_INT(y.verdict, CORRAL_TIER_HELD);
    CHECK(y.ms > 0 && y.ms <= 1000);
    run_for(base, 1500); /* renewed meanwhile */
    CHECK(str_starts(LNAME("/k"), "H:"));
    CHECK(pttl(LNAME("/k")) > 0);
    /* a stores, then gives the lease back: b hears "stored". */
    struct corral_value *v = value("/k", "one", now, now + 60000);
    corral_redis_tier_ops.set(a.tier, v, 60000);
    struct corral_outcome stored = {.kind = CORRAL_OUTCOME_STORED};
    corral_redis_tier_ops.release(a.tier, x.lease, &stored);
    RUN_UNTIL(base, eb.released > 0, 2000);
    CHECK_EQ_INT(eb.released, 1);
    CHECK_EQ_INT(eb.kind, CORRAL_OUTCOME_STORED);
    CHECK_EQ_STR(eb.key, "/k");
    CHECK_EQ_INT(ea.released, 0); /* not its own */
    CHECK_EQ_INT(pttl(LNAME("/k")), -2);
    y = acquire(&b, "/k", now, 0);
    CHECK_EQ_INT(y.verdict, CORRAL_TIER_VALUE);
    CHECK_EQ_STR(corral_value_body(y.value), "one");
    corral_value_unref(y.value);
    /* A refresh wants newer than its copy: the value comes along, with the
     * lease. */
    y = acquire(&b, "/k", now, now);
    CHECK_EQ_INT(y.verdict, CORRAL_TIER_WON);
    CHECK(y.value != NULL);
    corral_value_unref(y.value);
    /* b fails: the lease becomes the failure for its backoff; a hears it
     * at once, and an acquire by a gets it until it ends. */
    struct corral_outcome failed = {.kind = CORRAL_OUTCOME_FAILED,
                                    .error = -ETIMEDOUT,
                                    .message = "upstream timed out",
                                    .retry_ms = 400};
    corral_redis_tier_ops.release(b.tier, y.lease, &failed);
    RUN_UNTIL(base, ea.released > 0, 2000);
    CHECK_EQ_INT(ea.kind, CORRAL_OUTCOME_FAILED);
    CHECK_EQ_INT(ea.error, -ETIMEDOUT);
    CHECK_EQ_INT(ea.retry_ms, 400);
    CHECK_EQ_STR(ea.message, "upstream timed out");
    CHECK(str_starts(LNAME("/k"), "F:"));
    freeReplyObject(sync_cmd("DEL %s", VNAME("/k")));
    x = acquire(&a, "/k", now, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_FAILED);
    CHECK_EQ_INT(x.error, -ETIMEDOUT);
    CHECK_EQ_STR(x.message, "upstream timed out");
    CHECK(x.ms > 0 && x.ms <= 400);
    run_for(base, (int)x.ms + 20);
    x = acquire(&a, "/k", now, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_WON);
    /* A holder that dies: nobody renews, and the lease is gone within a
     * second. */
    inst_free(&a);
    CHECK(pttl(LNAME("/k")) == -2); /* a gave it back as it closed */
    y = acquire(&b, "/dead", now, 0);
    CHECK_EQ_INT(y.verdict, CORRAL_TIER_WON);
    corral_redis_tier_free(b.tier); /* the tier goes, not its renewals */
    b.tier = NULL;
    corral_redis_free(b.conn);
    freeReplyObject(sync_cmd("SET %s H:ghost PX 1000", LNAME("/dead")));
    usleep(1100 * 1000);
    CHECK_EQ_INT(pttl(LNAME("/dead")), -2);
    corral_value_unref(v);
}

/* Redis stalls while an acquire script is out (CLIENT PAUSE WRITE holds
 * scripts, not the plain read before them): the asker hears "cannot
 * tell" at its timeout; the lease Redis grants when it resumes is given
 * back at once, not left for a second. */
static void
test_late_lease(void)
{
    /* Misses first, so acquires go straight to the script: a plain read
     * would queue behind any script of the tier's own that the pause
     * holds on the one connection. The pause ends as soon as the acquire
     * timed out (more timeouts in a row would take the connection for
     * stuck and drop the late reply with it). */
    struct inst a = inst_new(300, NULL);
    struct corral_outcome gone = {.kind = CORRAL_OUTCOME_ABANDONED};
    for (int i = 0; i < 20; i++) {
        char key[32];
        snprintf(key, sizeof(key), "/miss%d", i);
        struct acq m = acquire(&a, key, 1000, 0);
        CHECK_EQ_INT(m.verdict, CORRAL_TIER_WON);
        corral_redis_tier_ops.release(a.tier, m.lease, &gone);
    }
    run_for(base, 50);
    freeReplyObject(sync_cmd("CLIENT PAUSE 10000 WRITE"));
    struct acq x = acquire(&a, "/late", 1000, 0);
    freeReplyObject(sync_cmd("CLIENT UNPAUSE"));
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_UNKNOWN);
    CHECK_EQ_INT(x.error, -ETIMEDOUT);
    CHECK_EQ_INT(stats(&a).late_leases, 0);
    RUN_UNTIL(base, stats(&a).late_leases > 0, 3000);
    CHECK_EQ_INT(stats(&a).late_leases, 1);
    run_for(base, 50);
    CHECK_EQ_INT(pttl(LNAME("/late")), -2);
    /* The tier goes while a late reply is owed: it finds the tier gone
     * (ASan and valgrind watch), and the lease it got dies in a second. */
    freeReplyObject(sync_cmd("CLIENT PAUSE 10000 WRITE"));
    x = acquire(&a, "/orphan", 1000, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_UNKNOWN);
    corral_redis_tier_free(a.tier);
    freeReplyObject(sync_cmd("CLIENT UNPAUSE"));
    RUN_UNTIL(base, pttl(LNAME("/orphan")) > 0, 3000);
    CHECK(pttl(LNAME("/orphan")) <= 1000);
    corral_redis_free(a.conn);
    /* Stalled at the plain read: that times out, no script follows. */
    struct inst c = inst_new(100, NULL);
    redisd_stop();
    x = acquire(&c, "/stopped", 1000, 0);
    CHECK_EQ_INT(x.verdict, CORRAL_TIER_UNKNOWN);
    CHECK_EQ_INT(x.error, -ETIMEDOUT);
    redisd_cont();
    run_for(base, 200);
    CHECK_EQ_INT(pttl(LNAME("/stopped")), -2);
    CHECK_EQ_INT(stats(&c).late_leases, 0);
    inst_free(&c);
}

struct done {
    int calls, error;
};

static void
done_cb(int error, void *arg)
{
    struct done *d = arg;
    d->calls++;
    d->error = error;
}

static long long
xlen(void)
{
    redisReply *r = sync_cmd("XLEN t:{fleet}purges");
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return n;
}

/* A purge is confirmed once Redis ran it (value gone, a failure outcome
 * gone, logged, heard by every other instance: the purger applied it when
 * it gave it, and its own message, which may come late, is not applied
 * again); one Redis cannot answer is refused, kept and replayed when
 * Redis is back, and the replay's message is applied by the purger too. */
static void
test_purges(void)
{
    struct events ea = {0}, eb = {0};
    struct inst a = inst_new(100, &ea), b = inst_new(100, &eb);
    struct corral_value *v = value("/p", "old", 1000, 5000000000000ull);
    corral_redis_tier_ops.set(a.tier, v, 60000);
    freeReplyObject(sync_cmd("SET %s F:5:failed PX 60000", LNAME("/p")));
    long long n0 = xlen();
    struct done d = {0};
    corral_redis_tier_ops.del(a.tier, "/p", 2, done_cb, &d);
    CHECK_EQ_INT(d.calls, 0);
    RUN_UNTIL(base, d.calls > 0 && eb.invalidated > 0, 2000);
    run_for(base, 100); /* a's own message came too */
    CHECK_EQ_INT(d.error, 0);
    CHECK_EQ_INT(eb.invalidated, 1);
    CHECK_EQ_STR(eb.key, "/p");
    CHECK_EQ_INT(ea.invalidated, 0);
    CHECK_EQ_INT(pttl(VNAME("/p")), -2);
    CHECK_EQ_INT(pttl(LNAME("/p")), -2);
    CHECK_EQ_INT(xlen(), (n0 < 0 ? 0 : n0) + 1);
    /* Redis stalled: refused at the timeout, kept, replayed after. */
    redisd_stop();
    memset(&d, 0, sizeof(d));
    corral_redis_tier_ops.del(a.tier, "/q", 2, done_cb, &d);
    RUN_UNTIL(base, d.calls > 0, 2000);
    CHECK_EQ_INT(d.error, -ETIMEDOUT);
    CHECK_EQ_INT(stats(&a).purges_queued, 1);
    int before = eb.invalidated, a_before = ea.invalidated;
    redisd_cont();
    RUN_UNTIL(base, eb.invalidated > before && strcmp(eb.key, "/q") == 0, 3000);
    CHECK_EQ_STR(eb.key, "/q");
    RUN_UNTIL(base, ea.invalidated > a_before, 3000);
    CHECK_EQ_STR(ea.key, "/q"); /* the replay's message: the purger too */
    /* The key's part done, the log's refused (its stream is not one): not
     * confirmed, kept, and replayed whole once the log takes it. */
    corral_redis_tier_ops.set(a.tier, v, 60000);
    run_for(base, 50);
    freeReplyObject(sync_cmd("RENAME t:{fleet}purges t:saved"));
    freeReplyObject(sync_cmd("SET t:{fleet}purges not-a-stream"));
    memset(&d, 0, sizeof(d));
    before = eb.invalidated;
    corral_redis_tier_ops.del(a.tier, "/p", 2, done_cb, &d);
    RUN_UNTIL(base, d.calls > 0, 2000);
    CHECK_EQ_INT(d.error, -EIO);
    CHECK_EQ_INT(pttl(VNAME("/p")), -2); /* the key's part ran */
    CHECK_EQ_INT(stats(&a).purges_queued, 2);
    run_for(base, 400);
    CHECK_EQ_INT(eb.invalidated, before); /* nobody told */
    freeReplyObject(sync_cmd("RENAME t:saved t:{fleet}purges"));
    RUN_UNTIL(base, eb.invalidated > before, 3000);
    CHECK_EQ_STR(eb.key, "/p");
    corral_value_unref(v);
    inst_free(&a);
    inst_free(&b);
}

/* A subscriber that was deaf: a purge published meanwhile is replayed
 * from the log at its resync; after Redis lost its data (FLUSHALL), the
 * resync says "lost". */
static void
test_resync(void)
{
    struct events ea = {0}, eb = {0};
    struct inst a = inst_new(300, &ea), b = inst_new(300, &eb);
    /* A new instance applied the purges of the last minute (the log's
     * entries from test_purges). */
    CHECK_EQ_INT(eb.invalidated, 3);
    eb.invalidated = 0;
    /* Kill the subscribers and purge before they are back: b misses the
     * message, and replays it. */
    freeReplyObject(sync_cmd("CLIENT KILL TYPE pubsub"));
    struct done d = {0};
    corral_redis_tier_ops.del(a.tier, "/gap", 4, done_cb, &d);
    RUN_UNTIL(base, d.calls > 0, 2000);
    CHECK_EQ_INT(d.error, 0);
    RUN_UNTIL(base, eb.resyncs >= 2 && eb.invalidated > 0, 3000);
    CHECK_EQ_INT(eb.resyncs, 2);
    CHECK_EQ_INT(eb.lost, 0);
    CHECK_EQ_INT(eb.invalidated, 1);
    CHECK_EQ_STR(eb.key, "/gap");
    /* Redis loses everything: a new epoch at the next resync. */
    freeReplyObject(sync_cmd("FLUSHALL"));
    freeReplyObject(sync_cmd("CLIENT KILL TYPE pubsub"));
    RUN_UNTIL(base, eb.resyncs >= 3 && ea.resyncs >= 3, 3000);
    CHECK_EQ_INT(eb.lost, 1);
    CHECK_EQ_INT(ea.lost, 1);
    CHECK_EQ_INT(stats(&b).resync_losses, 1);
    /* And the next resync, with nothing lost, says so. */
    freeReplyObject(sync_cmd("CLIENT KILL TYPE pubsub"));
    RUN_UNTIL(base, eb.resyncs >= 4, 3000);
    CHECK_EQ_INT(eb.lost, 1);
    /* A flush that drops no connection: the epoch, read every second,
     * tells. */
    freeReplyObject(sync_cmd("FLUSHALL"));
    RUN_UNTIL(base, eb.lost >= 2 && ea.lost >= 2, 8000);
    CHECK_EQ_INT(eb.lost, 2);
    CHECK_EQ_INT(ea.lost, 2);
    inst_free(&a);
    inst_free(&b);
}

int
main(void)
{
    redisd_setup();
    RUN(test_names);
    RUN(test_values);
    RUN(test_plain_read);
    RUN(test_leases);
    RUN(test_late_lease);
    RUN(test_purges);
    RUN(test_resync);
    event_base_free(base);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
