/* test-redis.c — the Redis connection (corral/redis.h) against a real
 * redis-server on a free loopback port: commands answered once and never
 * from inside the call, scripts loaded and reloaded after a flush, one
 * timeout for a stopped Redis with the late reply heard, a server that
 * accepts and never answers taken for stuck, health that goes down on
 * failing commands and comes back up without flapping, a database that
 * cannot be selected, subscriptions that come back after their connection
 * is killed, teardown with commands in flight, and the sentinels' and
 * ROLE's replies read. Servers that misbehave on cue (a READONLY with a
 * reply nobody asked for, answers too slow for the probe) are scripted
 * fakes (fake_redis.h). */
#include <errno.h>
#include <hiredis/hiredis.h>

#include "corral/redis.h"
#include "fake_redis.h"
#include "redis_impl.h"
#include "redisd.h"

struct reply {
    int calls, error;
    long long integer;
    char str[128];
    int late_calls, late_error;
    long long late_integer;
};

static void
reply_cb(const redisReply *r, int error, void *arg)
{
    struct reply *x = arg;
    x->calls++;
    x->error = error;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        x->integer = r->integer;
    if (r != NULL &&
        (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
         r->type == REDIS_REPLY_ERROR))
        snprintf(x->str, sizeof(x->str), "%s", r->str);
}

static void
late_cb(const redisReply *r, int error, void *arg)
{
    struct reply *x = arg;
    x->late_calls++;
    x->late_error = error;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        x->late_integer = r->integer;
}

static struct corral_redis *
conn(uint16_t port, uint64_t timeout_ms, unsigned db)
{
    struct corral_redis_options o = {
        .host = "127.0.0.1",
        .port = port,
        .db = db,
        .timeout_ms = timeout_ms,
    };
    char err[128];
    struct corral_redis *r = corral_redis_new(base, &o, err, sizeof(err));
    CHECK(r != NULL);
    return r;
}

static enum corral_redis_state
state(struct corral_redis *r)
{
    struct corral_redis_stats st;
    corral_redis_stats(r, &st);
    return st.state;
}

static void
cmd(struct corral_redis *r, struct reply *x, int argc, const char **argv)
{
    memset(x, 0, sizeof(*x));
    corral_redis_command(r, reply_cb, x, argc, argv, NULL);
    CHECK_EQ_INT(x->calls, 0); /* never from inside the call */
    RUN_UNTIL(base, x->calls > 0, 3000);
    CHECK_EQ_INT(x->calls, 1);
}

/* Commands before the handshake are refused from the loop; after it they
 * go through, binary-safe. */
static void
test_commands(void)
{
    struct corral_redis *r = conn(redisd_port, 500, 0);
    struct reply x;
    const char *ping[1] = {"PING"};
    cmd(r, &x, 1, ping); /* not ready yet: refused, from the loop */
    CHECK_EQ_INT(x.error, -ENOTCONN);
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    CHECK(corral_redis_ready(r));
    CHECK_EQ_INT(state(r), CORRAL_REDIS_UP);
    const char *set[3] = {"SET", "t:k", "v"};
    cmd(r, &x, 3, set);
    CHECK_EQ_INT(x.error, 0);
    CHECK_EQ_STR(x.str, "OK");
    const char *get[2] = {"GET", "t:k"};
    cmd(r, &x, 2, get);
    CHECK_EQ_STR(x.str, "v");
    /* An error reply: -EIO with Redis's words. */
    const char *bad[2] = {"INCR", "t:k"};
    cmd(r, &x, 2, bad);
    CHECK_EQ_INT(x.error, -EIO);
    CHECK(strstr(x.str, "not an integer") != NULL);
    /* Each reply is timed, the error's too: a BLPOP that waits 30 ms lands
     * above the 25 ms bound. */
    struct corral_redis_stats a, b;
    corral_redis_stats(r, &a);
    const char *blpop[3] = {"BLPOP", "t:none", "0.03"};
    cmd(r, &x, 3, blpop);
    CHECK_EQ_INT(x.error, 0);
    corral_redis_stats(r, &b);
    CHECK_EQ_INT(b.replies - a.replies, 1);
    CHECK(b.reply_us - a.reply_us >= 30000);
    CHECK_EQ_INT(b.reply_le[7] - a.reply_le[7], 0); /* not within 25 ms */
    CHECK(a.replies >= 3);                          /* SET, GET, INCR */
    for (int k = 1; k < CORRAL_REDIS_LATENCY_BUCKETS; k++)
        CHECK(b.reply_le[k] >= b.reply_le[k - 1]); /* cumulative */
    CHECK(b.reply_le[CORRAL_REDIS_LATENCY_BUCKETS - 1] <= b.replies);
    corral_redis_free(r);

    /* Commands go out at the end of the turn they were given in; one the
     * socket cannot take whole (8 MB) is finished when it is writable
     * again, and the command given after it is answered after it. */
    r = conn(redisd_port, 10000, 0);
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    size_t big = 8u << 20;
    char *blob = malloc(big);
    CHECK(blob != NULL);
    memset(blob, 'b', big);
    const char *setbig[3] = {"SET", "t:big", blob};
    size_t lens[3] = {3, 5, big};
    const char *strlen_big[2] = {"STRLEN", "t:big"};
    struct reply y = {0}, z = {0};
    corral_redis_command(r, reply_cb, &y, 3, setbig, lens);
    corral_redis_command(r, reply_cb, &z, 2, strlen_big, NULL);
    free(blob);
    RUN_UNTIL(base, z.calls > 0, 10000);
    CHECK_EQ_INT(y.calls, 1);
    CHECK_EQ_INT(y.error, 0);
    CHECK_EQ_STR(y.str, "OK");
    CHECK_EQ_INT(z.calls, 1);
    CHECK_EQ_INT(z.integer, (long long)big);
    const char *del[2] = {"DEL", "t:big"};
    cmd(r, &x, 2, del);
    CHECK_EQ_INT(x.integer, 1);
    corral_redis_free(r);
}

/* A script runs by its SHA; after SCRIPT FLUSH one call fails (NOSCRIPT)
 * and the next works again. */
static void
test_scripts(void)
{
    struct corral_redis *r = conn(redisd_port, 500, 0);
    struct corral_redis_script *s =
        corral_redis_script_new(r, "return tonumber(ARGV[1]) + 1");
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    struct reply x = {0};
    const char *argv[1] = {"41"};
    corral_redis_eval(r, s, reply_cb, &x, 0, 1, argv, NULL);
    RUN_UNTIL(base, x.calls > 0, 2000);
    CHECK_EQ_INT(x.error, 0);
    CHECK_EQ_INT(x.integer, 42);
    freeReplyObject(sync_cmd("SCRIPT FLUSH"));
    memset(&x, 0, sizeof(x));
    corral_redis_eval(r, s, reply_cb, &x, 0, 1, argv, NULL);
    RUN_UNTIL(base, x.calls > 0, 2000);
    CHECK_EQ_INT(x.error, -EIO);
    CHECK(strncmp(x.str, "NOSCRIPT", 8) == 0);
    run_for(base, 50);
    memset(&x, 0, sizeof(x));
    corral_redis_eval(r, s, reply_cb, &x, 0, 1, argv, NULL);
    RUN_UNTIL(base, x.calls > 0, 2000);
    CHECK_EQ_INT(x.error, 0);
    CHECK_EQ_INT(x.integer, 42);
    corral_redis_free(r);
}

/* Redis stopped: a command answers -ETIMEDOUT at the timeout, and a late
 * callback hears the reply once Redis resumes. A command given while the
 * connection is struggling is still sent. */
static void
test_timeout_and_late(void)
{
    struct corral_redis *r = conn(redisd_port, 100, 0);
    struct corral_redis_script *s =
        corral_redis_script_new(r, "return redis.call('incr', KEYS[1])");
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    redisd_stop();
    struct reply x = {0};
    const char *argv[1] = {"t:late"};
    uint64_t t0 = mono_ms();
    corral_redis_eval_late(r, s, reply_cb, late_cb, &x, 1, 1, argv, NULL);
    RUN_UNTIL(base, x.calls > 0, 2000);
    CHECK_EQ_INT(x.error, -ETIMEDOUT);
    CHECK(mono_ms() - t0 >= 90 && mono_ms() - t0 < 400);
    CHECK(corral_redis_struggling(r));
    CHECK_EQ_INT(x.late_calls, 0);
    redisd_cont();
    RUN_UNTIL(base, x.late_calls > 0, 2000);
    CHECK_EQ_INT(x.late_calls, 1);
    CHECK_EQ_INT(x.late_error, 0);
    CHECK_EQ_INT(x.late_integer, 1); /* it ran: the late callback knows */
    CHECK_EQ_INT(x.calls, 1);
    CHECK(!corral_redis_struggling(r));
    corral_redis_free(r);
}

/* One timer serves the pending commands, armed for the oldest and left
 * alone when that one is answered: a command sent later still times out
 * at its own deadline, not at the first one's, and not never. */
static void
test_timeout_after_answered_head(void)
{
    struct corral_redis *r = conn(redisd_port, 100, 0);
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    const char *ping[1] = {"PING"};
    struct reply p;
    cmd(r, &p, 1, ping); /* the timer is armed for its deadline */
    CHECK_EQ_INT(p.error, 0);
    run_for(base, 60);
    const char *blpop[3] = {"BLPOP", "t:never", "0.5"};
    struct reply x = {0};
    uint64_t t0 = mono_ms();
    corral_redis_command(r, reply_cb, &x, 3, blpop, NULL);
    RUN_UNTIL(base, x.calls > 0, 2000);
    CHECK_EQ_INT(x.error, -ETIMEDOUT);
    CHECK(mono_ms() - t0 >= 90 && mono_ms() - t0 < 400);
    run_for(base, 600); /* BLPOP's own reply, after its 0.5 s */
    cmd(r, &p, 1, ping);
    CHECK_EQ_INT(p.error, 0);
    corral_redis_free(r);
}

/* A server that accepts and never answers: never ready (the handshake
 * goes unanswered), every command refused at once. One that answers the
 * handshake and then stops: three timeouts and the connection is
 * replaced. */
static void
test_stuck(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CHECK(listen(lfd, 16) == 0); /* the kernel accepts; nobody reads */
    CHECK(getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0);
    struct corral_redis *r = conn(ntohs(sin.sin_port), 60, 0);
    run_for(base, 1300);
    CHECK(!corral_redis_ready(r));
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    struct reply x;
    const char *ping[1] = {"PING"};
    uint64_t t0 = mono_ms();
    cmd(r, &x, 1, ping);
    CHECK_EQ_INT(x.error, -ENOTCONN);
    CHECK(mono_ms() - t0 < 50);
    corral_redis_free(r);
    close(lfd);

    r = conn(redisd_port, 80, 0);
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    redisd_stop();
    struct reply y[3];
    for (int i = 0; i < 3; i++) {
        cmd(r, &y[i], 1, ping);
        printf("# %d %s\n", y[i].error, y[i].str);
        CHECK_EQ_INT(y[i].error, -ETIMEDOUT);
    }
    run_for(base, 20);
    struct corral_redis_stats st;
    corral_redis_stats(r, &st);
    CHECK_EQ_INT(st.stuck, 1);
    CHECK_EQ_INT(st.timeouts, 3);
    CHECK_EQ_INT(st.state, CORRAL_REDIS_DOWN);
    CHECK(!corral_redis_ready(r));
    redisd_cont();
    RUN_UNTIL(base, corral_redis_ready(r), 3000);
    CHECK(corral_redis_ready(r));
    corral_redis_free(r);
}

/* A connection with a 300 ms timeout, ready and up. */
static struct corral_redis *
up_conn(void)
{
    struct corral_redis *r = conn(redisd_port, 300, 0);
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_UP);
    return r;
}

/* Health: down when commands keep failing (OOM), down when the handshake
 * is refused (requirepass set, no password: NOAUTH); up again only with
 * answers and a second after it went down. */
static void
test_health(void)
{
    struct corral_redis *r = up_conn();
    freeReplyObject(sync_cmd("CONFIG SET maxmemory-policy noeviction"));
    freeReplyObject(sync_cmd("CONFIG SET maxmemory 1"));
    struct reply x;
    const char *set[3] = {"SET", "t:h", "v"};
    const char *get[2] = {"GET", "t:h"};
    for (int i = 0; i < 3; i++) {
        cmd(r, &x, 3, set);
        CHECK_EQ_INT(x.error, -EIO);
    }
    CHECK(strncmp(x.str, "OOM", 3) == 0);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    freeReplyObject(sync_cmd("CONFIG SET maxmemory 0"));
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 3; i++) {
        cmd(r, &x, 2, get);
        CHECK_EQ_INT(x.error, 0);
    }
    /* Three answers, but not a second down yet: still down. */
    CHECK(mono_ms() - t0 < 900);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    RUN_UNTIL(base, state(r) == CORRAL_REDIS_UP, 2000);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_UP);
    CHECK(mono_ms() - t0 >= 900);

    /* A password now required, and the connection made again: the
     * handshake is refused, commands are not sent, Redis is down. */
    freeReplyObject(sync_cmd("CONFIG SET requirepass sekrit"));
    redisContext *c = sync_conn();
    freeReplyObject(redisCommand(c, "AUTH sekrit"));
    freeReplyObject(redisCommand(c, "CLIENT KILL TYPE normal SKIPME yes"));
    run_for(base, 300);
    CHECK(!corral_redis_ready(r));
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    cmd(r, &x, 2, get);
    CHECK_EQ_INT(x.error, -ENOTCONN);
    freeReplyObject(redisCommand(c, "CONFIG SET requirepass %s", ""));
    redisFree(c);
    RUN_UNTIL(base, state(r) == CORRAL_REDIS_UP, 5000);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_UP);

    /* Killed: down at once; back within a second of its restart. */
    redisd_kill();
    run_for(base, 50);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    cmd(r, &x, 2, get);
    CHECK(x.error != 0);
    CHECK(redisd_start());
    t0 = mono_ms();
    RUN_UNTIL(base, state(r) == CORRAL_REDIS_UP, 3000);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_UP);
    printf("# back up %llu ms after redis restarted\n",
           (unsigned long long)(mono_ms() - t0));
    corral_redis_free(r);
}

/* How many PINGs Redis has answered, from INFO commandstats. */
static long
pings_seen(void)
{
    redisReply *rep = sync_cmd("INFO commandstats");
    long n = 0;
    const char *p = rep && rep->type == REDIS_REPLY_STRING
                        ? strstr(rep->str, "cmdstat_ping:calls=")
                        : NULL;
    if (p)
        n = strtol(p + strlen("cmdstat_ping:calls="), NULL, 10);
    freeReplyObject(rep);
    return n;
}

/* While Redis is down but connected, it is asked several times a second
 * (not once a second), so it is up again within a few ticks of answering:
 * while it is down the fleet's single flight is per instance, and every
 * second of that may cost an upstream call per key and instance. */
static void
test_health_probes_often(void)
{
    struct corral_redis *r = up_conn();
    freeReplyObject(sync_cmd("CONFIG SET maxmemory-policy noeviction"));
    freeReplyObject(sync_cmd("CONFIG SET maxmemory 1"));
    struct reply x;
    const char *set[3] = {"SET", "t:p", "v"};
    for (int i = 0; i < 3; i++)
        cmd(r, &x, 3, set);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    freeReplyObject(sync_cmd("CONFIG SET maxmemory 0"));
    long before = pings_seen();
    run_for(base, 900); /* inside the second it must stay down */
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    CHECK(pings_seen() - before >= 2);
    RUN_UNTIL(base, state(r) == CORRAL_REDIS_UP, 3000);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_UP);
    corral_redis_free(r);
}

/* A cluster's MOVED or ASK is an answer from a working server: handed to
 * the caller as the error reply it is, but no failure of Redis, so a storm
 * of them (a resharding) never marks it down; other error replies do. */
static void
test_redirection_not_failure(void)
{
    struct corral_redis *r = up_conn();
    struct reply x;
    const char *moved[3] = {
        "EVAL", "return redis.error_reply('MOVED 1 127.0.0.1:1')", "0"};
    const char *ask[3] = {"EVAL",
                          "return redis.error_reply('ASK 1 127.0.0.1:1')", "0"};
    const char *boom[3] = {"EVAL", "return redis.error_reply('ERR boom')", "0"};
    for (int i = 0; i < 4; i++) {
        cmd(r, &x, 3, i % 2 ? ask : moved);
        CHECK_EQ_INT(x.error, -EIO);
        CHECK(strncmp(x.str, i % 2 ? "ASK 1" : "MOVED 1", 5) == 0);
    }
    CHECK_EQ_INT(state(r), CORRAL_REDIS_UP);
    for (int i = 0; i < 3; i++)
        cmd(r, &x, 3, boom);
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    corral_redis_free(r);
}

/* A database Redis does not have: the probe says so (a configuration
 * error); the connection never becomes ready. An unreachable Redis is an
 * outage for the probe, not a mistake. */
static void
test_db(void)
{
    struct corral_redis_options o = {
        .host = "127.0.0.1", .port = redisd_port, .db = 99, .timeout_ms = 100};
    char err[256] = "";
    CHECK_EQ_INT(corral_redis_probe(&o, 1000, 0, NULL, NULL, err, sizeof(err)),
                 -EINVAL);
    CHECK(strstr(err, "SELECT") != NULL);
    o.db = 3;
    CHECK_EQ_INT(corral_redis_probe(&o, 1000, 0, NULL, NULL, err, sizeof(err)),
                 0);
    o.password = "wrong";
    CHECK_EQ_INT(corral_redis_probe(&o, 1000, 0, NULL, NULL, err, sizeof(err)),
                 -EINVAL);
    CHECK(strstr(err, "AUTH") != NULL);
    o.password = NULL;
    o.port = free_port();
    CHECK(corral_redis_probe(&o, 500, 0, NULL, NULL, err, sizeof(err)) < 0);
    CHECK(corral_redis_probe(&o, 500, 0, NULL, NULL, err, sizeof(err)) !=
          -EINVAL);

    struct corral_redis *r = conn(redisd_port, 100, 99);
    run_for(base, 500);
    CHECK(!corral_redis_ready(r));
    CHECK_EQ_INT(state(r), CORRAL_REDIS_DOWN);
    corral_redis_free(r);

    /* db 3 is selected: a key set through it is in db 3 only. */
    r = conn(redisd_port, 300, 3);
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    struct reply x;
    const char *set[3] = {"SET", "t:db", "three"};
    cmd(r, &x, 3, set);
    CHECK_EQ_INT(x.error, 0);
    redisReply *rep = sync_cmd("GET t:db");
    CHECK(rep != NULL && rep->type == REDIS_REPLY_NIL);
    freeReplyObject(rep);
    corral_redis_free(r);
}

struct heard {
    int messages, subscribed, lost;
    char last[64];
};

static void
heard_message(const char *msg, size_t len, void *arg)
{
    struct heard *h = arg;
    h->messages++;
    if (len >= sizeof(h->last))
        len = sizeof(h->last) - 1;
    memcpy(h->last, msg, len);
    h->last[len] = '\0';
}

static void
heard_subscribed(void *arg)
{
    ((struct heard *)arg)->subscribed++;
}

static void
heard_lost(void *arg)
{
    ((struct heard *)arg)->lost++;
}

static const struct corral_redis_listener listener = {
    .message = heard_message,
    .subscribed = heard_subscribed,
    .lost = heard_lost,
};

/* Two channels on one subscriber: messages reach each; a killed
 * subscriber connection says lost, comes back and says subscribed again
 * (the resync point); an unsubscribed channel hears nothing. */
static void
test_subscribe(void)
{
    struct corral_redis *r = conn(redisd_port, 300, 0);
    struct heard a = {0}, b = {0};
    CHECK_EQ_INT(corral_redis_subscribe(r, "t:a", &listener, &a), 0);
    CHECK_EQ_INT(corral_redis_subscribe(r, "t:b", &listener, &b), 0);
    RUN_UNTIL(base, corral_redis_listening(r), 2000);
    CHECK(corral_redis_listening(r));
    CHECK_EQ_INT(a.subscribed, 1);
    CHECK_EQ_INT(b.subscribed, 1);
    freeReplyObject(sync_cmd("PUBLISH t:a %b", "x\0y", (size_t)3));
    RUN_UNTIL(base, a.messages > 0, 2000);
    CHECK_EQ_INT(a.messages, 1);
    CHECK_EQ_INT(b.messages, 0);
    CHECK(memcmp(a.last, "x\0y", 3) == 0);
    freeReplyObject(sync_cmd("CLIENT KILL TYPE pubsub"));
    RUN_UNTIL(base, a.lost > 0, 2000);
    CHECK_EQ_INT(a.lost, 1);
    CHECK(!corral_redis_listening(r));
    RUN_UNTIL(base, a.subscribed == 2, 3000);
    CHECK_EQ_INT(a.subscribed, 2);
    CHECK_EQ_INT(b.subscribed, 2);
    CHECK(corral_redis_listening(r));
    CHECK_EQ_INT(corral_redis_subscribe(r, "t:b", NULL, NULL), 0);
    RUN_UNTIL(base, corral_redis_listening(r), 2000);
    freeReplyObject(sync_cmd("PUBLISH t:b nope"));
    freeReplyObject(sync_cmd("PUBLISH t:a yes"));
    RUN_UNTIL(base, a.messages == 2, 2000);
    CHECK_EQ_STR(a.last, "yes");
    CHECK_EQ_INT(b.messages, 0);
    corral_redis_free(r);
}

/* Freed with commands in flight: each answered -ECANCELED before free
 * returns; a late callback owed hears NULL. */
static void
test_teardown(void)
{
    struct corral_redis *r = conn(redisd_port, 60, 0);
    struct corral_redis_script *s = corral_redis_script_new(r, "return 1");
    RUN_UNTIL(base, corral_redis_ready(r), 2000);
    redisd_stop();
    struct reply timed = {0}, pending = {0};
    corral_redis_eval_late(r, s, reply_cb, late_cb, &timed, 0, 0, NULL, NULL);
    RUN_UNTIL(base, timed.calls > 0, 2000);
    CHECK_EQ_INT(timed.error, -ETIMEDOUT);
    const char *ping[1] = {"PING"};
    corral_redis_command(r, reply_cb, &pending, 1, ping, NULL);
    corral_redis_free(r);
    CHECK_EQ_INT(pending.calls, 1);
    CHECK_EQ_INT(pending.error, -ECANCELED);
    CHECK_EQ_INT(timed.late_calls, 1);
    CHECK(timed.late_error != 0);
    redisd_cont();
}

/* RESP text to a reply, as hiredis reads it off a socket. */
static redisReply *
resp(const char *text)
{
    redisReader *rd = redisReaderCreate();
    void *out = NULL;
    CHECK(redisReaderFeed(rd, text, strlen(text)) == REDIS_OK);
    CHECK(redisReaderGetReply(rd, &out) == REDIS_OK && out != NULL);
    redisReaderFree(rd);
    return out;
}

/* What sentinels and ROLE answer, and what they must not be taken for. */
static void
test_sentinel_replies(void)
{
    char host[64];
    uint16_t port = 0;
    redisReply *r = resp("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
    CHECK_EQ_INT(corral_redis_master_addr(r, host, sizeof(host), &port), 0);
    CHECK_EQ_STR(host, "127.0.0.1");
    CHECK_EQ_INT(port, 6380);
    freeReplyObject(r);
    r = resp("*-1\r\n"); /* no such master */
    CHECK_EQ_INT(corral_redis_master_addr(r, host, sizeof(host), &port),
                 -ENOENT);
    freeReplyObject(r);
    r = resp("$-1\r\n");
    CHECK_EQ_INT(corral_redis_master_addr(r, host, sizeof(host), &port),
                 -ENOENT);
    freeReplyObject(r);
    static const char *const bad[] = {
        "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n65536\r\n", /* port range */
        "*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n",
        "*2\r\n$9\r\n127.0.0.1\r\n$3\r\n6x0\r\n",
        "*2\r\n$0\r\n\r\n$4\r\n6380\r\n",     /* no host */
        "*1\r\n$9\r\n127.0.0.1\r\n",          /* no port */
        "*2\r\n$9\r\n127.0.0.1\r\n:6380\r\n", /* integer */
        "-IDONTKNOW no\r\n",
        "+OK\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = resp(bad[i]);
        CHECK_EQ_INT(corral_redis_master_addr(r, host, sizeof(host), &port),
                     -EPROTO);
        freeReplyObject(r);
    }
    /* A host longer than the buffer is refused, not cut. */
    r = resp("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
    CHECK_EQ_INT(corral_redis_master_addr(r, host, 9, &port), -EPROTO);
    freeReplyObject(r);
    CHECK_EQ_INT(corral_redis_master_addr(NULL, host, 9, &port), -EPROTO);

    r = resp("*3\r\n$6\r\nmaster\r\n:10\r\n*0\r\n");
    CHECK_EQ_INT(corral_redis_role_master(r), 1);
    freeReplyObject(r);
    r = resp("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n"
             "$9\r\nconnected\r\n:10\r\n");
    CHECK_EQ_INT(corral_redis_role_master(r), 0);
    freeReplyObject(r);
    r = resp("*2\r\n$8\r\nsentinel\r\n*0\r\n");
    CHECK_EQ_INT(corral_redis_role_master(r), 0);
    freeReplyObject(r);
    r = resp("$6\r\nmaster\r\n");
    CHECK_EQ_INT(corral_redis_role_master(r), -1);
    freeReplyObject(r);
    CHECK_EQ_INT(corral_redis_role_master(NULL), -1);
}

/* A connection to the primary that fake sentinel s names for "m". */
static struct corral_redis *
sentinel_conn(const struct fake_redis *s, uint64_t timeout_ms)
{
    struct corral_redis_node node = {"127.0.0.1", s->port};
    struct corral_redis_options o = {
        .timeout_ms = timeout_ms,
        .master = "m",
        .sentinels = &node,
        .n_sentinels = 1,
    };
    char err[128];
    struct corral_redis *r = corral_redis_new(base, &o, err, sizeof(err));
    CHECK(r != NULL);
    return r;
}

/* Bug: a READONLY left its "demoted" mark behind when its connection went
 * before the drop it asked for ran (here: the same read brought a reply
 * nobody asked for, and hiredis closed the connection). The next
 * connection's stuck drop was then taken for a demotion: not counted as
 * stuck, logged as READONLY, reconnected without backoff. */
static void
test_stale_demoted_flag(void)
{
    struct fake_redis primary, sentinel;
    const struct fake_redis_rule p_rules[] = {
        {"PING", 1, 0, "+PONG\r\n", 0},
        {"ROLE", 0, 0, FAKE_REDIS_MASTER, 0},
        {"SET", 1, 0,
         "-READONLY You can't write against a read only replica.\r\n"
         "-ERR nobody asked\r\n",
         0},
        {"PING", 2, 1, "+PONG\r\n", 0}, /* the handshake's */
        {"*", 2, 0, NULL, 0},           /* then nothing, ever */
        {NULL, 0, 0, NULL, 0},
    };
    fake_redis_start(&primary, p_rules);
    char addr[64];
    const struct fake_redis_rule s_rules[] = {
        {"SENTINEL", 0, 0,
         fake_redis_addr_answer(addr, sizeof(addr), primary.port), 0},
        {"SUBSCRIBE", 0, 0, FAKE_REDIS_SUBSCRIBED, 0},
        {NULL, 0, 0, NULL, 0},
    };
    fake_redis_start(&sentinel, s_rules);
    struct corral_redis *r = sentinel_conn(&sentinel, 100);
    WAIT_FOR(base, corral_redis_ready(r));
    struct reply x;
    const char *set[3] = {"SET", "t:k", "v"};
    cmd(r, &x, 3, set);
    CHECK_EQ_INT(x.error, -EIO);
    CHECK(strncmp(x.str, "READONLY", 8) == 0);
    WAIT_FOR(base, primary.counts->conns == 2 && corral_redis_ready(r));
    /* Unanswered from now: the SET and the health PINGs (Redis is down
     * since the READONLY) time out, and the connection is taken for
     * stuck. */
    cmd(r, &x, 3, set);
    CHECK_EQ_INT(x.error, -ETIMEDOUT);
    WAIT_FOR(base, !corral_redis_ready(r));
    struct corral_redis_stats st;
    corral_redis_stats(r, &st);
    CHECK_EQ_INT(st.stuck, 1);
    corral_redis_free(r);
    fake_redis_stop(&sentinel);
    fake_redis_stop(&primary);
}

/* Bug: the probe gave each step (connect, AUTH, the sentinel's answer,
 * SELECT, ROLE, the command) the whole of what was left when the server
 * was reached, so a server answering each step just in time held a
 * program's start for several times timeout_ms. Now the whole probe ends
 * by timeout_ms, an outage; and a sentinel that does not answer leaves
 * time to ask the next one. */
static void
test_probe_bounded(void)
{
    enum { T = 2000, SLACK = 500 };
    char err[256];
    const char *argv[2] = {"HGETALL", "t:gens"};
    redisReply *rep = NULL;

    /* A primary answering each step in T / 2: 1.5 T in all. */
    struct fake_redis slow;
    const struct fake_redis_rule slow_rules[] = {
        {"AUTH", 0, 0, "+OK\r\n", T / 2},
        {"SELECT", 0, 0, "+OK\r\n", T / 2},
        {"HGETALL", 0, 0, "*0\r\n", T / 2},
        {NULL, 0, 0, NULL, 0},
    };
    fake_redis_start(&slow, slow_rules);
    struct corral_redis_options o = {
        .host = "127.0.0.1", .port = slow.port, .db = 2, .password = "pw"};
    uint64_t t0 = mono_ms();
    int rc = corral_redis_probe(&o, T, 2, argv, &rep, err, sizeof(err));
    uint64_t took = mono_ms() - t0;
    printf("# slow primary: %d (%s) after %llu ms\n", rc, rc ? err : "",
           (unsigned long long)took);
    if (rep != NULL)
        freeReplyObject(rep);
    CHECK_EQ_INT(rc, -ETIMEDOUT);
    CHECK(rep == NULL);
    CHECK(took < T + SLACK);

    /* A sentinel answering its AUTH and its question in 0.7 T each. */
    struct fake_redis sentinel;
    char addr[64];
    const struct fake_redis_rule s_rules[] = {
        {"AUTH", 0, 0, "+OK\r\n", 7 * T / 10},
        {"SENTINEL", 0, 0,
         fake_redis_addr_answer(addr, sizeof(addr), slow.port), 7 * T / 10},
        {NULL, 0, 0, NULL, 0},
    };
    fake_redis_start(&sentinel, s_rules);
    struct corral_redis_node nodes[2] = {{"127.0.0.1", sentinel.port},
                                         {"127.0.0.1", redisd_port}};
    struct corral_redis_options so = {.master = "m",
                                      .sentinels = nodes,
                                      .n_sentinels = 1,
                                      .sentinel_password = "spw"};
    t0 = mono_ms();
    rc = corral_redis_probe(&so, T, 0, NULL, NULL, err, sizeof(err));
    took = mono_ms() - t0;
    printf("# slow sentinel: %d (%s) after %llu ms\n", rc, err,
           (unsigned long long)took);
    CHECK(rc < 0 && rc != -EINVAL);
    CHECK(took < T + SLACK);

    /* A sentinel that never answers first, one that names the real
     * Redis next: the second is asked in time. */
    struct fake_redis mute, good;
    const struct fake_redis_rule mute_rules[] = {{"*", 0, 0, NULL, 0},
                                                 {NULL, 0, 0, NULL, 0}};
    const struct fake_redis_rule good_rules[] = {
        {"SENTINEL", 0, 0,
         fake_redis_addr_answer(addr, sizeof(addr), redisd_port), 0},
        {NULL, 0, 0, NULL, 0},
    };
    fake_redis_start(&mute, mute_rules);
    fake_redis_start(&good, good_rules);
    nodes[0].port = mute.port;
    nodes[1].port = good.port;
    so.n_sentinels = 2;
    so.sentinel_password = NULL;
    t0 = mono_ms();
    rc = corral_redis_probe(&so, T, 0, NULL, NULL, err, sizeof(err));
    took = mono_ms() - t0;
    printf("# a mute sentinel, then a good one: %d (%s) after %llu ms\n", rc,
           rc ? err : "", (unsigned long long)took);
    CHECK_EQ_INT(rc, 0);
    CHECK(took < T + SLACK);
    fake_redis_stop(&good);
    fake_redis_stop(&mute);
    fake_redis_stop(&sentinel);
    fake_redis_stop(&slow);
}

/* Bug: the watch subscribed on whatever node it reached and asked it
 * nothing. A node that is no sentinel of this master (a plain Redis)
 * took the SUBSCRIBE and kept it deaf for good; and a watch that came
 * back after a gap (its sentinel silent, then given up) never learnt of
 * a switch published meanwhile. Now it asks its sentinel for the primary
 * first: an error or no such master moves it on, another primary than
 * ours is a switch. */
static void
test_watch_asks_its_sentinel(void)
{
    struct fake_redis a, b, s1, s2;
    const struct fake_redis_rule p_rules[] = {
        {"ROLE", 0, 0, FAKE_REDIS_MASTER, 0},
        {"PING", 0, 0, "+PONG\r\n", 0},
        {NULL, 0, 0, NULL, 0},
    };
    fake_redis_start(&a, p_rules);
    fake_redis_start(&b, p_rules);
    char addr_a[64], addr_b[64];
    /* s1 names a, and falls silent after the first subscription. */
    const struct fake_redis_rule s1_rules[] = {
        {"SENTINEL", 0, 0,
         fake_redis_addr_answer(addr_a, sizeof(addr_a), a.port), 0},
        {"SUBSCRIBE", 0, 1, FAKE_REDIS_SUBSCRIBED, 0},
        {NULL, 0, 0, NULL, 0},
    };
    /* s2 names b: the sentinels failed a over while the watch was on
     * s1. */
    const struct fake_redis_rule s2_rules[] = {
        {"SENTINEL", 0, 0,
         fake_redis_addr_answer(addr_b, sizeof(addr_b), b.port), 0},
        {"SUBSCRIBE", 0, 0, FAKE_REDIS_SUBSCRIBED, 0},
        {NULL, 0, 0, NULL, 0},
    };
    fake_redis_start(&s1, s1_rules);
    fake_redis_start(&s2, s2_rules);

    /* A plain Redis first: no sentinel, so the watch moves on to s1. */
    struct corral_redis_node nodes[3] = {{"127.0.0.1", redisd_port},
                                         {"127.0.0.1", s1.port},
                                         {"127.0.0.1", s2.port}};
    struct corral_redis_options o = {
        .timeout_ms = 100,
        .master = "m",
        .sentinels = nodes,
        .n_sentinels = 2,
    };
    char err[128];
    struct corral_redis *r = corral_redis_new(base, &o, err, sizeof(err));
    CHECK(r != NULL);
    WAIT_FOR(base, corral_redis_ready(r) && s1.counts->matched[1] == 1);
    char want[64];
    snprintf(want, sizeof(want), "m (127.0.0.1:%u)", (unsigned)a.port);
    CHECK_EQ_STR(corral_redis_name(r), want);
    corral_redis_free(r);

    /* s1 then s2: s1 goes silent, the watch moves to s2, which names
     * another primary: followed as a switch. */
    nodes[0].port = s1.port;
    nodes[1].port = s2.port;
    r = corral_redis_new(base, &o, err, sizeof(err));
    CHECK(r != NULL);
    WAIT_FOR(base, corral_redis_ready(r));
    CHECK_EQ_STR(corral_redis_name(r), want);
    struct corral_redis_stats st;
    WAIT_FOR(base, (corral_redis_stats(r, &st), st.switches == 1) &&
                       corral_redis_ready(r));
    snprintf(want, sizeof(want), "m (127.0.0.1:%u)", (unsigned)b.port);
    CHECK_EQ_STR(corral_redis_name(r), want);
    corral_redis_free(r);
    fake_redis_stop(&s2);
    fake_redis_stop(&s1);
    fake_redis_stop(&b);
    fake_redis_stop(&a);
}

/* Commands are formatted as hiredis formats them, on the stack or, when
 * longer than the buffer, on the heap: every length's digit count, empty
 * and binary arguments, C strings. */
static void
check_format(int argc, const char *const *argv, const size_t *lens, size_t cap)
{
    char *want;
    int wlen = redisFormatCommandArgv(&want, argc, (const char **)argv, lens);
    CHECK(wlen > 0);
    char buf[4096], *heap;
    CHECK(cap <= sizeof(buf));
    size_t len = corral_redis_format(buf, cap, &heap, argc, argv, lens);
    CHECK_EQ_INT(len, (size_t)wlen);
    CHECK((heap != NULL) == (len + 1 > cap));
    /* The NUL too: hiredis looks past a lone argument's end. */
    CHECK(memcmp(heap ? heap : buf, want, len + 1) == 0);
    free(heap);
    redisFreeCommand(want);
}

static void
test_format(void)
{
    const char *get[] = {"GET", "k"};
    check_format(2, get, NULL, 4096);
    check_format(2, get, NULL, 0);
    const char *one[] = {"PING"};
    check_format(1, one, NULL, 4096);
    static char big[3000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i % 7 == 0 ? '\0' : i % 5 == 0 ? '\r' : 'a' + i % 26);
    const char *av[12];
    size_t lv[12];
    size_t sizes[] = {0, 1, 9, 10, 99, 100, 999, 1000, 2999, 2, 3, 11};
    for (int i = 0; i < 12; i++) {
        av[i] = big;
        lv[i] = sizes[i];
    }
    for (int argc = 1; argc <= 12; argc++)
        for (size_t cap = 0; cap <= 4096; cap += 1024)
            check_format(argc, av, lv, cap);
    /* Exactly full with the NUL, and one byte short. */
    char *want;
    int wlen = redisFormatCommandArgv(&want, 2, get, NULL);
    redisFreeCommand(want);
    check_format(2, get, NULL, (size_t)wlen + 1);
    check_format(2, get, NULL, (size_t)wlen);
    /* Ten arguments and more: the count's two digits. */
    const char *many[12] = {"DEL", "a", "b", "c", "d", "e",
                            "f",   "g", "h", "i", "j", "k"};
    check_format(12, many, NULL, 4096);
}

int
main(void)
{
    redisd_setup();
    RUN(test_format);
    RUN(test_commands);
    RUN(test_scripts);
    RUN(test_timeout_and_late);
    RUN(test_timeout_after_answered_head);
    RUN(test_stuck);
    RUN(test_health);
    RUN(test_health_probes_often);
    RUN(test_redirection_not_failure);
    RUN(test_db);
    RUN(test_subscribe);
    RUN(test_teardown);
    RUN(test_sentinel_replies);
    RUN(test_stale_demoted_flag);
    RUN(test_probe_bounded);
    RUN(test_watch_asks_its_sentinel);
    event_base_free(base);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
