/* test-fleet.c — the gateway's fleet state (fleet.h) on a real
 * redis-server: one rate window shared by two instances, admissions
 * pipelined (many in flight, exactly count granted), a pause heard by the
 * other instance at once and read by a later one at its sync, a breaker
 * opened for every instance with one probe per step for the fleet, route
 * generations raised above every instance's, written back after Redis
 * lost them, and learnt at a sync. */
#include <errno.h>
#include <hiredis/hiredis.h>

#include "corral/redis.h"
#include "fleet.h"
#include "redisd.h"

struct state {
    int paused, generations, synced;
    int breakers; /* breaker events */
    uint64_t breaker_ms, breaker_step;
    char name[64];
    uint64_t ms, gen;
    uint64_t here; /* what current() answers */
};

static void
st_paused(const char *name, uint64_t ms, void *arg)
{
    struct state *s = arg;
    s->paused++;
    s->ms = ms;
    snprintf(s->name, sizeof(s->name), "%s", name);
}

static void
st_generation(const char *path, uint64_t gen, void *arg)
{
    struct state *s = arg;
    s->generations++;
    if (gen > s->gen)
        s->gen = gen;
    snprintf(s->name, sizeof(s->name), "%s", path);
}

static void
st_breaker(const char *name, uint64_t ms, uint64_t step_ms, void *arg)
{
    struct state *s = arg;
    s->breakers++;
    s->breaker_ms = ms;
    s->breaker_step = step_ms;
    snprintf(s->name, sizeof(s->name), "%s", name);
}

static uint64_t
st_current(const char *path, void *arg)
{
    (void)path;
    return ((struct state *)arg)->here;
}

static void
st_synced(void *arg)
{
    ((struct state *)arg)->synced++;
}

static const struct corral_fleet_events events = {
    .paused = st_paused,
    .breaker = st_breaker,
    .generation = st_generation,
    .current = st_current,
    .synced = st_synced,
};

struct inst {
    struct corral_redis *conn;
    struct corral_fleet *fleet;
};

static const char *const paths[] = {"/api/{coin}"};
static const char *const ups[] = {"up"};

static struct inst
inst_new(const char *id, struct state *s)
{
    struct corral_redis_options o = {
        .host = "127.0.0.1", .port = redisd_port, .timeout_ms = 300};
    char err[128];
    struct inst i;
    i.conn = corral_redis_new(base, &o, err, sizeof(err));
    CHECK(i.conn != NULL);
    i.fleet = corral_fleet_new(base, i.conn, "t:", 0, id, &events, s);
    corral_fleet_track(i.fleet, paths, 1, ups, 1);
    RUN_UNTIL(base, corral_fleet_synced(i.fleet), 2000);
    CHECK(corral_fleet_synced(i.fleet));
    CHECK_EQ_INT(s->synced, 1);
    return i;
}

static void
inst_free(struct inst *i)
{
    corral_fleet_free(i->fleet);
    corral_redis_free(i->conn);
}

struct verdicts {
    int calls, granted, full, paused, other;
    uint64_t ms;
    char member[80];
};

static void
verdict_cb(int verdict, uint64_t ms, const char *member, void *arg)
{
    struct verdicts *v = arg;
    v->calls++;
    v->granted += verdict == 1;
    v->full += verdict == 0;
    v->paused += verdict == -EBUSY;
    v->other += verdict < 0 && verdict != -EBUSY;
    v->ms = ms;
    if (verdict == 1)
        snprintf(v->member, sizeof(v->member), "%s", member);
}

/* An upstream's name of one kind in Redis, tagged by its name. */
static const char *
upstream_name(const char *kind, const char *name)
{
    static char buf[256];
    size_t n = corral_redis_tagged_name(buf, sizeof(buf) - 1, "t:", kind, name,
                                        strlen(name));
    CHECK(n < sizeof(buf));
    buf[n] = '\0';
    return buf;
}

/* Whether member holds a place in name's window in Redis. */
static bool
in_window(const char *name, const char *member)
{
    redisReply *r =
        sync_cmd("ZSCORE %s %s", upstream_name("rate:", name), member);
    bool in = r && r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return in;
}

/* Ten admissions at once, from two instances, into a window of 3: all in
 * flight together (pipelined), exactly 3 granted; the window slides; a
 * call given back frees its place. */
static void
test_admit(void)
{
    struct state sa = {0}, sb = {0};
    struct inst a = inst_new("a", &sa), b = inst_new("b", &sb);
    struct verdicts v = {0};
    for (int i = 0; i < 10; i++)
        corral_fleet_admit(i % 2 ? a.fleet : b.fleet, "up", 3, 400, verdict_cb,
                           &v);
    CHECK_EQ_INT(v.calls, 0); /* never from inside the call */
    RUN_UNTIL(base, v.calls == 10, 2000);
    CHECK_EQ_INT(v.calls, 10);
    CHECK_EQ_INT(v.granted, 3);
    CHECK_EQ_INT(v.full, 7);
    CHECK(v.ms > 0 && v.ms <= 400);
    run_for(base, (int)v.ms + 30);
    memset(&v, 0, sizeof(v));
    corral_fleet_admit(a.fleet, "up", 3, 400, verdict_cb, &v);
    RUN_UNTIL(base, v.calls == 1, 2000);
    CHECK_EQ_INT(v.granted, 1); /* the oldest left the window */
    /* Given back: its place is free again. */
    struct verdicts w = {0};
    corral_fleet_admit(a.fleet, "up", 3, 400, verdict_cb, &w);
    corral_fleet_admit(a.fleet, "up", 3, 400, verdict_cb, &w);
    RUN_UNTIL(base, w.calls == 2, 2000);
    CHECK_EQ_INT(w.granted, 2);
    memset(&w, 0, sizeof(w));
    corral_fleet_admit(b.fleet, "up", 3, 400, verdict_cb, &w);
    RUN_UNTIL(base, w.calls == 1, 2000);
    CHECK_EQ_INT(w.full, 1);
    /* Fire and forget on a's connection: b's admission must not overtake
     * it, so wait until Redis has it. */
    corral_fleet_unadmit(a.fleet, "up", v.member);
    RUN_UNTIL(base, !in_window("up", v.member), 2000);
    CHECK(!in_window("up", v.member));
    memset(&w, 0, sizeof(w));
    corral_fleet_admit(b.fleet, "up", 3, 400, verdict_cb, &w);
    RUN_UNTIL(base, w.calls == 1, 2000);
    CHECK_EQ_INT(w.granted, 1);
    inst_free(&a);
    inst_free(&b);
}

/* A pause reaches the other instance at once (no admission needed), an
 * admission sees it, and an instance that starts later reads it at its
 * sync. */
static void
test_pause(void)
{
    struct state sa = {0}, sb = {0}, sc = {0};
    struct inst a = inst_new("a", &sa), b = inst_new("b", &sb);
    corral_fleet_pause(a.fleet, "up", 800);
    RUN_UNTIL(base, sb.paused > 0 && sa.paused > 0, 2000);
    CHECK_EQ_INT(sb.paused, 1);
    CHECK_EQ_STR(sb.name, "up");
    CHECK_EQ_INT(sb.ms, 800);
    CHECK_EQ_INT(sa.paused, 1); /* the channel tells everyone */
    struct verdicts v = {0};
    corral_fleet_admit(b.fleet, "up", 0, 0, verdict_cb, &v);
    RUN_UNTIL(base, v.calls == 1, 2000);
    CHECK_EQ_INT(v.paused, 1);
    CHECK(v.ms > 0 && v.ms <= 800);
    struct inst c = inst_new("c", &sc);
    CHECK_EQ_INT(sc.paused, 1);
    CHECK(sc.ms > 0 && sc.ms <= 800);
    inst_free(&a);
    inst_free(&b);
    inst_free(&c);
}

struct probed {
    int calls, verdict;
    uint64_t ms, step;
};

static void
probed_cb(int verdict, uint64_t ms, uint64_t step_ms, void *arg)
{
    struct probed *p = arg;
    p->calls++;
    p->verdict = verdict;
    p->ms = ms;
    p->step = step_ms;
}

static int
probe(struct inst *i, uint64_t step, uint64_t hold, struct probed *p)
{
    memset(p, 0, sizeof(*p));
    corral_fleet_probe(i->fleet, "up", step, hold, probed_cb, p);
    CHECK_EQ_INT(p->calls, 0); /* never from inside the call */
    RUN_UNTIL(base, p->calls == 1, 2000);
    CHECK_EQ_INT(p->calls, 1);
    return p->verdict;
}

/* A breaker opened by one instance is heard by the others at once; one
 * already open in the fleet is not shortened by a newer opening (nx); the
 * fleet's one probe goes to the first that claims it once no step runs,
 * and is held while it runs; an instance that starts later reads an open
 * breaker at its sync; a close is heard, and frees the next claim. */
static void
test_breaker(void)
{
    struct state sa = {0}, sb = {0}, sc = {0};
    freeReplyObject(sync_cmd("DEL %s", upstream_name("breaker:", "up")));
    struct inst a = inst_new("a", &sa), b = inst_new("b", &sb);
    struct probed p;
    corral_fleet_breaker_open(a.fleet, "up", 600, true);
    RUN_UNTIL(base, sb.breakers > 0, 2000);
    CHECK_EQ_INT(sb.breakers, 1);
    CHECK_EQ_STR(sb.name, "up");
    CHECK_EQ_INT(sb.breaker_ms, 600);
    CHECK_EQ_INT(sb.breaker_step, 600);
    /* Open already: b's own opening leaves the fleet's step alone. */
    corral_fleet_breaker_open(b.fleet, "up", 100, true);
    CHECK_EQ_INT(probe(&b, 100, 2000, &p), 0);
    CHECK(p.ms > 300 && p.ms <= 600);
    CHECK_EQ_INT(p.step, 600);
    CHECK_EQ_INT(sa.breakers, 1); /* no word of b's */
    struct inst c = inst_new("c", &sc);
    CHECK_EQ_INT(sc.breakers, 1);
    CHECK(sc.breaker_ms > 0 && sc.breaker_ms <= 600);
    CHECK_EQ_INT(sc.breaker_step, 600);
    run_for(base, (int)p.ms + 20);
    /* The step ran out: the first claim is the probe, held 2 s. */
    CHECK_EQ_INT(probe(&b, 600, 2000, &p), 1);
    CHECK_EQ_INT(probe(&a, 600, 2000, &p), 0);
    CHECK(p.ms > 1500 && p.ms <= 2000);
    CHECK_EQ_INT(p.step, 600);
    /* b's probe failed: a doubled step for everyone. */
    corral_fleet_breaker_open(b.fleet, "up", 1200, false);
    RUN_UNTIL(base, sa.breakers == 2, 2000);
    CHECK_EQ_INT(sa.breaker_ms, 1200);
    CHECK_EQ_INT(probe(&a, 600, 2000, &p), 0);
    CHECK(p.ms > 1000 && p.ms <= 1200);
    CHECK_EQ_INT(p.step, 1200);
    /* Closed: heard by all, and the key is gone. */
    int before = sc.breakers;
    corral_fleet_breaker_close(a.fleet, "up");
    RUN_UNTIL(base, sc.breakers > before, 2000);
    CHECK_EQ_INT(sc.breaker_ms, 0);
    CHECK_EQ_INT(probe(&c, 100, 2000, &p), 1);
    inst_free(&a);
    inst_free(&b);
    inst_free(&c);
}

struct bumped {
    int calls, error;
    uint64_t gen;
};

static void
bumped_cb(int error, uint64_t gen, void *arg)
{
    struct bumped *b = arg;
    b->calls++;
    b->error = error;
    b->gen = gen;
}

static long long
hget_gen(void)
{
    redisReply *r = sync_cmd("HGET t:{fleet}gens /api/{coin}");
    long long n = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : -1;
    freeReplyObject(r);
    return n;
}

/* A bump goes above both Redis's and this instance's generation and
 * reaches the other; after FLUSHALL the instances write theirs back at
 * their next sync; a later instance learns it at its sync; a bump Redis
 * cannot confirm says so. */
static void
test_generations(void)
{
    struct state sa = {0}, sb = {0}, sc = {0};
    freeReplyObject(sync_cmd("DEL t:{fleet}gens"));
    struct inst a = inst_new("a", &sa), b = inst_new("b", &sb);
    sa.here = 5; /* a was at 5 (Redis at 0) */
    struct bumped x = {0};
    corral_fleet_bump(a.fleet, "/api/{coin}", 5, bumped_cb, &x);
    RUN_UNTIL(base, x.calls > 0 && sb.gen == 6, 2000);
    CHECK_EQ_INT(x.error, 0);
    CHECK_EQ_INT(x.gen, 6);
    CHECK_EQ_INT(sb.gen, 6);
    CHECK_EQ_STR(sb.name, "/api/{coin}");
    CHECK_EQ_INT(hget_gen(), 6);
    /* Redis forgets; a and b are at 6 and write it back. */
    sa.here = sb.here = 6;
    freeReplyObject(sync_cmd("FLUSHALL"));
    freeReplyObject(sync_cmd("CLIENT KILL TYPE pubsub"));
    RUN_UNTIL(base, hget_gen() == 6, 3000);
    CHECK_EQ_INT(hget_gen(), 6);
    struct inst c = inst_new("c", &sc);
    CHECK_EQ_INT(sc.gen, 6);
    /* A flush that drops no connection: the periodic sync writes back. */
    freeReplyObject(sync_cmd("FLUSHALL"));
    sc.here = 6;
    RUN_UNTIL(base, hget_gen() == 6, 4000);
    CHECK_EQ_INT(hget_gen(), 6);
    /* Redis stalled: not confirmed. */
    redisd_stop();
    memset(&x, 0, sizeof(x));
    corral_fleet_bump(c.fleet, "/api/{coin}", 6, bumped_cb, &x);
    RUN_UNTIL(base, x.calls > 0, 2000);
    CHECK(x.error != 0);
    sc.here = 7; /* the caller raised it here alone */
    redisd_cont();
    /* The next sync writes it back (the bump's failure asked for one). */
    RUN_UNTIL(base, hget_gen() == 7, 3000);
    CHECK_EQ_INT(hget_gen(), 7);
    RUN_UNTIL(base, sa.gen == 7 && sb.gen == 7, 2000);
    CHECK_EQ_INT(sa.gen, 7);
    inst_free(&a);
    inst_free(&b);
    inst_free(&c);
}

int
main(void)
{
    redisd_setup();
    RUN(test_admit);
    RUN(test_pause);
    RUN(test_breaker);
    RUN(test_generations);
    event_base_free(base);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
