/* test-redis.c — the Redis tier against a real redis-server started on a
 * free loopback port (skipped, exit 77, without one): hits that restore the
 * value, misses, garbage and foreign versions under a key, Redis killed and
 * restarted, a server that accepts and never answers, and teardown with
 * gets in flight. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "corral/cache.h"
#include "corral/redis_tier.h"
#include "corral/value.h"
#include "testlib.h"

static struct event_base *base;
static uint16_t port;
static pid_t redis_pid = -1;
static char dir[64];

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint16_t
free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &sl) == 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static redisContext *
sync_conn(void)
{
    struct timeval tv = {1, 0};
    return redisConnectWithTimeout("127.0.0.1", port, tv);
}

static bool
redis_start(void)
{
    char p[8];

    snprintf(p, sizeof(p), "%u", (unsigned)port);
    redis_pid = fork();
    if (redis_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", p, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
               "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        redisContext *c = sync_conn();
        bool ok = c != NULL && c->err == 0;
        redisFree(c);
        if (ok)
            return true;
        usleep(50000);
    }
    return false;
}

static void
redis_kill(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
}

static void
cleanup(void)
{
    redis_kill();
    rmdir(dir);
}

/* Runs the loop for ms. */
static void
run_for(int ms)
{
    uint64_t end = mono_ms() + (uint64_t)ms;
    struct timeval tick = {0, 5000};
    while (mono_ms() < end)
        event_base_loopexit(base, &tick), event_base_dispatch(base);
}

struct got {
    int calls, error;
    struct corral_value *v;
    uint64_t at; /* mono ms of the answer */
};

static void
got_cb(struct corral_value *v, int error, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->error = error;
    g->v = v;
    g->at = mono_ms();
}

static int in_get;

static void
get(struct corral_redis_tier *t, const char *key, struct got *g)
{
    memset(g, 0, sizeof(*g));
    in_get = 1;
    corral_redis_tier_ops.get(t, key, strlen(key), got_cb, g);
    in_get = 0;
    CHECK_EQ_INT(g->calls, 0); /* never from inside get() */
}

static void
wait_got(struct got *g, int ms)
{
    uint64_t end = mono_ms() + (uint64_t)ms;
    while (g->calls == 0 && mono_ms() < end)
        run_for(5);
    CHECK_EQ_INT(g->calls, 1);
}

static struct corral_redis_tier *
tier(uint16_t p, uint64_t timeout_ms)
{
    struct corral_redis_options o = {
        .host = "127.0.0.1",
        .port = p,
        .prefix = "t:",
        .timeout_ms = timeout_ms,
    };
    char err[128];
    struct corral_redis_tier *t = corral_redis_tier_new(base, &o, err, sizeof(err));
    CHECK(t != NULL);
    return t;
}

static bool
up_within(struct corral_redis_tier *t, int ms)
{
    struct corral_redis_stats st;
    uint64_t end = mono_ms() + (uint64_t)ms;
    do {
        run_for(10);
        corral_redis_tier_stats(t, &st);
    } while (st.state != CORRAL_REDIS_UP && mono_ms() < end);
    return st.state == CORRAL_REDIS_UP;
}

static void
test_hit_and_miss(void)
{
    struct corral_redis_tier *t = tier(port, 200);
    struct corral_value *v =
        corral_value_new("k1", 2, "{\"x\":1}", 7, "application/json", 0);
    struct corral_redis_stats st;
    struct got g;

    CHECK(up_within(t, 2000));
    corral_value_set_times(v, 1000, 5000000000000ull, 0, 0);
    corral_redis_tier_ops.set(t, v, 60000);
    get(t, "k1", &g);
    wait_got(&g, 2000);
    CHECK_EQ_INT(g.error, 0);
    CHECK(g.v != NULL);
    CHECK_EQ_STR(corral_value_body(g.v), "{\"x\":1}");
    CHECK_EQ_STR(corral_value_etag(g.v), corral_value_etag(v));
    CHECK_EQ_INT(corral_value_stored_at(g.v), 1000);
    corral_value_unref(g.v);
    get(t, "nope", &g);
    wait_got(&g, 2000);
    CHECK_EQ_INT(g.error, -ENOENT);

    /* Garbage and a foreign version, written by someone else. */
    redisContext *c = sync_conn();
    freeReplyObject(redisCommand(c, "SET t:junk garbage"));
    freeReplyObject(redisCommand(c, "SET t:v9 %b", "CRV\x09xxxxxxxx", 12));
    get(t, "junk", &g);
    wait_got(&g, 2000);
    CHECK_EQ_INT(g.error, -ENOENT);
    get(t, "v9", &g);
    wait_got(&g, 2000);
    CHECK_EQ_INT(g.error, -ENOENT);
    corral_redis_tier_stats(t, &st);
    CHECK_EQ_INT(st.bad_values, 2);
    CHECK_EQ_INT(st.hits, 1);
    /* PX: the key expires in Redis too. */
    redisReply *r = redisCommand(c, "PTTL t:k1");
    CHECK(r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer > 50000 &&
          r->integer <= 60000);
    freeReplyObject(r);
    /* del */
    corral_redis_tier_ops.del(t, "k1", 2);
    get(t, "k1", &g);
    wait_got(&g, 2000);
    CHECK_EQ_INT(g.error, -ENOENT);
    redisFree(c);
    corral_value_unref(v);
    corral_redis_tier_free(t);
}

struct heard {
    int calls, stored;
    size_t len;
    char key[64];
};

static void
heard_cb(const void *key, size_t keylen, void *arg)
{
    struct heard *h = arg;
    h->calls++;
    h->len = keylen;
    snprintf(h->key, sizeof(h->key), "%.*s", (int)keylen, (const char *)key);
}

static void
released_cb(const void *key, size_t keylen, int stored, void *arg)
{
    struct heard *h = arg;
    heard_cb(key, keylen, arg);
    h->stored = stored;
}

/* A delete on one instance is heard by every subscriber, itself included,
 * with the key as given (no prefix); unsubscribed, nothing more. */
static void
test_invalidation(void)
{
    struct corral_redis_tier *a = tier(port, 200), *b = tier(port, 200);
    struct heard ha = {0}, hb = {0};

    corral_redis_tier_ops.subscribe(a, heard_cb, &ha);
    corral_redis_tier_ops.subscribe(b, heard_cb, &hb);
    CHECK(up_within(a, 2000) && up_within(b, 2000));
    run_for(200); /* both SUBSCRIBEs in */
    corral_redis_tier_ops.del(a, "/api/k\0x", 8);
    for (int i = 0; i < 100 && (ha.calls == 0 || hb.calls == 0); i++)
        run_for(10);
    CHECK_EQ_INT(hb.calls, 1);
    CHECK_EQ_INT(ha.calls, 1);
    CHECK_EQ_STR(hb.key, "/api/k");
    CHECK_EQ_INT(hb.len, 8); /* binary-safe: the NUL and what follows */
    corral_redis_tier_ops.subscribe(b, NULL, NULL);
    corral_redis_tier_ops.del(a, "/x", 2);
    run_for(200);
    CHECK_EQ_INT(hb.calls, 1);
    CHECK_EQ_INT(ha.calls, 2);
    corral_redis_tier_free(a);
    corral_redis_tier_free(b);
}

struct leased {
    int calls, won;
};

static void
leased_cb(int won, void *arg)
{
    struct leased *l = arg;
    l->calls++;
    l->won = won;
}

static void
lease(struct corral_redis_tier *t, const char *key, uint64_t ttl,
      struct leased *l)
{
    memset(l, 0, sizeof(*l));
    corral_redis_tier_ops.lease(t, key, strlen(key), ttl, leased_cb, l);
    CHECK_EQ_INT(l->calls, 0);
    for (int i = 0; i < 200 && l->calls == 0; i++)
        run_for(5);
    CHECK_EQ_INT(l->calls, 1);
}

/* One lease holder fleet-wide; a release by a non-holder deletes nothing;
 * the holder's release is announced to the others (not to itself), with
 * whether it stored; a lease runs out by itself. */
static void
test_lease(void)
{
    struct corral_redis_tier *a = tier(port, 200), *b = tier(port, 200);
    struct heard hb = {0};
    struct leased la, lb;

    struct heard ha = {0};
    corral_redis_tier_ops.watch_released(b, released_cb, &hb);
    corral_redis_tier_ops.watch_released(a, released_cb, &ha);
    CHECK(up_within(a, 2000) && up_within(b, 2000));
    run_for(200);
    lease(a, "/k", 5000, &la);
    CHECK_EQ_INT(la.won, 1);
    lease(b, "/k", 5000, &lb);
    CHECK_EQ_INT(lb.won, 0);
    corral_redis_tier_ops.release(b, "/k", 2, 0); /* not b's: stays */
    run_for(50);
    lease(b, "/k", 5000, &lb);
    CHECK_EQ_INT(lb.won, 0);
    run_for(50);
    CHECK_EQ_INT(hb.calls, 0); /* b's own release: not heard by b */
    CHECK_EQ_INT(ha.calls, 1); /* but by a, as not stored */
    CHECK_EQ_INT(ha.stored, 0);
    corral_redis_tier_ops.release(a, "/k", 2, 1);
    for (int i = 0; i < 100 && hb.calls < 1; i++)
        run_for(10);
    CHECK_EQ_INT(hb.calls, 1);
    CHECK_EQ_INT(hb.stored, 1);
    CHECK_EQ_STR(hb.key, "/k");
    CHECK_EQ_INT(ha.calls, 1); /* a does not hear its own */
    lease(b, "/k", 100, &lb);
    CHECK_EQ_INT(lb.won, 1);
    run_for(150); /* b's lease runs out */
    lease(a, "/k", 5000, &la);
    CHECK_EQ_INT(la.won, 1);
    corral_redis_tier_free(a);
    corral_redis_tier_free(b);
}

struct answer {
    int calls, error;
    enum corral_source source;
    char body[64];
};

static void
answer_cb(const struct corral_result *res, void *arg)
{
    struct answer *a = arg;
    a->calls++;
    a->error = res->error;
    a->source = res->source;
    snprintf(a->body, sizeof(a->body), "%s",
             res->value ? corral_value_body(res->value) : "");
}

static const char *next_body = "v1";

static void
compute(struct corral_fill *f, const char *key, size_t keylen, void *arg)
{
    struct corral_value *v = corral_value_new(key, keylen, next_body,
                                              strlen(next_body), "", 0);
    (void)arg;
    corral_fill_done(f, v);
}

static void
ask(struct corral_cache *c, struct answer *a)
{
    static const struct corral_strategy s = {.kind = CORRAL_STRATEGY_LONG};
    const struct corral_compute how = {.fn = compute};
    memset(a, 0, sizeof(*a));
    CHECK(corral_get_or_compute(c, "/p", 2, &s, 1000, &how, answer_cb, a) !=
          NULL);
    for (int i = 0; i < 200 && a->calls == 0; i++)
        run_for(5);
    CHECK_EQ_INT(a->calls, 1);
    CHECK_EQ_INT(a->error, 0);
}

/* Two caches, each with its own tier, one Redis: a purge on one reaches
 * the other's L1, whose next answer is the new body. */
static void
test_purge_two_instances(void)
{
    struct corral_redis_tier *ta = tier(port, 200), *tb = tier(port, 200);
    struct corral_cache_options oa = {.tier = &corral_redis_tier_ops,
                                      .tier_ctx = ta};
    struct corral_cache_options ob = {.tier = &corral_redis_tier_ops,
                                      .tier_ctx = tb};
    struct corral_cache *a = corral_cache_new(base, &oa);
    struct corral_cache *b = corral_cache_new(base, &ob);
    struct answer x;

    CHECK(up_within(ta, 2000) && up_within(tb, 2000));
    run_for(200); /* subscribed */
    next_body = "v1";
    ask(a, &x);
    CHECK_EQ_INT(x.source, CORRAL_SOURCE_STORED);
    run_for(50);
    ask(b, &x);
    CHECK_EQ_INT(x.source, CORRAL_SOURCE_L2);
    CHECK_EQ_STR(x.body, "v1");
    CHECK(corral_cache_peek(b, "/p", 2) != NULL); /* in b's L1 now */
    corral_invalidate(a, "/p", 2);
    for (int i = 0; i < 100 && corral_cache_peek(b, "/p", 2) != NULL; i++)
        run_for(10);
    CHECK(corral_cache_peek(b, "/p", 2) == NULL); /* dropped by the purge */
    next_body = "v2";
    ask(b, &x);
    CHECK_EQ_STR(x.body, "v2");
    corral_cache_free(a);
    corral_cache_free(b);
    corral_redis_tier_free(ta);
    corral_redis_tier_free(tb);
}

/* Redis killed: gets answer at once as misses; restarted on the same port:
 * used again within a second. */
static void
test_outage(void)
{
    struct corral_redis_tier *t = tier(port, 100);
    struct corral_redis_stats st;
    struct got g;

    CHECK(up_within(t, 2000));
    redis_kill();
    run_for(50);
    uint64_t t0 = mono_ms();
    get(t, "k", &g);
    wait_got(&g, 2000);
    CHECK(g.error != 0);
    CHECK(g.at - t0 <= 150);
    corral_redis_tier_stats(t, &st);
    CHECK_EQ_INT(st.state, CORRAL_REDIS_DOWN);
    run_for(1500); /* backoff reaches its cap */
    CHECK(redis_start());
    t0 = mono_ms();
    CHECK(up_within(t, 1500));
    printf("# back up %llu ms after redis restarted\n",
           (unsigned long long)(mono_ms() - t0));
    get(t, "k", &g);
    wait_got(&g, 2000);
    CHECK_EQ_INT(g.error, -ENOENT);
    corral_redis_tier_free(t);
}

struct verdict {
    int calls, verdict;
    uint64_t ms;
};

static void
verdict_cb(int verdict, uint64_t ms, void *arg)
{
    struct verdict *v = arg;
    v->calls++;
    v->verdict = verdict;
    v->ms = ms;
}

static struct verdict
admit(struct corral_redis_tier *t, const char *name, unsigned count,
      uint64_t window_ms)
{
    struct verdict v = {0};
    corral_redis_tier_admit(t, name, count, window_ms, verdict_cb, &v);
    CHECK_EQ_INT(v.calls, 0); /* never from inside the call */
    uint64_t end = mono_ms() + 2000;
    while (v.calls == 0 && mono_ms() < end)
        run_for(2);
    CHECK_EQ_INT(v.calls, 1);
    return v;
}

/* The fleet's budget: two instances share one window of 3 calls per
 * 400 ms; a pause set by one stops the other; the window slides. */
static void
test_admit(void)
{
    struct corral_redis_tier *a = tier(port, 200), *b = tier(port, 200);
    CHECK(up_within(a, 2000) && up_within(b, 2000));
    CHECK_EQ_INT(admit(a, "up", 3, 400).verdict, 1);
    CHECK_EQ_INT(admit(b, "up", 3, 400).verdict, 1);
    CHECK_EQ_INT(admit(a, "up", 3, 400).verdict, 1);
    struct verdict full = admit(b, "up", 3, 400);
    CHECK_EQ_INT(full.verdict, 0);
    CHECK(full.ms > 0 && full.ms <= 400);
    CHECK_EQ_INT(admit(a, "other", 3, 400).verdict, 1); /* its own window */
    run_for((int)full.ms + 20);
    CHECK_EQ_INT(admit(b, "up", 3, 400).verdict, 1); /* the oldest left */
    /* A pause from a stops b, with the time left; count 0 checks only it. */
    corral_redis_tier_pause(a, "up", 300);
    run_for(20);
    struct verdict paused = admit(b, "up", 0, 0);
    CHECK_EQ_INT(paused.verdict, -EBUSY);
    CHECK(paused.ms > 200 && paused.ms <= 300);
    run_for((int)paused.ms + 20);
    CHECK_EQ_INT(admit(b, "up", 0, 0).verdict, 1);
    corral_redis_tier_free(a);
    corral_redis_tier_free(b);
}

/* A server that accepts and never answers: every get is a miss at the
 * timeout, the connection is dropped after three, and nothing leaks. */
static void
test_silent_server(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct corral_redis_stats st;
    struct got g[5];

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CHECK(listen(lfd, 16) == 0); /* the kernel accepts; nobody reads */
    CHECK(getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0);
    struct corral_redis_tier *t = tier(ntohs(sin.sin_port), 60);
    CHECK(up_within(t, 2000));
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = mono_ms();
        get(t, "k", &g[i]);
        wait_got(&g[i], 2000);
        CHECK(g[i].error != 0);
        CHECK(g[i].at - t0 < 60 + 100);
    }
    /* An admission it never answers: "cannot tell" at the timeout, so the
     * caller decides alone. */
    CHECK(up_within(t, 2000));
    struct verdict v = admit(t, "up", 1, 1000);
    CHECK_EQ_INT(v.verdict, -ETIMEDOUT);
    corral_redis_tier_stats(t, &st);
    CHECK(st.timeouts >= 3);
    /* Gets in flight when the tier goes: answered -ECANCELED. */
    get(t, "k", &g[0]);
    corral_redis_tier_free(t);
    CHECK_EQ_INT(g[0].calls, 1);
    close(lfd);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (system("redis-server --version >/dev/null 2>&1") != 0) {
        printf("# redis-server missing: skipped\n");
        return 77;
    }
    strcpy(dir, "/tmp/corral-test-redis-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    atexit(cleanup);
    base = event_base_new();
    port = free_port();
    CHECK(redis_start());
    RUN(test_hit_and_miss);
    RUN(test_invalidation);
    RUN(test_lease);
    RUN(test_purge_two_instances);
    RUN(test_outage);
    RUN(test_admit);
    RUN(test_silent_server);
    event_base_free(base);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
