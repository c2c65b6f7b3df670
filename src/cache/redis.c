/* redis.c — one Redis server (see corral/redis.h).
 *
 * A command is a struct cmd on the pending queue, in the order it was
 * written, which is the order Redis answers. Every command has the same
 * timeout, so the queue is ordered by deadline too and one timer, armed for
 * its head, serves them all (h2o's deadline lists). hiredis holds a sent
 * command until its reply callback, which it calls exactly once (with a NULL
 * reply when the connection goes); a timeout answers the caller first, and
 * the reply then only frees the command. A command given while the
 * connection is not ready is answered -ENOTCONN from the refused queue on
 * the next loop turn. The handshake's commands are not on the queue: the
 * connect timer bounds the whole handshake.
 *
 * With sentinels, every connect starts by asking them, one at a time and
 * each within the timeout, for the primary's address (the ask connection);
 * the handshake then checks ROLE. A third connection (the watch) listens
 * to one sentinel's +switch-master, with every step answered within the
 * timeout and a keepalive while subscribed, and moves to the next
 * sentinel on any failure; a switch, or a READONLY from a primary that
 * was demoted, drops both connections and asks again at once.
 *
 * Made with cluster seeds, a struct corral_redis holds a cluster client
 * (cluster.c, whose nodes are plain struct corral_redis) and every public
 * call hands over to it at its first line: its callers (the L2 tier, the
 * gateway's fleet) stay the same on one server and on a cluster. */
#include "corral/redis.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "corral/cluster.h"
#include "redis_impl.h"
#include "timeutil.h"
#include "xalloc.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000
#define CONNECT_TIMEOUT_MS 1000 /* connect and handshake */
#define STUCK_AFTER 3           /* timeouts in a row, no reply byte between */
#define FAIL_AFTER 3            /* failures in a row that make Redis down */
#define UP_AFTER 3              /* answers in a row that make it up again... */
#define UP_HOLD_MS 1000         /* ...no sooner than this after it went down */
#define HEALTH_MS 250           /* a PING this often while down */
#define WATCH_IDLE_MS 2000      /* the watch's silence before a keepalive */
#define MAX_CHANNELS 4
#define MAX_SCRIPTS 16

/* ---- hiredis on the loop ----
 *
 * hiredis's libevent adapter, with two changes that spare the epoll_ctl()
 * calls it makes on every read and every batch of commands. Its read event
 * persists (hiredis asks for it again after every read; a one-shot event is
 * taken out of epoll and put back each time). And commands are written at
 * the end of the loop turn they were given in, by an event made active then
 * (libevent runs it after the callbacks already due this turn, so a
 * turn's commands still go out in one write), rather than when epoll next
 * says the socket is writable: only a connect in progress, or a write the
 * socket could not take whole, waits for EV_WRITE. */

struct attached {
    redisAsyncContext *ac;
    struct event *rev, *wev, *flush;
};

/* The connection whose write is being handled: hiredis asks it for
 * EV_WRITE only when the socket took less than all. (hiredis may free the
 * connection inside the write, so this is not kept in it.) */
static _Thread_local struct attached *writing;

static void
attached_read(evutil_socket_t fd, short what, void *arg)
{
    struct attached *a = arg;
    redisAsyncHandleRead(a->ac);
}

static void
attached_write(evutil_socket_t fd, short what, void *arg)
{
    struct attached *a = arg;
    writing = a;
    redisAsyncHandleWrite(a->ac);
    writing = NULL;
}

static void
attached_add_read(void *arg)
{
    struct attached *a = arg;
    event_add(a->rev, NULL); /* no-op while added */
}

static void
attached_del_read(void *arg)
{
    struct attached *a = arg;
    event_del(a->rev);
}

static void
attached_add_write(void *arg)
{
    struct attached *a = arg;
    if (writing == a || !(a->ac->c.flags & REDIS_CONNECTED))
        event_add(a->wev, NULL);
    else if (!event_pending(a->wev, EV_WRITE, NULL))
        event_active(a->flush, EV_WRITE, 0);
}

static void
attached_del_write(void *arg)
{
    struct attached *a = arg;
    event_del(a->wev);
}

static void
attached_cleanup(void *arg)
{
    struct attached *a = arg;
    event_free(a->rev);
    event_free(a->wev);
    event_free(a->flush);
    free(a);
}

/* redisLibeventAttach(), as above. */
static void
attach(redisAsyncContext *ac, struct event_base *base)
{
    struct attached *a = xcalloc(1, sizeof(*a));
    int fd = ac->c.fd;
    a->ac = ac;
    a->rev = event_new(base, fd, EV_READ | EV_PERSIST, attached_read, a);
    a->wev = event_new(base, fd, EV_WRITE, attached_write, a);
    a->flush = event_new(base, -1, 0, attached_write, a);
    if (a->rev == NULL || a->wev == NULL || a->flush == NULL)
        abort(); /* out of memory */
    ac->ev.addRead = attached_add_read;
    ac->ev.delRead = attached_del_read;
    ac->ev.addWrite = attached_add_write;
    ac->ev.delWrite = attached_del_write;
    ac->ev.cleanup = attached_cleanup;
    ac->ev.data = a;
    event_add(a->rev, NULL);
    event_add(a->wev, NULL); /* the connect's end */
}

struct cmd {
    TAILQ_ENTRY(cmd) link; /* pending or refused */
    struct corral_redis *r;
    corral_redis_reply_cb *cb;
    corral_redis_reply_cb *late; /* hears a reply that came after cb's
                                  * -ETIMEDOUT (or NULL, -EIO if none) */
    void *arg;
    uint64_t sent_ms;  /* monotonic */
    uint64_t sent_us;  /* monotonic, for the reply time histogram */
    uint64_t deadline; /* monotonic ms */
    bool listed;       /* on pending or refused */
    bool done;         /* cb has fired: the reply only frees it */
    bool timed_out;    /* cb heard -ETIMEDOUT: late hears the reply */
};
TAILQ_HEAD(cmd_list, cmd);

struct corral_redis_script {
    char *body;
    char sha[41]; /* from SCRIPT LOAD; "" until loaded */
    struct corral_redis_cluster_script *cs; /* a cluster's: its copy */
};

struct chan {
    char *name;
    const struct corral_redis_listener *l;
    void *arg;
    bool confirmed;
};

struct corral_redis {
    struct event_base *base;
    char *host, *unix_path, *user, *password;
    char name[280]; /* for logs */
    char db[16];    /* "" when 0 */
    uint16_t port;
    uint64_t timeout_ms;

    /* The command connection. */
    redisAsyncContext *ac; /* NULL while down */
    bool ready;            /* handshake done */
    unsigned hs_left;      /* handshake replies still owed */
    uint64_t backoff_ms;
    struct event *retry_ev; /* reconnect, or give up the handshake */
    struct event *reset_ev; /* drop a stuck connection, off the stack */
    struct cmd_list pending, refused;
    struct event *timer_ev;   /* the pending head's deadline, or before */
    uint64_t timer_at;        /* when timer_ev fires; 0: not armed */
    struct event *refuse_ev;  /* answers the refused queue */
    uint64_t last_reply_ms;   /* any reply, late ones too */
    size_t partial;           /* unparsed reply bytes at the last check */
    unsigned timeouts_in_row; /* with no reply byte between */

    /* Health. */
    unsigned fails, oks; /* in a row */
    uint64_t down_since; /* monotonic ms */
    char last_error[160];
    char logged_error[160]; /* the last handshake error logged */
    struct event *health_ev;

    struct corral_redis_script *scripts[MAX_SCRIPTS];
    size_t n_scripts;

    /* The subscriber connection. */
    redisAsyncContext *sub_ac;
    bool listening;
    uint64_t sub_backoff_ms;
    struct event *sub_retry_ev;
    struct chan chans[MAX_CHANNELS];
    size_t n_chans;

    /* Sentinel (n_sentinels > 0). */
    char *master, *s_user, *s_password;
    struct corral_redis_node *sentinels;
    size_t n_sentinels;
    redisAsyncContext *ask_ac; /* asking a sentinel for the primary */
    size_t ask_next, ask_tried;
    struct event *ask_ev;        /* the asked sentinel's deadline */
    redisAsyncContext *watch_ac; /* subscribed to +switch-master */
    size_t watch_at, watch_next; /* the watch's sentinel, the next one */
    uint64_t watch_backoff_ms;
    struct event *watch_ev; /* retry, deadline or keepalive */
    bool watch_subscribed;  /* the subscription was confirmed */
    bool watch_owed;        /* an answer is due by watch_ev */
    char watch_logged[160]; /* the last failure logged; "" once fine */
    bool demoted;           /* READONLY heard: drop and ask again */
    char fled_host[256];    /* the primary the last switch left */
    uint16_t fled_port;

    struct corral_redis_cluster *cluster; /* cluster: every call goes there */
    void (*watch)(void *arg);             /* corral_redis_watch() */
    void *watch_arg;

    bool closing;
    struct corral_redis_stats stats;
};

const char *
corral_redis_state_name(enum corral_redis_state s)
{
    return s == CORRAL_REDIS_UP ? "up" : "down";
}

const char *
corral_redis_name(const struct corral_redis *r)
{
    return r->name;
}

size_t
corral_redis_tagged_name(char *out, size_t cap, const char *prefix,
                         const char *kind, const void *id, size_t idlen)
{
    /* FNV-1a: every instance and version must agree, and the tag only
     * spreads names over slots (their full bytes keep them apart). */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < idlen; i++)
        h = (h ^ ((const unsigned char *)id)[i]) * 16777619u;
    static const char hex[] = "0123456789abcdef";
    char tag[CORRAL_REDIS_TAG_LEN] = {'{', [9] = '}'};
    for (int i = 0; i < 8; i++)
        tag[8 - i] = hex[h >> (4 * i) & 0xf];
    size_t plen = strlen(prefix), klen = strlen(kind);
    const void *parts[4] = {prefix, tag, kind, id};
    size_t lens[4] = {plen, CORRAL_REDIS_TAG_LEN, klen, idlen};
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        if (n < cap && lens[i] > 0)
            memcpy(out + n, parts[i], lens[i] < cap - n ? lens[i] : cap - n);
        n += lens[i];
    }
    return n;
}

unsigned
corral_redis_slot(const struct corral_redis *r, const char *key, size_t len)
{
    return r->cluster != NULL ? corral_redis_key_slot(key, len) : 0;
}

/* ---- health ---- */

static void
set_down(struct corral_redis *r, const char *why)
{
    if (why != NULL && why != r->last_error)
        snprintf(r->last_error, sizeof(r->last_error), "%s", why);
    r->oks = 0;
    if (r->stats.state != CORRAL_REDIS_UP)
        return;
    r->stats.state = CORRAL_REDIS_DOWN;
    r->down_since = corral_now_ms();
    corral_log(CORRAL_LOG_WARNING, "redis %s: down (%s)", r->name,
               r->last_error);
}

static void
maybe_up(struct corral_redis *r)
{
    if (r->stats.state == CORRAL_REDIS_UP || !r->ready || r->oks < UP_AFTER ||
        corral_now_ms() < r->down_since + UP_HOLD_MS)
        return;
    r->stats.state = CORRAL_REDIS_UP;
    corral_log(CORRAL_LOG_NOTICE, "redis %s: up", r->name);
}

static void
note_ok(struct corral_redis *r)
{
    r->fails = 0;
    r->oks++;
    maybe_up(r);
}

static void
note_fail(struct corral_redis *r, const char *why)
{
    snprintf(r->last_error, sizeof(r->last_error), "%s", why);
    r->oks = 0;
    if (++r->fails >= FAIL_AFTER)
        set_down(r, r->last_error);
}

static void command(struct corral_redis *r, corral_redis_reply_cb *cb,
                    corral_redis_reply_cb *late, void *arg, int argc,
                    const char *const *argv, const size_t *lens);

/* Every HEALTH_MS: a PING when Redis is down but connected, so it comes
 * back up without waiting for traffic (the answer counts like any other):
 * within UP_AFTER ticks of answering again, not seconds later, since while
 * it is down the fleet's single flight is per instance. */
static void
health_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis *r = arg;
    static const char *const ping[1] = {"PING"};
    (void)fd;
    (void)what;
    maybe_up(r);
    if (r->stats.state == CORRAL_REDIS_DOWN && r->ready)
        command(r, NULL, NULL, NULL, 1, ping, NULL);
}

/* ---- the command connection ---- */

static void start_connect(struct corral_redis *r);

static void
notify(struct corral_redis *r)
{
    if (r->watch != NULL)
        r->watch(r->watch_arg);
}

static void
schedule_retry(struct corral_redis *r)
{
    notify(r); /* an attempt was given up */
    struct timeval tv = corral_ms_to_tv(r->backoff_ms);
    event_add(r->retry_ev, &tv);
    r->backoff_ms =
        r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Closes the command connection: hiredis answers what it holds with NULL
 * replies (so its commands answer -EIO) before this returns. */
static void
drop(struct corral_redis *r, const char *why)
{
    redisAsyncContext *ac = r->ac;
    r->ready = false;
    set_down(r, why);
    if (ac == NULL)
        return;
    r->ac = NULL; /* on_disconnect ignores it now */
    ac->data = NULL;
    redisAsyncFree(ac);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    struct corral_redis *r = ac->data;
    (void)status;
    if (r == NULL || r->ac != ac)
        return;   /* one we dropped on purpose */
    r->ac = NULL; /* hiredis frees it */
    r->ready = false;
    set_down(r, ac->errstr[0] ? ac->errstr : "connection closed");
    schedule_retry(r);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct corral_redis *r = ac->data;
    if (r == NULL || r->ac != ac)
        return;
    if (status != REDIS_OK) {
        r->ac = NULL; /* hiredis frees ac after this callback */
        set_down(r, ac->errstr);
        schedule_retry(r);
        return;
    }
    redisEnableKeepAlive((redisContext *)&ac->c);
}

/* A handshake step failed: say so once per distinct reason, and retry. */
static void
handshake_failed(struct corral_redis *r, const char *step, const char *why)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "%s: %s", step, why);
    if (strcmp(msg, r->logged_error) != 0) {
        corral_log(CORRAL_LOG_ERROR, "redis %s: %s", r->name, msg);
        snprintf(r->logged_error, sizeof(r->logged_error), "%s", msg);
    }
    drop(r, msg);
    event_del(r->retry_ev);
    schedule_retry(r);
}

static void
handshake_done(struct corral_redis *r)
{
    event_del(r->retry_ev);
    r->ready = true;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->timeouts_in_row = 0;
    r->logged_error[0] = '\0';
    /* The first connection needs no proof beyond its handshake. */
    if (r->stats.connects++ == 0)
        r->oks = UP_AFTER;
    maybe_up(r);
    notify(r);
}

static void
hs_reply(redisAsyncContext *ac, void *reply, void *privdata, const char *step)
{
    struct corral_redis *r = ac->data;
    redisReply *rep = reply;
    (void)privdata;
    if (r == NULL || r->ac != ac || rep == NULL || r->hs_left == 0)
        return; /* an old connection, or this one going */
    if (rep->type == REDIS_REPLY_ERROR) {
        handshake_failed(r, step, rep->str);
        return;
    }
    note_ok(r);
    if (--r->hs_left == 0)
        handshake_done(r);
}

static void
auth_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    hs_reply(ac, reply, privdata, "AUTH");
}

static void
select_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    hs_reply(ac, reply, privdata, "SELECT");
}

static void
ping_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    hs_reply(ac, reply, privdata, "PING");
}

static void
load_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis_script *s = privdata;
    redisReply *rep = reply;
    if (rep != NULL && rep->type == REDIS_REPLY_STRING && rep->len == 40)
        memcpy(s->sha, rep->str, 41);
    hs_reply(ac, reply, privdata, "SCRIPT LOAD");
}

/* After a NOSCRIPT (SCRIPT FLUSH, say): load them again, outside any
 * handshake. */
static void
reload_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis_script *s = privdata;
    redisReply *rep = reply;
    (void)ac;
    if (rep != NULL && rep->type == REDIS_REPLY_STRING && rep->len == 40)
        memcpy(s->sha, rep->str, 41);
}

static void
send_auth(redisAsyncContext *ac, const struct corral_redis *r,
          redisCallbackFn *fn)
{
    if (r->password == NULL)
        return;
    const char *argv[3] = {"AUTH", r->user ? r->user : r->password,
                           r->password};
    redisAsyncCommandArgv(ac, fn, NULL, r->user ? 3 : 2, argv, NULL);
}

static void
role_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis *r = ac->data;
    redisReply *rep = reply;
    if (r == NULL || r->ac != ac || rep == NULL || r->hs_left == 0)
        return;
    if (rep->type != REDIS_REPLY_ERROR && corral_redis_role_master(rep) != 1) {
        handshake_failed(r, "ROLE", "not a master");
        return;
    }
    hs_reply(ac, reply, privdata, "ROLE");
}

static void ask_start(struct corral_redis *r);

static void
connect_addr(struct corral_redis *r)
{
    redisAsyncContext *ac = r->unix_path ? redisAsyncConnectUnix(r->unix_path)
                                         : redisAsyncConnect(r->host, r->port);
    if (ac == NULL || ac->err) {
        set_down(r, ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    r->ac = ac;
    r->ready = false;
    attach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Pipelined: written once connected, answered in this order. */
    r->hs_left = (r->password != NULL) + (r->db[0] != '\0') +
                 (r->n_sentinels > 0) + r->n_scripts + 1;
    send_auth(ac, r, auth_reply);
    if (r->db[0] != '\0') {
        const char *argv[2] = {"SELECT", r->db};
        redisAsyncCommandArgv(ac, select_reply, NULL, 2, argv, NULL);
    }
    if (r->n_sentinels > 0)
        redisAsyncCommand(ac, role_reply, NULL, "ROLE");
    for (size_t i = 0; i < r->n_scripts; i++) {
        const char *argv[3] = {"SCRIPT", "LOAD", r->scripts[i]->body};
        redisAsyncCommandArgv(ac, load_reply, r->scripts[i], 3, argv, NULL);
    }
    redisAsyncCommand(ac, ping_reply, NULL, "PING");
    struct timeval tv = corral_ms_to_tv(CONNECT_TIMEOUT_MS);
    event_add(r->retry_ev, &tv); /* a connect that hangs is given up */
}

static void
start_connect(struct corral_redis *r)
{
    if (r->n_sentinels == 0)
        connect_addr(r);
    else if (r->ask_ac == NULL)
        ask_start(r);
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis *r = arg;
    (void)fd;
    (void)what;
    if (r->ac != NULL && !r->ready) {
        drop(r, "no answer to the handshake");
        schedule_retry(r);
        return;
    }
    if (r->ac == NULL)
        start_connect(r);
}

static void
reset_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis *r = arg;
    bool demoted = r->demoted;
    (void)fd;
    (void)what;
    /* Cleared first: the connection it was about may have gone already,
     * and the next one is not demoted. */
    r->demoted = false;
    if (r->ac == NULL)
        return;
    event_del(r->retry_ev);
    if (demoted) {
        drop(r, "READONLY: the primary was demoted");
        r->backoff_ms = BACKOFF_MIN_MS;
        start_connect(r);
        return;
    }
    r->stats.stuck++;
    drop(r, "no answer: connection taken for stuck");
    schedule_retry(r);
}

/* ---- commands ---- */

/* Arms the timer for the pending head's deadline, unless it fires by then
 * already. Deadlines grow along the list (one timeout, commands listed as
 * sent), so a reply leaves the timer alone: armed for a head answered
 * since, it fires early, finds nothing due and is armed again. One timer
 * call per timeout, not one per reply. */
static void
arm_timer(struct corral_redis *r)
{
    struct cmd *c = TAILQ_FIRST(&r->pending);
    if (c == NULL || (r->timer_at != 0 && r->timer_at <= c->deadline))
        return;
    uint64_t now = corral_now_ms();
    struct timeval tv =
        corral_ms_to_tv(c->deadline > now ? c->deadline - now : 0);
    event_add(r->timer_ev, &tv);
    r->timer_at = c->deadline;
}

static void
unlist(struct cmd *c, struct cmd_list *from)
{
    if (c->listed) {
        TAILQ_REMOVE(from, c, link);
        c->listed = false;
    }
}

/* A replica refusing a write: READONLY, bare or inside a script's error. */
static bool
is_readonly(const char *err)
{
    return strncmp(err, "READONLY", 8) == 0 || strstr(err, "-READONLY") ||
           strstr(err, " READONLY ");
}

/* A cluster's redirection: an answer from a working server that the key
 * lives elsewhere (the cluster client follows it), or, for a command on
 * several names of a slot being migrated, that they are not all here
 * yet (TRYAGAIN: its caller asks otherwise); not a failure. */
static bool
is_redirection(const char *err)
{
    return strncmp(err, "MOVED ", 6) == 0 || strncmp(err, "ASK ", 4) == 0 ||
           strncmp(err, "TRYAGAIN", 8) == 0;
}

/* An answer about the data, from a working server: a plain read of a key
 * that holds no string (WRONGTYPE); the caller's business, not a failure. */
static bool
is_data_error(const char *err)
{
    return strncmp(err, "WRONGTYPE", 9) == 0;
}

/* Counts a reply's time in the histogram. */
static void
note_reply_time(struct corral_redis *r, const struct cmd *c)
{
    static const uint64_t bounds[CORRAL_REDIS_LATENCY_BUCKETS] =
        CORRAL_REDIS_LATENCY_BOUNDS;
    uint64_t us = corral_now_us() - c->sent_us;
    r->stats.replies++;
    r->stats.reply_us += us;
    for (int k = CORRAL_REDIS_LATENCY_BUCKETS - 1; k >= 0 && us <= bounds[k];
         k--)
        r->stats.reply_le[k]++;
}

static void
cmd_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cmd *c = privdata;
    struct corral_redis *r = c->r;
    redisReply *rep = reply;
    (void)ac;
    if (rep != NULL) {
        r->last_reply_ms = corral_now_ms();
        r->timeouts_in_row = 0; /* slow, but answering: not stuck */
        note_reply_time(r, c);
    }
    if (c->done) { /* answered at its timeout */
        if (c->late != NULL && c->timed_out)
            c->late(rep,
                    rep == NULL || rep->type == REDIS_REPLY_ERROR ? -EIO : 0,
                    c->arg);
        free(c);
        return;
    }
    unlist(c, &r->pending);
    c->done = true;
    int error = 0;
    if (rep == NULL) {
        r->stats.errors++;
        error = -EIO;
    } else if (rep->type == REDIS_REPLY_ERROR &&
               (is_redirection(rep->str) || is_data_error(rep->str))) {
        r->timeouts_in_row = 0;
        note_ok(r);
        error = -EIO;
    } else if (rep->type == REDIS_REPLY_ERROR) {
        r->stats.errors++;
        r->timeouts_in_row = 0;
        note_fail(r, rep->str);
        error = -EIO;
        if (r->n_sentinels > 0 && r->ready && is_readonly(rep->str)) {
            /* Not one more write to it: refused from now, dropped off
             * this stack. */
            r->ready = false;
            r->demoted = true;
            event_active(r->reset_ev, EV_TIMEOUT, 1);
        }
        if (strncmp(rep->str, "NOSCRIPT", 8) == 0 && r->ac != NULL)
            for (size_t i = 0; i < r->n_scripts; i++) {
                const char *argv[3] = {"SCRIPT", "LOAD", r->scripts[i]->body};
                redisAsyncCommandArgv(r->ac, reload_reply, r->scripts[i], 3,
                                      argv, NULL);
            }
    } else {
        r->timeouts_in_row = 0;
        note_ok(r);
    }
    if (c->cb)
        c->cb(rep, error, c->arg);
    free(c);
}

/* Did any reply byte come since c was sent? */
static bool
progress(struct corral_redis *r, const struct cmd *c)
{
    if (r->last_reply_ms >= c->sent_ms)
        return true;
    size_t partial = 0;
    if (r->ac != NULL && r->ac->c.reader != NULL)
        partial = r->ac->c.reader->len - r->ac->c.reader->pos;
    bool grew = partial != r->partial;
    r->partial = partial;
    return grew && partial > 0;
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis *r = arg;
    uint64_t now = corral_now_ms();
    struct cmd *c;
    (void)fd;
    (void)what;
    r->timer_at = 0;
    while ((c = TAILQ_FIRST(&r->pending)) != NULL && c->deadline <= now) {
        unlist(c, &r->pending);
        c->done = true; /* hiredis still holds it: its reply frees it */
        c->timed_out = true;
        r->stats.timeouts++;
        if (progress(r, c)) {
            r->timeouts_in_row = 0;
        } else if (++r->timeouts_in_row >= STUCK_AFTER && r->ac != NULL) {
            event_active(r->reset_ev, EV_TIMEOUT, 1);
        }
        note_fail(r, "timed out");
        if (c->cb)
            c->cb(NULL, -ETIMEDOUT, c->arg);
    }
    arm_timer(r);
}

static void
refuse_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis *r = arg;
    struct cmd *c;
    (void)fd;
    (void)what;
    while ((c = TAILQ_FIRST(&r->refused)) != NULL) {
        unlist(c, &r->refused);
        if (c->cb)
            c->cb(NULL, -ENOTCONN, c->arg);
        free(c);
    }
}

static char *
put_count(char *p, char mark, size_t n)
{
    char digits[20];
    int i = 0;
    do
        digits[i++] = (char)('0' + n % 10);
    while ((n /= 10) != 0);
    *p++ = mark;
    while (i > 0)
        *p++ = digits[--i];
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

static size_t
count_len(size_t n)
{
    size_t d = 1;
    while ((n /= 10) != 0)
        d++;
    return 1 + d + 2;
}

size_t
corral_redis_format(char *buf, size_t cap, char **heap, int argc,
                    const char *const *argv, const size_t *lens)
{
    size_t total = count_len((size_t)argc);
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        total += count_len(n) + n + 2;
    }
    *heap = NULL;
    char *p = buf;
    if (total >= cap)
        p = *heap = xmalloc(total + 1);
    p = put_count(p, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        p = put_count(p, '$', n);
        if (n > 0)
            memcpy(p, argv[i], n);
        p += n;
        *p++ = '\r';
        *p++ = '\n';
    }
    *p = '\0';
    return total;
}

/* redisAsyncCommandArgv(), formatted here: hiredis builds the command in
 * a growing sds with a printf of its own, several allocations for each. A
 * command is formatted on the stack unless it is large (a value's SET). */
static int
send_argv(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata, int argc,
          const char *const *argv, const size_t *lens)
{
    char buf[2048], *heap;
    size_t len = corral_redis_format(buf, sizeof(buf), &heap, argc, argv, lens);
    int rc =
        redisAsyncFormattedCommand(ac, fn, privdata, heap ? heap : buf, len);
    free(heap);
    return rc;
}

static void
command(struct corral_redis *r, corral_redis_reply_cb *cb,
        corral_redis_reply_cb *late, void *arg, int argc,
        const char *const *argv, const size_t *lens)
{
    if (r->closing) { /* a callback of corral_redis_free() */
        if (cb)
            cb(NULL, -ECANCELED, arg);
        return;
    }
    struct cmd *c = xcalloc(1, sizeof(*c));
    c->r = r;
    c->cb = cb;
    c->late = late;
    c->arg = arg;
    r->stats.commands++;
    if (r->ac != NULL && r->ready &&
        send_argv(r->ac, cmd_reply, c, argc, argv, lens) == REDIS_OK) {
        c->sent_ms = corral_now_ms();
        c->sent_us = corral_now_us();
        c->deadline = c->sent_ms + r->timeout_ms;
        c->listed = true;
        bool first = TAILQ_EMPTY(&r->pending);
        TAILQ_INSERT_TAIL(&r->pending, c, link);
        if (first)
            arm_timer(r);
        return;
    }
    r->stats.errors++;
    c->done = true;
    c->listed = true;
    TAILQ_INSERT_TAIL(&r->refused, c, link);
    event_active(r->refuse_ev, EV_TIMEOUT, 1);
}

void
corral_redis_command(struct corral_redis *r, corral_redis_reply_cb *cb,
                     void *arg, int argc, const char *const *argv,
                     const size_t *lens)
{
    if (r->cluster != NULL) {
        const char *key = argc > 1 ? argv[1] : "";
        size_t keylen = argc > 1 ? lens ? lens[1] : strlen(argv[1]) : 0;
        corral_redis_cluster_command(r->cluster, key, keylen, cb, arg, argc,
                                     argv, lens);
        return;
    }
    command(r, cb, NULL, arg, argc, argv, lens);
}

struct corral_redis_script *
corral_redis_script_new(struct corral_redis *r, const char *body)
{
    if (r->n_scripts == MAX_SCRIPTS)
        abort(); /* a programming error: raise MAX_SCRIPTS */
    struct corral_redis_script *s = xcalloc(1, sizeof(*s));
    r->scripts[r->n_scripts++] = s;
    if (r->cluster != NULL) {
        s->cs = corral_redis_cluster_script_new(r->cluster, body);
        return s;
    }
    s->body = xstrndup(body, strlen(body));
    if (r->ac != NULL) {
        /* A script added while connected: load it now too. */
        const char *argv[3] = {"SCRIPT", "LOAD", s->body};
        redisAsyncCommandArgv(r->ac, reload_reply, s, 3, argv, NULL);
    }
    return s;
}

#define EVAL_ARGS_MAX 256

void
corral_redis_eval(struct corral_redis *r,
                  const struct corral_redis_script *script,
                  corral_redis_reply_cb *cb, void *arg, int nkeys, int argc,
                  const char *const *argv, const size_t *lens)
{
    corral_redis_eval_late(r, script, cb, NULL, arg, nkeys, argc, argv, lens);
}

void
corral_redis_eval_late(struct corral_redis *r,
                       const struct corral_redis_script *script,
                       corral_redis_reply_cb *cb, corral_redis_reply_cb *late,
                       void *arg, int nkeys, int argc, const char *const *argv,
                       const size_t *lens)
{
    const char *av[EVAL_ARGS_MAX + 3];
    size_t lv[EVAL_ARGS_MAX + 3];
    char nk[16];
    if (argc > EVAL_ARGS_MAX || (r->cluster != NULL && nkeys < 1))
        abort(); /* a programming error */
    if (r->cluster != NULL) {
        corral_redis_cluster_eval_late(r->cluster, script->cs, cb, late, arg,
                                       nkeys, argc, argv, lens);
        return;
    }
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    av[1] = script->sha;
    av[2] = nk;
    lv[0] = 7;
    lv[1] = strlen(script->sha);
    lv[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[i + 3] = argv[i];
        lv[i + 3] = lens ? lens[i] : strlen(argv[i]);
    }
    command(r, cb, late, arg, argc + 3, av, lv);
}

void
corral_redis_flush(struct corral_redis *r)
{
    /* The bare write, not redisAsyncHandleWrite(): an error here must not
     * run every pending callback inside the caller's call. hiredis sees
     * the error at its next event. */
    int done = 0;
    if (r->cluster != NULL)
        corral_redis_cluster_flush(r->cluster);
    else if (r->ac != NULL && r->ready)
        redisBufferWrite(&r->ac->c, &done);
}

bool
corral_redis_ready(const struct corral_redis *r)
{
    if (r->cluster != NULL)
        return corral_redis_cluster_ready(r->cluster);
    return r->ac != NULL && r->ready;
}

bool
corral_redis_struggling(const struct corral_redis *r)
{
    if (r->cluster != NULL)
        return corral_redis_cluster_struggling(r->cluster);
    return !corral_redis_ready(r) || r->timeouts_in_row > 0;
}

void
corral_redis_watch(struct corral_redis *r, void (*fn)(void *arg), void *arg)
{
    r->watch = fn;
    r->watch_arg = arg;
}

bool
corral_redis_connecting(const struct corral_redis *r)
{
    return r->ac != NULL && !r->ready;
}

bool
corral_redis_ever_ready(const struct corral_redis *r)
{
    return r->stats.connects > 0;
}

uint64_t
corral_redis_timeout(const struct corral_redis *r)
{
    return r->timeout_ms;
}

/* ---- the subscriber connection ---- */

static void start_sub(struct corral_redis *r);

static void
sub_went(struct corral_redis *r)
{
    bool was = r->listening;
    r->listening = false;
    for (size_t i = 0; i < r->n_chans; i++)
        r->chans[i].confirmed = false;
    if (was)
        for (size_t i = 0; i < r->n_chans; i++)
            if (r->chans[i].l && r->chans[i].l->lost)
                r->chans[i].l->lost(r->chans[i].arg);
}

static void
schedule_sub_retry(struct corral_redis *r)
{
    struct timeval tv = corral_ms_to_tv(r->sub_backoff_ms);
    event_add(r->sub_retry_ev, &tv);
    r->sub_backoff_ms = r->sub_backoff_ms * 2 > BACKOFF_MAX_MS
                            ? BACKOFF_MAX_MS
                            : r->sub_backoff_ms * 2;
}

static void
stop_sub(struct corral_redis *r)
{
    redisAsyncContext *ac = r->sub_ac;
    if (ac == NULL)
        return;
    r->sub_ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
    sub_went(r);
}

static void
on_sub_disconnect(const redisAsyncContext *ac, int status)
{
    struct corral_redis *r = ac->data;
    (void)status;
    if (r == NULL || r->sub_ac != ac)
        return;
    r->sub_ac = NULL; /* hiredis frees it */
    sub_went(r);
    schedule_sub_retry(r);
}

static void
on_sub_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK) {
        on_sub_disconnect(ac, status);
        return;
    }
    redisEnableKeepAlive((redisContext *)&ac->c);
}

static void
sub_auth_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis *r = ac->data;
    redisReply *rep = reply;
    (void)privdata;
    if (r == NULL || r->sub_ac != ac || rep == NULL ||
        rep->type != REDIS_REPLY_ERROR)
        return;
    /* Refused: the subscription after it fails too; start over later. */
    stop_sub(r);
    schedule_sub_retry(r);
}

static struct chan *
find_chan(struct corral_redis *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n_chans; i++)
        if (strlen(r->chans[i].name) == len &&
            memcmp(r->chans[i].name, name, len) == 0)
            return &r->chans[i];
    return NULL;
}

static void
on_message(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis *r = privdata;
    redisReply *rep = reply;
    if (rep == NULL || r->sub_ac != ac || rep->type != REDIS_REPLY_ARRAY ||
        rep->elements != 3 || rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_STRING)
        return; /* the connection going, or not a message */
    struct chan *ch =
        find_chan(r, rep->element[1]->str, (size_t)rep->element[1]->len);
    if (ch == NULL)
        return;
    if (strcmp(rep->element[0]->str, "subscribe") == 0) {
        ch->confirmed = true;
        for (size_t i = 0; i < r->n_chans; i++)
            if (!r->chans[i].confirmed)
                return;
        r->listening = true;
        r->sub_backoff_ms = BACKOFF_MIN_MS;
        for (size_t i = 0; i < r->n_chans; i++)
            if (r->chans[i].l && r->chans[i].l->subscribed)
                r->chans[i].l->subscribed(r->chans[i].arg);
        return;
    }
    if (strcmp(rep->element[0]->str, "message") != 0 ||
        rep->element[2]->type != REDIS_REPLY_STRING || ch->l == NULL ||
        ch->l->message == NULL)
        return;
    ch->l->message(rep->element[2]->str, (size_t)rep->element[2]->len, ch->arg);
}

static void
start_sub(struct corral_redis *r)
{
    if (r->n_chans == 0 || (r->unix_path == NULL && r->host == NULL))
        return; /* no address yet: the sentinels' answer starts it */
    redisAsyncContext *ac = r->unix_path ? redisAsyncConnectUnix(r->unix_path)
                                         : redisAsyncConnect(r->host, r->port);
    if (ac == NULL || ac->err) {
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_sub_retry(r);
        return;
    }
    ac->data = r;
    r->sub_ac = ac;
    attach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_sub_connect);
    redisAsyncSetDisconnectCallback(ac, on_sub_disconnect);
    send_auth(ac, r, sub_auth_reply);
    const char *argv[MAX_CHANNELS + 1];
    argv[0] = "SUBSCRIBE";
    for (size_t i = 0; i < r->n_chans; i++)
        argv[i + 1] = r->chans[i].name;
    redisAsyncCommandArgv(ac, on_message, r, (int)r->n_chans + 1, argv, NULL);
}

static void
sub_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis *r = arg;
    (void)fd;
    (void)what;
    if (r->sub_ac == NULL)
        start_sub(r);
}

int
corral_redis_subscribe(struct corral_redis *r, const char *channel,
                       const struct corral_redis_listener *l, void *arg)
{
    if (r->cluster != NULL)
        return corral_redis_cluster_subscribe(r->cluster, channel, l, arg);
    struct chan *ch = find_chan(r, channel, strlen(channel));
    if (l == NULL) {
        if (ch == NULL)
            return 0;
        free(ch->name);
        *ch = r->chans[--r->n_chans];
    } else if (ch != NULL) {
        ch->l = l;
        ch->arg = arg;
        return 0;
    } else {
        if (r->n_chans == MAX_CHANNELS)
            return -ENOSPC;
        ch = &r->chans[r->n_chans++];
        ch->name = xstrndup(channel, strlen(channel));
        ch->l = l;
        ch->arg = arg;
        ch->confirmed = false;
    }
    /* The set changed: subscribe again from scratch (setup only). */
    stop_sub(r);
    event_del(r->sub_retry_ev);
    r->sub_backoff_ms = BACKOFF_MIN_MS;
    start_sub(r);
    return 0;
}

bool
corral_redis_listening(const struct corral_redis *r)
{
    if (r->cluster != NULL)
        return corral_redis_cluster_listening(r->cluster);
    return r->listening;
}

/* ---- sentinels ---- */

int
corral_redis_master_addr(const struct redisReply *reply, char *host,
                         size_t hostlen, uint16_t *port)
{
    if (reply == NULL)
        return -EPROTO;
    if (reply->type == REDIS_REPLY_NIL)
        return -ENOENT;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[0]->len == 0 ||
        (size_t)reply->element[0]->len >= hostlen)
        return -EPROTO;
    char *end;
    errno = 0;
    unsigned long p = strtoul(reply->element[1]->str, &end, 10);
    if (errno != 0 || end == reply->element[1]->str || *end != '\0' || p == 0 ||
        p > 65535)
        return -EPROTO;
    memcpy(host, reply->element[0]->str, (size_t)reply->element[0]->len);
    host[reply->element[0]->len] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int
corral_redis_role_master(const struct redisReply *reply)
{
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements == 0 || reply->element[0]->type != REDIS_REPLY_STRING)
        return -1;
    return strcmp(reply->element[0]->str, "master") == 0;
}

/* A connection to sentinel i, its AUTH (when the sentinels have a
 * password) answered to on_auth with r as privdata. */
static redisAsyncContext *
sentinel_connect(struct corral_redis *r, size_t i,
                 redisConnectCallback *on_conn,
                 redisDisconnectCallback *on_disc, redisCallbackFn *on_auth)
{
    redisAsyncContext *ac =
        redisAsyncConnect(r->sentinels[i].host, r->sentinels[i].port);
    if (ac == NULL || ac->err) {
        if (ac != NULL)
            redisAsyncFree(ac);
        return NULL;
    }
    ac->data = r;
    attach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_conn);
    redisAsyncSetDisconnectCallback(ac, on_disc);
    if (r->s_password != NULL) {
        const char *argv[3] = {"AUTH", r->s_user ? r->s_user : r->s_password,
                               r->s_password};
        redisAsyncCommandArgv(ac, on_auth, r, r->s_user ? 3 : 2, argv, NULL);
    }
    return ac;
}

static void
ask_stop(struct corral_redis *r)
{
    redisAsyncContext *ac = r->ask_ac;
    event_del(r->ask_ev);
    if (ac == NULL)
        return;
    r->ask_ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

/* The sentinels named host:port: connect there (and the subscriber too,
 * when the primary is a new one). */
static void
use_addr(struct corral_redis *r, const char *host, uint16_t port)
{
    bool moved =
        r->host == NULL || strcmp(r->host, host) != 0 || r->port != port;
    if (moved) {
        if (r->host != NULL) {
            r->stats.switches++;
            corral_log(CORRAL_LOG_NOTICE,
                       "redis %s: the sentinels name %s:%u now", r->name, host,
                       (unsigned)port);
        }
        free(r->host);
        r->host = xstrndup(host, strlen(host));
        r->port = port;
        snprintf(r->name, sizeof(r->name), "%s (%s:%u)", r->master, host,
                 (unsigned)port);
    }
    connect_addr(r);
    if (r->n_chans > 0 && (moved || r->sub_ac == NULL)) {
        stop_sub(r);
        event_del(r->sub_retry_ev);
        r->sub_backoff_ms = BACKOFF_MIN_MS;
        start_sub(r);
    }
}

static void ask_one(struct corral_redis *r);

static void
ask_failed(struct corral_redis *r, const char *why)
{
    snprintf(r->last_error, sizeof(r->last_error), "sentinel: %s", why);
    ask_stop(r);
    ask_one(r);
}

static void
ask_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis *r = ac->data;
    redisReply *rep = reply;
    char host[256];
    uint16_t port = 0;
    (void)privdata;
    if (r == NULL || r->ask_ac != ac || rep == NULL)
        return; /* an old ask, or this one going (its disconnect says) */
    if (rep->type == REDIS_REPLY_ERROR) {
        ask_failed(r, rep->str);
        return;
    }
    int rc = corral_redis_master_addr(rep, host, sizeof(host), &port);
    if (rc < 0) {
        ask_failed(r, rc == -ENOENT ? "no such master" : "a bad reply");
        return;
    }
    /* A sentinel that has not heard of the last switch yet: another one
     * may have; when none is left in the round, they all agree. */
    if (port == r->fled_port && strcmp(host, r->fled_host) == 0 &&
        r->ask_tried < r->n_sentinels) {
        ask_failed(r, "names the primary it switched away from");
        return;
    }
    ask_stop(r);
    use_addr(r, host, port);
}

static void
ask_auth_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis *r = privdata;
    redisReply *rep = reply;
    char why[128];
    if (rep == NULL || r->ask_ac != ac || rep->type != REDIS_REPLY_ERROR)
        return;
    snprintf(why, sizeof(why), "AUTH refused: %s", rep->str);
    ask_failed(r, why);
}

static void
on_ask_disconnect(const redisAsyncContext *ac, int status)
{
    struct corral_redis *r = ac->data;
    (void)status;
    if (r == NULL || r->ask_ac != ac)
        return;
    r->ask_ac = NULL; /* hiredis frees it */
    ask_failed(r, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void
on_ask_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        on_ask_disconnect(ac, status);
}

static void
ask_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis *r = arg;
    (void)fd;
    (void)what;
    if (r->ask_ac != NULL)
        ask_failed(r, "no answer");
}

/* Asks the next sentinel not asked yet in this round; after the last one,
 * the round failed: down, and a new round after the backoff. */
static void
ask_one(struct corral_redis *r)
{
    while (r->ask_tried < r->n_sentinels) {
        size_t i = r->ask_next;
        r->ask_next = (r->ask_next + 1) % r->n_sentinels;
        r->ask_tried++;
        redisAsyncContext *ac = sentinel_connect(
            r, i, on_ask_connect, on_ask_disconnect, ask_auth_reply);
        if (ac == NULL)
            continue;
        r->ask_ac = ac;
        const char *argv[3] = {"SENTINEL", "get-master-addr-by-name",
                               r->master};
        redisAsyncCommandArgv(ac, ask_reply, NULL, 3, argv, NULL);
        struct timeval tv = corral_ms_to_tv(r->timeout_ms);
        event_add(r->ask_ev, &tv);
        return;
    }
    if (strcmp(r->last_error, r->logged_error) != 0) {
        corral_log(CORRAL_LOG_ERROR, "redis %s: no sentinel named it (%s)",
                   r->name, r->last_error);
        snprintf(r->logged_error, sizeof(r->logged_error), "%s", r->last_error);
    }
    set_down(r, NULL);
    event_del(r->retry_ev);
    schedule_retry(r);
}

static void
ask_start(struct corral_redis *r)
{
    r->ask_tried = 0;
    ask_one(r);
}

/* The primary changed (or may have): drop both connections and ask the
 * sentinels again now. */
static void
reresolve(struct corral_redis *r, const char *why)
{
    drop(r, why);
    ask_stop(r);
    event_del(r->retry_ev);
    r->backoff_ms = BACKOFF_MIN_MS;
    start_connect(r);
}

/* The watch: one sentinel at a time, subscribed to +switch-master, after
 * asking it for the primary (a switch may have been published while the
 * watch was away). Its connect, AUTH, question and subscription are
 * answered within the timeout, and once subscribed it subscribes again
 * after WATCH_IDLE_MS without a word from the sentinel, answered within
 * the timeout too (a keepalive: the sentinel confirms a subscription it
 * already has; hiredis 0.14 would misroute a subscribed PING's "pong" and
 * keep its callback for good). Any failure moves it to the next sentinel
 * after a backoff, said once per reason. One timer, watch_ev, serves
 * every step. */

static void
watch_stop(struct corral_redis *r)
{
    redisAsyncContext *ac = r->watch_ac;
    r->watch_subscribed = r->watch_owed = false;
    if (ac == NULL)
        return;
    r->watch_ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

static void
watch_arm(struct corral_redis *r, uint64_t ms)
{
    struct timeval tv = corral_ms_to_tv(ms);
    event_add(r->watch_ev, &tv);
}

/* The watch lost its sentinel (why, never a password): closed, and
 * started on the next sentinel after the backoff. */
static void
watch_failed(struct corral_redis *r, const char *why)
{
    const struct corral_redis_node *s = &r->sentinels[r->watch_at];
    if (strcmp(why, r->watch_logged) != 0) {
        corral_log(CORRAL_LOG_WARNING,
                   "redis %s: +switch-master watch on sentinel %s:%u: %s",
                   r->name, s->host, (unsigned)s->port, why);
        snprintf(r->watch_logged, sizeof(r->watch_logged), "%s", why);
    }
    watch_stop(r);
    watch_arm(r, r->watch_backoff_ms);
    r->watch_backoff_ms = r->watch_backoff_ms * 2 > BACKOFF_MAX_MS
                              ? BACKOFF_MAX_MS
                              : r->watch_backoff_ms * 2;
}

/* A word from the watch's sentinel: it is there; the next keepalive
 * after WATCH_IDLE_MS of silence. */
static void
watch_heard(struct corral_redis *r)
{
    r->watch_owed = false;
    watch_arm(r, WATCH_IDLE_MS);
}

static void
on_switch(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis *r = privdata;
    redisReply *rep = reply;
    if (rep == NULL || r->watch_ac != ac)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        watch_failed(r, rep->str);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    watch_heard(r);
    if (strcmp(rep->element[0]->str, "subscribe") == 0) {
        if (!r->watch_subscribed) {
            const struct corral_redis_node *s = &r->sentinels[r->watch_at];
            r->watch_subscribed = true;
            r->watch_backoff_ms = BACKOFF_MIN_MS;
            if (r->watch_logged[0] != '\0')
                corral_log(CORRAL_LOG_NOTICE,
                           "redis %s: +switch-master watch on sentinel "
                           "%s:%u",
                           r->name, s->host, (unsigned)s->port);
            r->watch_logged[0] = '\0';
        }
        return;
    }
    if (strcmp(rep->element[0]->str, "message") != 0 ||
        rep->element[2]->type != REDIS_REPLY_STRING)
        return;
    /* "<master> <old ip> <old port> <new ip> <new port>" */
    size_t n = strlen(r->master);
    const char *msg = rep->element[2]->str;
    if ((size_t)rep->element[2]->len <= n || strncmp(msg, r->master, n) != 0 ||
        msg[n] != ' ')
        return;
    corral_log(CORRAL_LOG_NOTICE, "redis %s: +switch-master %s", r->name,
               msg + n + 1);
    char old_host[256], new_host[256];
    unsigned old_port, new_port;
    if (sscanf(msg + n + 1, "%255s %u %255s %u", old_host, &old_port, new_host,
               &new_port) != 4 ||
        old_port == 0 || old_port > UINT16_MAX || new_port == 0 ||
        new_port > UINT16_MAX) {
        reresolve(r, "+switch-master");
        return;
    }
    /* The sentinel that says so names the new primary: go there, not to
     * whichever sentinel is asked next, which may not have heard yet and
     * name the old one, alive and still saying master until the
     * sentinels demote it. */
    snprintf(r->fled_host, sizeof(r->fled_host), "%s", old_host);
    r->fled_port = (uint16_t)old_port;
    if (r->ac != NULL && r->host != NULL && strcmp(r->host, new_host) == 0 &&
        r->port == new_port)
        return; /* there already, or on the way */
    drop(r, "+switch-master");
    ask_stop(r);
    event_del(r->retry_ev);
    r->backoff_ms = BACKOFF_MIN_MS;
    use_addr(r, new_host, (uint16_t)new_port);
}

/* What the watch's sentinel names before it subscribes: nothing (an error,
 * no such master) is no sentinel of ours, so no watch; a primary other
 * than ours is a switch published while the watch was away. */
static void
watch_addr_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis *r = privdata;
    redisReply *rep = reply;
    char host[256];
    uint16_t port = 0;
    if (rep == NULL || r->watch_ac != ac)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        watch_failed(r, rep->str);
        return;
    }
    int rc = corral_redis_master_addr(rep, host, sizeof(host), &port);
    if (rc < 0) {
        watch_failed(r, rc == -ENOENT ? "no such master" : "a bad reply");
        return;
    }
    if (r->host == NULL || r->ask_ac != NULL ||
        (strcmp(r->host, host) == 0 && r->port == port))
        return; /* not connected yet, asking now, or the same */
    const struct corral_redis_node *s = &r->sentinels[r->watch_at];
    corral_log(CORRAL_LOG_NOTICE, "redis %s: sentinel %s:%u names %s:%u",
               r->name, s->host, (unsigned)s->port, host, (unsigned)port);
    reresolve(r, "the sentinels name another primary");
}

static void
watch_auth_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct corral_redis *r = privdata;
    redisReply *rep = reply;
    char why[160];
    if (rep == NULL || r->watch_ac != ac || rep->type != REDIS_REPLY_ERROR)
        return;
    snprintf(why, sizeof(why), "AUTH refused: %s", rep->str);
    watch_failed(r, why);
}

static void
on_watch_disconnect(const redisAsyncContext *ac, int status)
{
    struct corral_redis *r = ac->data;
    (void)status;
    if (r == NULL || r->watch_ac != ac)
        return;
    r->watch_ac = NULL; /* hiredis frees it */
    watch_failed(r, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void
on_watch_connect(const redisAsyncContext *ac, int status)
{
    if (status != REDIS_OK)
        on_watch_disconnect(ac, status);
}

static void
watch_start(struct corral_redis *r)
{
    size_t i = r->watch_next;
    r->watch_next = (r->watch_next + 1) % r->n_sentinels;
    r->watch_at = i;
    redisAsyncContext *ac = sentinel_connect(
        r, i, on_watch_connect, on_watch_disconnect, watch_auth_reply);
    if (ac == NULL) {
        watch_failed(r, "cannot connect");
        return;
    }
    r->watch_ac = ac;
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", r->master};
    redisAsyncCommandArgv(ac, watch_addr_reply, r, 3, argv, NULL);
    redisAsyncCommand(ac, on_switch, r, "SUBSCRIBE +switch-master");
    r->watch_owed = true;
    watch_arm(r, r->timeout_ms);
}

static void
watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis *r = arg;
    (void)fd;
    (void)what;
    if (r->watch_ac == NULL) {
        watch_start(r);
    } else if (r->watch_owed) {
        watch_failed(r, r->watch_subscribed ? "no answer to the keepalive"
                                            : "no answer to AUTH or SUBSCRIBE");
    } else {
        redisAsyncCommand(r->watch_ac, on_switch, r,
                          "SUBSCRIBE +switch-master");
        r->watch_owed = true;
        watch_arm(r, r->timeout_ms);
    }
}

/* ---- lifecycle ---- */

/* A cluster behind the handle: the cluster client checks the options. */
static struct corral_redis *
new_cluster(struct event_base *base, const struct corral_redis_options *o,
            char *err, size_t errlen)
{
    struct corral_redis_cluster *cl = corral_redis_cluster_new(
        base, o, o->cluster, o->n_cluster, err, errlen);
    if (cl == NULL)
        return NULL;
    struct corral_redis *r = xcalloc(1, sizeof(*r));
    r->base = base;
    r->cluster = cl;
    r->timeout_ms = o->timeout_ms ? o->timeout_ms : 50;
    snprintf(r->name, sizeof(r->name), "cluster %s:%u", o->cluster[0].host,
             (unsigned)o->cluster[0].port);
    return r;
}

struct corral_redis *
corral_redis_new(struct event_base *base, const struct corral_redis_options *o,
                 char *err, size_t errlen)
{
    if (base != NULL && o != NULL && o->n_cluster > 0)
        return new_cluster(base, o, err, errlen);
    if (base == NULL || o == NULL ||
        (o->n_sentinels == 0 && o->unix_path == NULL &&
         (o->host == NULL || o->port == 0))) {
        snprintf(err, errlen, "redis: a host and port, or a unix path");
        return NULL;
    }
    if (o->n_sentinels > 0 && (o->master == NULL || o->master[0] == '\0' ||
                               o->host != NULL || o->unix_path != NULL)) {
        snprintf(err, errlen,
                 "redis: sentinels need a master name, and "
                 "no host or unix path");
        return NULL;
    }
    for (size_t i = 0; i < o->n_sentinels; i++)
        if (o->sentinels[i].host == NULL || o->sentinels[i].port == 0) {
            snprintf(err, errlen, "redis: a sentinel without host or port");
            return NULL;
        }
    struct corral_redis *r = xcalloc(1, sizeof(*r));
    r->base = base;
    r->host = o->host ? xstrndup(o->host, strlen(o->host)) : NULL;
    if (o->n_sentinels > 0) {
        r->master = xstrndup(o->master, strlen(o->master));
        r->n_sentinels = o->n_sentinels;
        r->sentinels = xcalloc(o->n_sentinels, sizeof(*r->sentinels));
        for (size_t i = 0; i < o->n_sentinels; i++) {
            const char *h = o->sentinels[i].host;
            r->sentinels[i].host = xstrndup(h, strlen(h));
            r->sentinels[i].port = o->sentinels[i].port;
        }
        r->s_user = o->sentinel_user
                        ? xstrndup(o->sentinel_user, strlen(o->sentinel_user))
                        : NULL;
        r->s_password =
            o->sentinel_password
                ? xstrndup(o->sentinel_password, strlen(o->sentinel_password))
                : NULL;
    }
    r->unix_path =
        o->unix_path ? xstrndup(o->unix_path, strlen(o->unix_path)) : NULL;
    r->user = o->user ? xstrndup(o->user, strlen(o->user)) : NULL;
    r->password =
        o->password ? xstrndup(o->password, strlen(o->password)) : NULL;
    r->port = o->port;
    if (o->db != 0)
        snprintf(r->db, sizeof(r->db), "%u", o->db);
    r->timeout_ms = o->timeout_ms ? o->timeout_ms : 50;
    r->backoff_ms = r->sub_backoff_ms = BACKOFF_MIN_MS;
    if (o->n_sentinels > 0)
        snprintf(r->name, sizeof(r->name), "%s", o->master);
    else if (o->unix_path)
        snprintf(r->name, sizeof(r->name), "unix:%s", o->unix_path);
    else
        snprintf(r->name, sizeof(r->name), "%s:%u", o->host, (unsigned)o->port);
    snprintf(r->last_error, sizeof(r->last_error), "not connected yet");
    TAILQ_INIT(&r->pending);
    TAILQ_INIT(&r->refused);
    r->retry_ev = evtimer_new(base, retry_cb, r);
    r->reset_ev = event_new(base, -1, 0, reset_cb, r);
    r->timer_ev = evtimer_new(base, timer_cb, r);
    r->refuse_ev = event_new(base, -1, 0, refuse_cb, r);
    r->health_ev = event_new(base, -1, EV_PERSIST, health_cb, r);
    r->sub_retry_ev = evtimer_new(base, sub_retry_cb, r);
    r->ask_ev = evtimer_new(base, ask_timeout_cb, r);
    r->watch_ev = evtimer_new(base, watch_cb, r);
    if (!r->retry_ev || !r->reset_ev || !r->timer_ev || !r->refuse_ev ||
        !r->health_ev || !r->sub_retry_ev || !r->ask_ev || !r->watch_ev)
        abort(); /* the policy of xalloc.h */
    r->watch_backoff_ms = BACKOFF_MIN_MS;
    struct timeval tick = {0, HEALTH_MS * 1000};
    event_add(r->health_ev, &tick);
    if (r->n_sentinels > 0)
        watch_start(r);
    start_connect(r);
    return r;
}

void
corral_redis_free(struct corral_redis *r)
{
    if (r == NULL)
        return;
    struct cmd *c;
    r->closing = true;
    if (r->cluster != NULL) {
        corral_redis_cluster_free(r->cluster);
        for (size_t i = 0; i < r->n_scripts; i++)
            free(r->scripts[i]);
        free(r);
        return;
    }
    /* Answer first (hiredis's NULL replies then only free them). */
    TAILQ_FOREACH(c, &r->pending, link)
    {
        c->done = true;
        if (c->cb)
            c->cb(NULL, -ECANCELED, c->arg);
    }
    while ((c = TAILQ_FIRST(&r->pending)) != NULL)
        unlist(c, &r->pending); /* hiredis frees them in drop() */
    while ((c = TAILQ_FIRST(&r->refused)) != NULL) {
        unlist(c, &r->refused);
        if (c->cb)
            c->cb(NULL, -ECANCELED, c->arg);
        free(c);
    }
    /* What is written but not sent (leases given back as the program
     * stops) goes out now if the socket takes it: one try, no wait. */
    if (r->ac != NULL && r->ready) {
        int done = 0;
        redisBufferWrite(&r->ac->c, &done);
    }
    r->stats.state = CORRAL_REDIS_DOWN; /* no "down" line at exit */
    drop(r, "closing");
    for (size_t i = 0; i < r->n_chans; i++)
        r->chans[i].l = NULL; /* no lost() at exit */
    stop_sub(r);
    ask_stop(r);
    watch_stop(r);
    event_free(r->ask_ev);
    event_free(r->watch_ev);
    for (size_t i = 0; i < r->n_sentinels; i++)
        free((char *)r->sentinels[i].host);
    free(r->sentinels);
    free(r->master);
    free(r->s_user);
    if (r->s_password)
        explicit_bzero(r->s_password, strlen(r->s_password));
    free(r->s_password);
    event_free(r->retry_ev);
    event_free(r->reset_ev);
    event_free(r->timer_ev);
    event_free(r->refuse_ev);
    event_free(r->health_ev);
    event_free(r->sub_retry_ev);
    for (size_t i = 0; i < r->n_chans; i++)
        free(r->chans[i].name);
    for (size_t i = 0; i < r->n_scripts; i++) {
        free(r->scripts[i]->body);
        free(r->scripts[i]);
    }
    free(r->host);
    free(r->unix_path);
    free(r->user);
    if (r->password)
        explicit_bzero(r->password, strlen(r->password));
    free(r->password);
    free(r);
}

void
corral_redis_stats(const struct corral_redis *r, struct corral_redis_stats *out)
{
    if (r->cluster == NULL) {
        *out = r->stats;
        return;
    }
    struct corral_redis_cluster_stats cs;
    corral_redis_cluster_stats(r->cluster, &cs);
    corral_redis_cluster_node_stats(r->cluster, out);
    out->commands = cs.commands; /* given: not ASKING, retries, maps */
    out->timeouts += cs.timeouts;
    out->moved = cs.moved;
    out->ask = cs.ask;
    out->refreshes = cs.refreshes;
    out->primaries = cs.primaries;
}

/* ---- the blocking probe at start ----
 *
 * Every step is bounded by one deadline for the whole probe: a command is
 * written and its reply read with poll() against it, never with a socket
 * timeout per read (a server answering each step just in time, or a byte
 * at a time, must not hold a program's start). */

/* 1 when fd is ready for events, 0 at deadline (monotonic ms), -1 on an
 * error. */
static int
wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = corral_now_ms();
        if (now >= deadline)
            return 0;
        uint64_t left = deadline - now;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* One command on c, answered by deadline: 0 with the reply in *out
 * (caller frees), -ETIMEDOUT, or -EIO (the reason in c->errstr). */
static int
probe_call(redisContext *c, uint64_t deadline, int argc, const char **argv,
           redisReply **out)
{
    void *rep = NULL;
    int done = 0;
    *out = NULL;
    if (redisAppendCommandArgv(c, argc, argv, NULL) != REDIS_OK)
        return -EIO;
    while (!done) {
        int w = wait_fd(c->fd, POLLOUT, deadline);
        if (w == 0)
            return -ETIMEDOUT;
        if (w < 0 || redisBufferWrite(c, &done) != REDIS_OK)
            return -EIO;
    }
    for (;;) {
        if (redisGetReplyFromReader(c, &rep) != REDIS_OK)
            return -EIO;
        if (rep != NULL) {
            *out = rep;
            return 0;
        }
        int w = wait_fd(c->fd, POLLIN, deadline);
        if (w == 0)
            return -ETIMEDOUT;
        if (w < 0 || redisBufferRead(c) != REDIS_OK)
            return -EIO;
    }
}

/* A connection to host:port (or unix_path) made by deadline, or NULL with
 * the reason in err. */
static redisContext *
probe_connect(const char *host, uint16_t port, const char *unix_path,
              uint64_t deadline, char *err, size_t errlen)
{
    uint64_t now = corral_now_ms();
    struct timeval tv = corral_ms_to_tv(deadline > now ? deadline - now : 1);
    redisContext *c = unix_path ? redisConnectUnixWithTimeout(unix_path, tv)
                                : redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err) {
        snprintf(err, errlen, "%s", c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv); /* a write that blocks; reads poll */
    return c;
}

static const char *
probe_error(const redisContext *c, int rc)
{
    return rc == -ETIMEDOUT ? "no answer in time" : c->errstr;
}

/* One handshake step: 0; -EINVAL for a refusal that is our configuration;
 * -EAGAIN for a server still loading; -ETIMEDOUT or -EIO. */
static int
probe_step(redisContext *c, uint64_t deadline, int argc, const char **argv,
           const char *step, char *err, size_t errlen)
{
    redisReply *rep;
    int rc = probe_call(c, deadline, argc, argv, &rep);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", step, probe_error(c, rc));
        return rc;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %s", step, rep->str);
        /* LOADING and the like are an outage; the rest our config. */
        rc = strncmp(rep->str, "LOADING", 7) == 0 ||
                     strncmp(rep->str, "BUSY", 4) == 0
                 ? -EAGAIN
                 : -EINVAL;
    }
    freeReplyObject(rep);
    return rc;
}

/* Asks the sentinels in turn for the primary, each within a share of what
 * is left until deadline (the primary keeps one share too), so one that
 * never answers leaves time for the next. -EINVAL when every one that
 * answered refused our AUTH. */
static int
probe_sentinels(const struct corral_redis_options *o, uint64_t deadline,
                char *host, size_t hostlen, uint16_t *port, char *err,
                size_t errlen)
{
    int rc = -EHOSTUNREACH;
    bool refused = false, other = false;
    snprintf(err, errlen, "no sentinel to ask");
    for (size_t i = 0; i < o->n_sentinels; i++) {
        uint64_t now = corral_now_ms();
        if (now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        uint64_t until = now + (deadline - now) / (o->n_sentinels - i + 1);
        const struct corral_redis_node *s = &o->sentinels[i];
        char why[160];
        redisContext *c =
            probe_connect(s->host, s->port, NULL, until, why, sizeof(why));
        if (c == NULL) {
            snprintf(err, errlen, "sentinel %s:%u: %s", s->host,
                     (unsigned)s->port, why);
            other = true;
            continue;
        }
        int step = 0;
        if (o->sentinel_password != NULL) {
            const char *auth[3] = {"AUTH",
                                   o->sentinel_user ? o->sentinel_user
                                                    : o->sentinel_password,
                                   o->sentinel_password};
            step = probe_step(c, until, o->sentinel_user ? 3 : 2, auth,
                              "sentinel AUTH", err, errlen);
        }
        if (step == 0) {
            const char *ask[3] = {"SENTINEL", "get-master-addr-by-name",
                                  o->master};
            redisReply *rep;
            int got = probe_call(c, until, 3, ask, &rep);
            int a = got == 0
                        ? corral_redis_master_addr(rep, host, hostlen, port)
                        : got;
            if (a == 0) {
                freeReplyObject(rep);
                redisFree(c);
                return 0;
            }
            snprintf(err, errlen, "sentinel %s:%u: %s", s->host,
                     (unsigned)s->port,
                     got < 0                          ? probe_error(c, got)
                     : rep->type == REDIS_REPLY_ERROR ? rep->str
                     : a == -ENOENT                   ? "no such master"
                                                      : "a bad reply");
            if (rep != NULL)
                freeReplyObject(rep);
            other = true;
        } else if (step == -EINVAL) {
            refused = true;
        } else {
            other = true;
        }
        redisFree(c);
    }
    if (refused && !other)
        rc = -EINVAL;
    return rc;
}

int
corral_redis_probe(const struct corral_redis_options *o, uint64_t timeout_ms,
                   int argc, const char *const *argv, struct redisReply **out,
                   char *err, size_t errlen)
{
    if (o->n_cluster > 0)
        return corral_redis_cluster_probe(o, o->cluster, o->n_cluster,
                                          timeout_ms, argc, argv, out, err,
                                          errlen);
    uint64_t deadline = corral_now_ms() + timeout_ms;
    if (out != NULL)
        *out = NULL;
    char host[256] = "";
    uint16_t port = o->port;
    if (o->n_sentinels > 0) {
        int rc = probe_sentinels(o, deadline, host, sizeof(host), &port, err,
                                 errlen);
        if (rc < 0)
            return rc;
    } else if (o->host != NULL) {
        snprintf(host, sizeof(host), "%s", o->host);
    }
    redisContext *c =
        probe_connect(host, port, o->unix_path, deadline, err, errlen);
    if (c == NULL)
        return -ECONNREFUSED;
    int rc = 0;
    if (o->password != NULL) {
        const char *auth[3] = {"AUTH", o->user ? o->user : o->password,
                               o->password};
        rc =
            probe_step(c, deadline, o->user ? 3 : 2, auth, "AUTH", err, errlen);
    }
    if (rc == 0 && o->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%u", o->db);
        const char *select[2] = {"SELECT", db};
        rc = probe_step(c, deadline, 2, select, "SELECT", err, errlen);
    }
    if (rc == 0 && o->n_sentinels > 0) {
        const char *role_argv[1] = {"ROLE"};
        redisReply *role;
        rc = probe_call(c, deadline, 1, role_argv, &role);
        if (rc < 0) {
            snprintf(err, errlen, "ROLE: %s", probe_error(c, rc));
        } else if (corral_redis_role_master(role) != 1) {
            snprintf(err, errlen, "ROLE: %s:%u is not a master", host,
                     (unsigned)port);
            rc = -EAGAIN;
        }
        if (role != NULL)
            freeReplyObject(role);
    }
    if (rc == 0 && argc > 0 && out != NULL) {
        rc = probe_call(c, deadline, argc, (const char **)argv, out);
        if (rc < 0)
            snprintf(err, errlen, "%s", probe_error(c, rc));
    }
    redisFree(c);
    return rc;
}
