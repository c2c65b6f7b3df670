/* cluster.c — a Redis Cluster client (see corral/cluster.h).
 *
 * Taken from hiredis-cluster (hircluster.c): the slot map as a table of
 * 16384 owners filled from CLUSTER SLOTS, a MOVED that points the one slot
 * at its new owner at once, retries there and reads the whole map again
 * in the background; an ASK that sends ASKING and the command to the
 * target without touching the map; a node named by a redirection that is
 * connected on first sight. From redis-cli (cluster mode): an empty host
 * in a redirection or in CLUSTER SLOTS is the node that answered. Unlike
 * both, one redirection at most per command, and no blocking refresh: a
 * command for a slot without an owner goes to any node, which redirects.
 *
 * Every node is a struct corral_redis, kept until the cluster is freed,
 * so a command in flight always has its connection. A command holds a
 * copy of its arguments for a retry and owes exactly one inner callback at
 * any time. Its deadline is fixed when given; a retry after a redirection,
 * or a command held for a node's first handshake, gets a timer for what
 * remains of it, so the caller hears within the original timeout and the
 * retry's own (longer) timeout only frees it (or feeds its late).
 *
 * Subscriptions are classic SUBSCRIBEs, all on one node: a node hears
 * what any node publishes, over the cluster bus, so a script may publish
 * wherever its keys live (a sharded SPUBLISH must name a channel of the
 * script's own node). When that node's connection goes, they move to the
 * next ready node and subscribed() fires there. */
#include "corral/cluster.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>

#include "redis_impl.h"
#include "timeutil.h"
#include "xalloc.h"

#define MAX_NODES 256
#define MAX_SCRIPTS 16
#define MAX_CHANNELS 4
#define REFRESH_MIN_MS 100 /* between two map reads begun */
#define REFRESH_RETRY_MS 250
#define SUB_CHECK_MS 500 /* how often the subscribed node is looked at */

struct ccmd;
TAILQ_HEAD(ccmd_list, ccmd);

struct node {
    struct corral_redis_cluster *cl;
    size_t index;
    char host[256];
    uint16_t port;
    bool primary; /* owns a slot in the map */
    struct corral_redis *r;
    struct corral_redis_script *scripts[MAX_SCRIPTS];
    struct ccmd_list waiting; /* for its first handshake */
    struct event *wake_ev;    /* its connection's readiness changed */
};

/* One subscription, wherever it is held. */
struct cchan {
    struct corral_redis_cluster *cl;
    char *name; /* NULL: unused */
    const struct corral_redis_listener *l;
    void *arg;
};

struct corral_redis_cluster_script {
    char *body;
    size_t index;
};

struct corral_redis_cluster {
    struct event_base *base;
    char *user, *password;
    uint64_t timeout_ms;
    struct node *nodes[MAX_NODES];
    size_t n_nodes;
    int16_t slots[CORRAL_REDIS_SLOTS]; /* node index, -1: none */
    struct corral_redis_cluster_script *scripts[MAX_SCRIPTS];
    size_t n_scripts;
    size_t n_seeds;
    size_t unowned;            /* slots without a primary in the map */
    struct ccmd_list unmapped; /* for a map being read, their slot unowned */

    struct cchan chans[MAX_CHANNELS];
    int sub_node;         /* holds the subscriptions; -1: none yet */
    struct event *sub_ev; /* SUB_CHECK_MS, and at once when one is lost */

    bool refreshing;       /* one CLUSTER SLOTS in flight at most */
    bool refresh_waits;    /* this round skipped a node still connecting */
    bool refresh_waiting;  /* for such a node's first handshake */
    size_t refresh_from;   /* the node that answered last */
    size_t refresh_tried;  /* nodes asked in this refresh */
    size_t refresh_node;   /* asked now */
    uint64_t refreshed_ms; /* when the last refresh began */
    struct event *refresh_ev;

    bool closing;
    struct corral_redis_cluster_stats stats;
};

struct ccmd {
    TAILQ_ENTRY(ccmd) link;  /* on a waiting list, while queued */
    struct ccmd_list *queue; /* that list */
    unsigned slot;           /* its key's */
    struct corral_redis_cluster *cl;
    corral_redis_reply_cb *cb;
    corral_redis_reply_cb *late; /* as corral_redis_eval_late()'s */
    void *arg;
    const struct corral_redis_cluster_script *script; /* NULL: a command */
    int nkeys;
    size_t node;         /* asked last */
    uint64_t deadline;   /* monotonic ms */
    struct event *timer; /* after a redirection or a wait only */
    bool redirected;
    bool queued;    /* on a waiting list: a node's, or unmapped */
    bool asking;    /* ASKING goes first when it is sent */
    bool done;      /* cb has fired */
    bool timed_out; /* cb heard -ETIMEDOUT: late hears the reply */
    int argc;
    const char **argv;
    size_t *lens;
};

/* ---- slots ---- */

/* CRC16-CCITT (XMODEM), Redis's key hash, a byte at a time from a table
 * made from the polynomial before main: every L2 read with L1 cold hashes
 * its name's tag. */
static uint16_t crc16_table[256];

__attribute__((constructor)) static void
crc16_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint16_t crc = (uint16_t)(i << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021)
                               : (uint16_t)(crc << 1);
        crc16_table[i] = crc;
    }
}

uint16_t
corral_redis_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)(crc << 8) ^
              crc16_table[(crc >> 8 ^ (uint8_t)buf[i]) & 0xff];
    return crc;
}

unsigned
corral_redis_key_slot(const char *key, size_t len)
{
    size_t s, e;
    for (s = 0; s < len && key[s] != '{'; s++)
        ;
    if (s == len)
        return corral_redis_crc16(key, len) & (CORRAL_REDIS_SLOTS - 1);
    for (e = s + 1; e < len && key[e] != '}'; e++)
        ;
    if (e == len || e == s + 1)
        return corral_redis_crc16(key, len) & (CORRAL_REDIS_SLOTS - 1);
    return corral_redis_crc16(key + s + 1, e - s - 1) &
           (CORRAL_REDIS_SLOTS - 1);
}

int
corral_redis_cluster_slots_parse(const struct redisReply *reply,
                                 const char *asked_host,
                                 struct corral_redis_slot_range **out,
                                 size_t *n)
{
    *out = NULL;
    *n = 0;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    struct corral_redis_slot_range *v =
        xcalloc(reply->elements ? reply->elements : 1, sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2)
            goto bad;
        const redisReply *h = e->element[2]->element[0];
        const redisReply *p = e->element[2]->element[1];
        long long first = e->element[0]->integer;
        long long last = e->element[1]->integer;
        if (h->type != REDIS_REPLY_STRING || p->type != REDIS_REPLY_INTEGER ||
            first < 0 || last < first || last >= CORRAL_REDIS_SLOTS ||
            p->integer < 0 || p->integer > 65535)
            goto bad;
        if (strcmp(h->str, "?") == 0 || p->integer == 0)
            continue; /* an endpoint Redis does not know yet */
        const char *host = h->len > 0 ? h->str : asked_host;
        if (host == NULL || strlen(host) >= sizeof(v[k].host))
            goto bad;
        v[k].first = (uint16_t)first;
        v[k].last = (uint16_t)last;
        v[k].port = (uint16_t)p->integer;
        snprintf(v[k].host, sizeof(v[k].host), "%s", host);
        k++;
    }
    *out = v;
    *n = k;
    return 0;
bad:
    free(v);
    return -EPROTO;
}

/* ---- nodes ---- */

static void wake_cb(evutil_socket_t fd, short what, void *arg);

/* r's readiness changed: look at its waiting commands from the loop. */
static void
node_watch(void *arg)
{
    struct node *n = arg;
    if (!TAILQ_EMPTY(&n->waiting) || n->cl->refresh_waiting)
        event_active(n->wake_ev, EV_TIMEOUT, 1);
}

static int
node_get(struct corral_redis_cluster *cl, const char *host, uint16_t port)
{
    for (size_t i = 0; i < cl->n_nodes; i++)
        if (cl->nodes[i]->port == port && strcmp(cl->nodes[i]->host, host) == 0)
            return (int)i;
    if (cl->n_nodes == MAX_NODES || strlen(host) >= sizeof(cl->nodes[0]->host))
        return -1;
    struct corral_redis_options o = {
        .host = host,
        .port = port,
        .user = cl->user,
        .password = cl->password,
        .timeout_ms = cl->timeout_ms,
    };
    char err[160];
    struct corral_redis *r = corral_redis_new(cl->base, &o, err, sizeof(err));
    if (r == NULL) {
        corral_log(CORRAL_LOG_WARNING, "redis cluster: node %s:%u: %s", host,
                   (unsigned)port, err);
        return -1;
    }
    struct node *n = xcalloc(1, sizeof(*n));
    n->cl = cl;
    n->index = cl->n_nodes;
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    n->r = r;
    TAILQ_INIT(&n->waiting);
    n->wake_ev = event_new(cl->base, -1, 0, wake_cb, n);
    if (n->wake_ev == NULL)
        abort(); /* the policy of xalloc.h */
    corral_redis_watch(r, node_watch, n);
    for (size_t i = 0; i < cl->n_scripts; i++)
        n->scripts[i] = corral_redis_script_new(r, cl->scripts[i]->body);
    cl->nodes[cl->n_nodes] = n;
    cl->stats.nodes++;
    return (int)cl->n_nodes++;
}

/* Slot s is idx's now (-1: nobody's). */
static void
own(struct corral_redis_cluster *cl, unsigned s, int idx)
{
    if (cl->slots[s] < 0 && idx >= 0)
        cl->unowned--;
    else if (cl->slots[s] >= 0 && idx < 0)
        cl->unowned++;
    cl->slots[s] = (int16_t)idx;
    if (idx >= 0)
        cl->nodes[idx]->primary = true;
}

/* ---- the map ---- */

static void refresh_next(struct corral_redis_cluster *cl);
static void dispatch_unmapped(struct corral_redis_cluster *cl);

static bool
apply_map(struct corral_redis_cluster *cl, const redisReply *rep,
          const char *asked_host)
{
    struct corral_redis_slot_range *v;
    size_t n;
    if (corral_redis_cluster_slots_parse(rep, asked_host, &v, &n) != 0 ||
        n == 0) {
        free(v);
        return false;
    }
    for (unsigned s = 0; s < CORRAL_REDIS_SLOTS; s++)
        own(cl, s, -1);
    for (size_t i = 0; i < cl->n_nodes; i++)
        cl->nodes[i]->primary = false;
    for (size_t i = 0; i < n; i++) {
        int idx = node_get(cl, v[i].host, v[i].port);
        for (unsigned s = v[i].first; s <= v[i].last; s++)
            own(cl, s, idx);
    }
    free(v);
    return true;
}

static void
slots_reply(const redisReply *rep, int error, void *arg)
{
    struct corral_redis_cluster *cl = arg;
    if (error == -ECANCELED || cl->closing)
        return;
    size_t i = cl->refresh_node;
    if (error == 0 && apply_map(cl, rep, cl->nodes[i]->host)) {
        cl->refreshing = false;
        cl->refresh_from = i; /* it answers: ask it first next time */
        cl->stats.refreshes++;
        dispatch_unmapped(cl);
        return;
    }
    refresh_next(cl);
}

/* Asks the next ready node not asked yet in this read. None left: when a
 * node's first connection is on its way, the read waits for it (its
 * watch says); else it failed, and a new one starts later. */
static void
refresh_next(struct corral_redis_cluster *cl)
{
    static const char *const argv[2] = {"CLUSTER", "SLOTS"};
    while (cl->refresh_tried < cl->n_nodes) {
        size_t i = (cl->refresh_from + cl->refresh_tried++) % cl->n_nodes;
        struct corral_redis *r = cl->nodes[i]->r;
        if (!corral_redis_ready(r)) {
            if (!corral_redis_ever_ready(r) && corral_redis_connecting(r))
                cl->refresh_waits = true;
            continue;
        }
        cl->refresh_node = i;
        corral_redis_command(r, slots_reply, cl, 2, argv, NULL);
        return;
    }
    if (cl->refresh_waits) {
        cl->refresh_waits = false;
        cl->refresh_waiting = true;
        return;
    }
    struct timeval tv = {0, REFRESH_RETRY_MS * 1000};
    cl->refreshing = false;
    evtimer_add(cl->refresh_ev, &tv);
    dispatch_unmapped(cl);
}

static void
refresh(struct corral_redis_cluster *cl)
{
    if (cl->refreshing || cl->closing)
        return;
    cl->refreshing = true;
    cl->refresh_tried = 0;
    cl->refresh_waits = false;
    cl->refreshed_ms = corral_now_ms();
    refresh_next(cl);
}

static void
refresh_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    refresh(arg);
}

/* A refresh now, or when REFRESH_MIN_MS have passed since the last began:
 * a MOVED storm or a dead node asks for one per command. */
static void
refresh_soon(struct corral_redis_cluster *cl)
{
    uint64_t now = corral_now_ms();
    if (cl->refreshing || cl->closing || evtimer_pending(cl->refresh_ev, NULL))
        return;
    if (now >= cl->refreshed_ms + REFRESH_MIN_MS) {
        refresh(cl);
        return;
    }
    uint64_t wait = cl->refreshed_ms + REFRESH_MIN_MS - now;
    struct timeval tv = {0, (suseconds_t)(wait * 1000)};
    evtimer_add(cl->refresh_ev, &tv);
}

/* ---- commands ---- */

static void ccmd_reply(const redisReply *rep, int error, void *arg);
static void ccmd_late(const redisReply *rep, int error, void *arg);

static void
ccmd_free(struct ccmd *c)
{
    if (c->timer != NULL)
        event_free(c->timer);
    free(c);
}

static void
answer(struct ccmd *c, const redisReply *rep, int error)
{
    c->done = true;
    if (c->cb)
        c->cb(rep, error, c->arg);
}

/* What late hears of an inner command's answer. */
static void
tell_late(struct ccmd *c, const redisReply *rep, int error)
{
    if (c->late == NULL)
        return;
    if (error == 0 || (error == -EIO && rep != NULL))
        c->late(rep, error, c->arg);
    else
        c->late(NULL, -EIO, c->arg);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg);

/* A timer for what is left of c's deadline. */
static void
arm_deadline(struct ccmd *c, uint64_t now)
{
    if (c->timer == NULL)
        c->timer = evtimer_new(c->cl->base, deadline_cb, c);
    if (c->timer == NULL)
        abort(); /* the policy of xalloc.h */
    uint64_t left = c->deadline > now ? c->deadline - now : 0;
    struct timeval tv = {(time_t)(left / 1000),
                         (suseconds_t)(left % 1000 * 1000)};
    evtimer_add(c->timer, &tv);
}

static void
send_to(struct ccmd *c, size_t idx, bool asking)
{
    static const char *const ask[1] = {"ASKING"};
    struct node *n = c->cl->nodes[idx];
    c->node = idx;
    if (!corral_redis_ready(n->r) && !corral_redis_ever_ready(n->r) &&
        corral_redis_connecting(n->r)) {
        /* A node just named (by the map or a MOVED): its first connection
         * is on its way, so wait for it rather than refuse. */
        c->queued = true;
        c->asking = asking;
        c->queue = &n->waiting;
        TAILQ_INSERT_TAIL(&n->waiting, c, link);
        arm_deadline(c, corral_now_ms());
        return;
    }
    if (asking) /* the same connection, so Redis reads it just before */
        corral_redis_command(n->r, NULL, NULL, 1, ask, NULL);
    if (c->script != NULL)
        corral_redis_eval_late(n->r, n->scripts[c->script->index], ccmd_reply,
                               c->late ? ccmd_late : NULL, c, c->nkeys, c->argc,
                               c->argv, c->lens);
    else
        corral_redis_command(n->r, ccmd_reply, c, c->argc, c->argv, c->lens);
}

static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct node *n = arg;
    struct ccmd_list todo = TAILQ_HEAD_INITIALIZER(todo);
    struct ccmd *c;
    (void)fd;
    (void)what;
    if (n->cl->refresh_waiting) { /* a map read waited for a node */
        n->cl->refresh_waiting = false;
        n->cl->refresh_tried = 0;
        refresh_next(n->cl);
    }
    TAILQ_CONCAT(&todo, &n->waiting, link);
    while ((c = TAILQ_FIRST(&todo)) != NULL) {
        TAILQ_REMOVE(&todo, c, link);
        c->queued = false;
        if (corral_redis_ready(n->r) || corral_redis_connecting(n->r)) {
            send_to(c, n->index, c->asking); /* or waits again */
            continue;
        }
        /* The first connection failed: refused, as by a node that went. */
        refresh_soon(n->cl);
        answer(c, NULL, -ENOTCONN);
        ccmd_free(c);
    }
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ccmd *c = arg;
    (void)fd;
    (void)what;
    if (c->done)
        return;
    c->cl->stats.timeouts++;
    if (c->queued) { /* never sent: nothing comes later */
        TAILQ_REMOVE(c->queue, c, link);
        c->queued = false;
        answer(c, NULL, -ETIMEDOUT);
        tell_late(c, NULL, -EIO);
        ccmd_free(c);
        return;
    }
    c->timed_out = true;
    answer(c, NULL, -ETIMEDOUT); /* the retry's reply only frees it */
}

/* "MOVED 3999 127.0.0.1:6381" or "ASK ...": 1 or 2 with the target's
 * host (empty: the node that answered) and port; 0 for another error. */
static int
redirection(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    int kind = strncmp(s, "MOVED ", 6) == 0 ? 1
               : strncmp(s, "ASK ", 4) == 0 ? 2
                                            : 0;
    if (kind == 0)
        return 0;
    const char *addr = strchr(strchr(s, ' ') + 1, ' ');
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (colon == NULL || (size_t)(colon - addr - 1) >= hostlen)
        return -1;
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (p == 0 || p > 65535 || *end != '\0')
        return -1;
    memcpy(host, addr + 1, (size_t)(colon - addr - 1));
    host[colon - addr - 1] = '\0';
    *port = (uint16_t)p;
    return kind;
}

/* Follows a MOVED or an ASK: true when the command was sent again (or
 * waits for the target's first connection). */
static bool
follow(struct ccmd *c, const redisReply *rep)
{
    struct corral_redis_cluster *cl = c->cl;
    char host[256];
    uint16_t port;
    int kind = redirection(rep->str, host, sizeof(host), &port);
    if (kind <= 0)
        return false;
    if (kind == 1)
        cl->stats.moved++;
    else
        cl->stats.ask++;
    if (kind == 1)
        refresh_soon(cl);
    if (c->redirected)
        return false; /* one redirection at most */
    if (host[0] == '\0')
        snprintf(host, sizeof(host), "%s", cl->nodes[c->node]->host);
    int idx = node_get(cl, host, port);
    uint64_t now = corral_now_ms();
    if (idx < 0 || now >= c->deadline)
        return false;
    if (kind == 1) {
        unsigned slot = (unsigned)strtoul(rep->str + 6, NULL, 10);
        if (slot < CORRAL_REDIS_SLOTS)
            own(cl, slot, idx);
    }
    c->redirected = true;
    arm_deadline(c, now);
    send_to(c, (size_t)idx, kind == 2);
    return true;
}

static void
ccmd_reply(const redisReply *rep, int error, void *arg)
{
    struct ccmd *c = arg;
    struct corral_redis_cluster *cl = c->cl;
    if (c->done) { /* answered at the deadline */
        if (error == -ETIMEDOUT && c->late != NULL)
            return; /* the inner command's late comes: ccmd_late */
        tell_late(c, rep, error);
        ccmd_free(c);
        return;
    }
    if (error == -ECANCELED || cl->closing) {
        answer(c, NULL, -ECANCELED);
        ccmd_free(c);
        return;
    }
    if (error == -EIO && rep != NULL && rep->type == REDIS_REPLY_ERROR &&
        follow(c, rep))
        return;
    if ((error == -EIO && rep == NULL) || error == -ENOTCONN)
        refresh_soon(cl); /* the node went: its slots may have moved */
    if (error == -ETIMEDOUT && c->late != NULL) {
        c->timed_out = true;
        answer(c, NULL, error); /* ccmd_late frees it */
        return;
    }
    answer(c, rep, error);
    ccmd_free(c);
}

/* The reply that came after the inner command's -ETIMEDOUT. */
static void
ccmd_late(const redisReply *rep, int error, void *arg)
{
    struct ccmd *c = arg;
    tell_late(c, rep, error);
    ccmd_free(c);
}

static struct ccmd *
ccmd_new(struct corral_redis_cluster *cl, corral_redis_reply_cb *cb, void *arg,
         int argc, const char *const *argv, const size_t *lens)
{
    size_t data = 0;
    for (int i = 0; i < argc; i++)
        data += lens ? lens[i] : strlen(argv[i]);
    struct ccmd *c = xmalloc(
        sizeof(*c) + (size_t)argc * (sizeof(char *) + sizeof(size_t)) + data);
    memset(c, 0, sizeof(*c));
    c->cl = cl;
    c->cb = cb;
    c->arg = arg;
    c->argc = argc;
    c->lens = (size_t *)(c + 1);
    c->argv = (const char **)(c->lens + argc);
    char *p = (char *)(c->argv + argc);
    for (int i = 0; i < argc; i++) {
        c->lens[i] = lens ? lens[i] : strlen(argv[i]);
        memcpy(p, argv[i], c->lens[i]);
        c->argv[i] = p;
        p += c->lens[i];
    }
    c->deadline = corral_now_ms() + cl->timeout_ms;
    cl->stats.commands++;
    return c;
}

/* Sends c to its slot's primary. No owner known: it waits for the map
 * being read (the first, at start) rather than bounce off a node with a
 * MOVED; with no map on its way, any node, which redirects. */
static void
dispatch(struct ccmd *c)
{
    struct corral_redis_cluster *cl = c->cl;
    int idx = cl->slots[c->slot];
    if (idx < 0 && cl->refreshing) {
        c->queued = true;
        c->queue = &cl->unmapped;
        TAILQ_INSERT_TAIL(&cl->unmapped, c, link);
        arm_deadline(c, corral_now_ms());
        return;
    }
    send_to(c, idx >= 0 ? (size_t)idx : cl->refresh_from, false);
}

/* A map was read, or could not be: the commands that waited go. */
static void
dispatch_unmapped(struct corral_redis_cluster *cl)
{
    struct ccmd_list todo = TAILQ_HEAD_INITIALIZER(todo);
    struct ccmd *c;
    TAILQ_CONCAT(&todo, &cl->unmapped, link);
    while ((c = TAILQ_FIRST(&todo)) != NULL) {
        TAILQ_REMOVE(&todo, c, link);
        c->queued = false;
        dispatch(c);
    }
}

/* A command given from a callback of corral_redis_cluster_free(), as
 * corral_redis does: answered -ECANCELED at once, never sent to a node
 * that may be freed already. */
static bool
refused_closing(struct corral_redis_cluster *cl, corral_redis_reply_cb *cb,
                void *arg)
{
    if (!cl->closing)
        return false;
    if (cb)
        cb(NULL, -ECANCELED, arg);
    return true;
}

void
corral_redis_cluster_command(struct corral_redis_cluster *cl, const char *key,
                             size_t keylen, corral_redis_reply_cb *cb,
                             void *arg, int argc, const char *const *argv,
                             const size_t *lens)
{
    if (refused_closing(cl, cb, arg))
        return;
    struct ccmd *c = ccmd_new(cl, cb, arg, argc, argv, lens);
    c->slot = corral_redis_key_slot(key, keylen);
    dispatch(c);
}

struct corral_redis_cluster_script *
corral_redis_cluster_script_new(struct corral_redis_cluster *cl,
                                const char *body)
{
    if (cl->n_scripts == MAX_SCRIPTS)
        abort(); /* a programming error: raise MAX_SCRIPTS */
    struct corral_redis_cluster_script *s = xcalloc(1, sizeof(*s));
    s->body = xstrndup(body, strlen(body));
    s->index = cl->n_scripts;
    cl->scripts[cl->n_scripts++] = s;
    for (size_t i = 0; i < cl->n_nodes; i++)
        cl->nodes[i]->scripts[s->index] =
            corral_redis_script_new(cl->nodes[i]->r, body);
    return s;
}

void
corral_redis_cluster_eval(struct corral_redis_cluster *cl,
                          const struct corral_redis_cluster_script *s,
                          corral_redis_reply_cb *cb, void *arg, int nkeys,
                          int argc, const char *const *argv, const size_t *lens)
{
    corral_redis_cluster_eval_late(cl, s, cb, NULL, arg, nkeys, argc, argv,
                                   lens);
}

void
corral_redis_cluster_eval_late(struct corral_redis_cluster *cl,
                               const struct corral_redis_cluster_script *s,
                               corral_redis_reply_cb *cb,
                               corral_redis_reply_cb *late, void *arg,
                               int nkeys, int argc, const char *const *argv,
                               const size_t *lens)
{
    if (refused_closing(cl, cb, arg))
        return;
    struct ccmd *c = ccmd_new(cl, cb, arg, argc, argv, lens);
    c->script = s;
    c->late = late;
    c->nkeys = nkeys;
    c->slot = corral_redis_key_slot(c->argv[0], c->lens[0]);
    dispatch(c);
}

void
corral_redis_cluster_flush(struct corral_redis_cluster *cl)
{
    for (size_t i = 0; i < cl->n_nodes; i++)
        corral_redis_flush(cl->nodes[i]->r);
}

/* ---- subscriptions ---- */

static void
sub_message(const char *msg, size_t len, void *arg)
{
    struct cchan *ch = arg;
    if (ch->l != NULL && ch->l->message != NULL)
        ch->l->message(msg, len, ch->arg);
}

static void
sub_subscribed(void *arg)
{
    struct cchan *ch = arg;
    if (ch->l != NULL && ch->l->subscribed != NULL)
        ch->l->subscribed(ch->arg);
}

static void
sub_lost(void *arg)
{
    struct cchan *ch = arg;
    event_active(ch->cl->sub_ev, EV_TIMEOUT, 1); /* look at it, off stack */
    if (ch->l != NULL && ch->l->lost != NULL)
        ch->l->lost(ch->arg);
}

static const struct corral_redis_listener sub_listener = {
    .message = sub_message,
    .subscribed = sub_subscribed,
    .lost = sub_lost,
};
static const struct corral_redis_listener quiet; /* hears nothing */

/* The next ready node after the subscribed one, a primary if one is;
 * -1 when none is ready. */
static int
next_sub_node(const struct corral_redis_cluster *cl)
{
    int any = -1;
    for (size_t k = 1; k <= cl->n_nodes; k++) {
        size_t i = ((size_t)cl->sub_node + k) % cl->n_nodes;
        if (!corral_redis_ready(cl->nodes[i]->r))
            continue;
        if (cl->nodes[i]->primary)
            return (int)i;
        if (any < 0)
            any = (int)i;
    }
    return any;
}

static void
sub_move(struct corral_redis_cluster *cl, int to)
{
    struct corral_redis *old = cl->nodes[cl->sub_node]->r;
    /* Quiet first: leaving the old node says lost() for the others. */
    for (size_t i = 0; i < MAX_CHANNELS; i++)
        if (cl->chans[i].name != NULL)
            corral_redis_subscribe(old, cl->chans[i].name, &quiet, NULL);
    for (size_t i = 0; i < MAX_CHANNELS; i++)
        if (cl->chans[i].name != NULL)
            corral_redis_subscribe(old, cl->chans[i].name, NULL, NULL);
    cl->sub_node = to;
    cl->stats.moves++;
    corral_log(CORRAL_LOG_NOTICE, "redis cluster: subscribing on %s:%u now",
               cl->nodes[to]->host, (unsigned)cl->nodes[to]->port);
    for (size_t i = 0; i < MAX_CHANNELS; i++)
        if (cl->chans[i].name != NULL)
            corral_redis_subscribe(cl->nodes[to]->r, cl->chans[i].name,
                                   &sub_listener, &cl->chans[i]);
}

/* The subscribed node deaf and its command connection down too: the node
 * is gone (killed, failed over, partitioned); subscribe elsewhere. Deaf
 * alone, its subscriber connection comes back by itself. */
static void
sub_check(evutil_socket_t fd, short what, void *arg)
{
    struct corral_redis_cluster *cl = arg;
    (void)fd;
    (void)what;
    if (cl->closing || cl->sub_node < 0)
        return;
    struct corral_redis *r = cl->nodes[cl->sub_node]->r;
    if (corral_redis_listening(r) || corral_redis_ready(r))
        return;
    int to = next_sub_node(cl);
    if (to >= 0 && to != cl->sub_node)
        sub_move(cl, to);
}

int
corral_redis_cluster_subscribe(struct corral_redis_cluster *cl,
                               const char *channel,
                               const struct corral_redis_listener *l, void *arg)
{
    struct cchan *ch = NULL, *free_ch = NULL;
    for (size_t i = 0; i < MAX_CHANNELS; i++) {
        if (cl->chans[i].name == NULL)
            free_ch = free_ch ? free_ch : &cl->chans[i];
        else if (strcmp(cl->chans[i].name, channel) == 0)
            ch = &cl->chans[i];
    }
    if (l == NULL) {
        if (ch == NULL)
            return 0;
        corral_redis_subscribe(cl->nodes[cl->sub_node]->r, ch->name, NULL,
                               NULL);
        free(ch->name);
        ch->name = NULL;
        return 0;
    }
    if (ch != NULL) {
        ch->l = l;
        ch->arg = arg;
        return 0;
    }
    if (free_ch == NULL)
        return -ENOSPC;
    if (cl->sub_node < 0) {
        uint32_t pick = 0;
        if (getrandom(&pick, sizeof(pick), 0) != sizeof(pick))
            pick = (uint32_t)corral_now_ms();
        cl->sub_node = (int)(pick % cl->n_seeds);
    }
    ch = free_ch;
    ch->cl = cl;
    ch->name = xstrndup(channel, strlen(channel));
    ch->l = l;
    ch->arg = arg;
    return corral_redis_subscribe(cl->nodes[cl->sub_node]->r, ch->name,
                                  &sub_listener, ch);
}

bool
corral_redis_cluster_listening(const struct corral_redis_cluster *cl)
{
    return cl->sub_node >= 0 &&
           corral_redis_listening(cl->nodes[cl->sub_node]->r);
}

/* ---- lifecycle ---- */

bool
corral_redis_cluster_ready(const struct corral_redis_cluster *cl)
{
    if (cl->unowned > 0)
        return false;
    for (size_t i = 0; i < cl->n_nodes; i++)
        if (cl->nodes[i]->primary && !corral_redis_ready(cl->nodes[i]->r))
            return false;
    return true;
}

bool
corral_redis_cluster_struggling(const struct corral_redis_cluster *cl)
{
    if (!corral_redis_cluster_ready(cl))
        return true;
    for (size_t i = 0; i < cl->n_nodes; i++)
        if (cl->nodes[i]->primary && corral_redis_struggling(cl->nodes[i]->r))
            return true;
    return false;
}

void
corral_redis_cluster_stats(const struct corral_redis_cluster *cl,
                           struct corral_redis_cluster_stats *out)
{
    *out = cl->stats;
    out->primaries = 0;
    for (size_t i = 0; i < cl->n_nodes; i++)
        out->primaries += cl->nodes[i]->primary;
}

void
corral_redis_cluster_node_stats(const struct corral_redis_cluster *cl,
                                struct corral_redis_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->state = cl->unowned == 0 ? CORRAL_REDIS_UP : CORRAL_REDIS_DOWN;
    for (size_t i = 0; i < cl->n_nodes; i++) {
        struct corral_redis_stats st;
        corral_redis_stats(cl->nodes[i]->r, &st);
        out->commands += st.commands;
        out->timeouts += st.timeouts;
        out->errors += st.errors;
        out->connects += st.connects;
        out->stuck += st.stuck;
        out->switches += st.switches;
        out->replies += st.replies;
        out->reply_us += st.reply_us;
        for (int k = 0; k < CORRAL_REDIS_LATENCY_BUCKETS; k++)
            out->reply_le[k] += st.reply_le[k];
        if (cl->nodes[i]->primary && st.state != CORRAL_REDIS_UP)
            out->state = CORRAL_REDIS_DOWN;
    }
}

struct corral_redis_cluster *
corral_redis_cluster_new(struct event_base *base,
                         const struct corral_redis_options *o,
                         const struct corral_redis_node *seeds, size_t n_seeds,
                         char *err, size_t errlen)
{
    if (o->db != 0) {
        snprintf(err, errlen,
                 "redis cluster: db must be 0 (a cluster has "
                 "one database)");
        return NULL;
    }
    if (o->host != NULL || o->unix_path != NULL || o->n_sentinels > 0) {
        snprintf(err, errlen,
                 "redis cluster: seeds, not a host, unix path "
                 "or sentinels");
        return NULL;
    }
    if (n_seeds == 0 || n_seeds > MAX_NODES) {
        snprintf(err, errlen, "redis cluster: 1 to %d seeds", MAX_NODES);
        return NULL;
    }
    for (size_t i = 0; i < n_seeds; i++)
        if (seeds[i].host == NULL || seeds[i].port == 0 ||
            strlen(seeds[i].host) >= sizeof(((struct node *)0)->host)) {
            snprintf(err, errlen,
                     "redis cluster: a seed without host or "
                     "port");
            return NULL;
        }
    struct corral_redis_cluster *cl = xcalloc(1, sizeof(*cl));
    cl->base = base;
    cl->user = o->user ? xstrndup(o->user, strlen(o->user)) : NULL;
    cl->password =
        o->password ? xstrndup(o->password, strlen(o->password)) : NULL;
    cl->timeout_ms = o->timeout_ms ? o->timeout_ms : 50;
    for (size_t s = 0; s < CORRAL_REDIS_SLOTS; s++)
        cl->slots[s] = -1;
    cl->unowned = CORRAL_REDIS_SLOTS;
    TAILQ_INIT(&cl->unmapped);
    cl->sub_node = -1;
    cl->refresh_ev = evtimer_new(base, refresh_cb, cl);
    cl->sub_ev = event_new(base, -1, EV_PERSIST, sub_check, cl);
    struct timeval every = {0, SUB_CHECK_MS * 1000};
    if (cl->refresh_ev == NULL || cl->sub_ev == NULL ||
        event_add(cl->sub_ev, &every) != 0)
        abort(); /* the policy of xalloc.h */
    for (size_t i = 0; i < n_seeds; i++)
        if (node_get(cl, seeds[i].host, seeds[i].port) < 0) {
            snprintf(err, errlen, "redis cluster: seed %s:%u refused",
                     seeds[i].host, (unsigned)seeds[i].port);
            corral_redis_cluster_free(cl);
            return NULL;
        }
    cl->n_seeds = cl->n_nodes; /* a seed named twice is one node */
    /* The seeds connect in the background: they answer -ENOTCONN until
     * then, and the refresh asks again every REFRESH_RETRY_MS. */
    refresh(cl);
    return cl;
}

void
corral_redis_cluster_free(struct corral_redis_cluster *cl)
{
    if (cl == NULL)
        return;
    cl->closing = true;
    struct ccmd *c;
    while ((c = TAILQ_FIRST(&cl->unmapped)) != NULL) {
        TAILQ_REMOVE(&cl->unmapped, c, link);
        answer(c, NULL, -ECANCELED);
        ccmd_free(c);
    }
    for (size_t i = 0; i < cl->n_nodes; i++) {
        struct node *n = cl->nodes[i];
        while ((c = TAILQ_FIRST(&n->waiting)) != NULL) {
            TAILQ_REMOVE(&n->waiting, c, link);
            answer(c, NULL, -ECANCELED);
            ccmd_free(c);
        }
    }
    for (size_t i = 0; i < MAX_CHANNELS; i++)
        if (cl->chans[i].name != NULL)
            cl->chans[i].l = NULL; /* no lost() at exit */
    for (size_t i = 0; i < cl->n_nodes; i++) {
        corral_redis_watch(cl->nodes[i]->r, NULL, NULL);
        corral_redis_free(cl->nodes[i]->r); /* answers its commands */
        event_free(cl->nodes[i]->wake_ev);
        free(cl->nodes[i]);
        cl->nodes[i] = NULL;
    }
    for (size_t i = 0; i < MAX_CHANNELS; i++)
        free(cl->chans[i].name);
    for (size_t i = 0; i < cl->n_scripts; i++) {
        free(cl->scripts[i]->body);
        free(cl->scripts[i]);
    }
    event_free(cl->refresh_ev);
    event_free(cl->sub_ev);
    free(cl->user);
    free(cl->password);
    free(cl);
}

/* ---- the blocking probe at start ---- */

/* corral_redis_probe() of one node. */
static int
probe_node(const struct corral_redis_options *o, const char *host,
           uint16_t port, uint64_t deadline, int argc, const char *const *argv,
           redisReply **out, char *err, size_t errlen)
{
    struct corral_redis_options no = {
        .host = host,
        .port = port,
        .user = o->user,
        .password = o->password,
    };
    uint64_t now = corral_now_ms();
    if (now >= deadline) {
        snprintf(err, errlen, "no answer in time");
        return -ETIMEDOUT;
    }
    int rc =
        corral_redis_probe(&no, deadline - now, argc, argv, out, err, errlen);
    if (rc == 0 && *out == NULL) {
        snprintf(err, errlen, "%s:%u: no reply", host, (unsigned)port);
        rc = -EIO;
    }
    return rc;
}

int
corral_redis_cluster_probe(const struct corral_redis_options *o,
                           const struct corral_redis_node *seeds,
                           size_t n_seeds, uint64_t timeout_ms, int argc,
                           const char *const *argv, struct redisReply **out,
                           char *err, size_t errlen)
{
    static const char *const info[2] = {"CLUSTER", "INFO"};
    uint64_t deadline = corral_now_ms() + timeout_ms;
    int rc = -EHOSTUNREACH;
    if (out != NULL)
        *out = NULL;
    snprintf(err, errlen, "no seed to ask");
    for (size_t i = 0; i < n_seeds; i++) {
        const char *host = seeds[i].host;
        uint16_t port = seeds[i].port;
        redisReply *rep = NULL;
        rc = probe_node(o, host, port, deadline, 2, info, &rep, err, errlen);
        if (rc == -EINVAL)
            return rc; /* AUTH refused: the configuration's */
        if (rc < 0)
            continue;
        if (rep->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen,
                     "CLUSTER INFO: %s:%u is not a cluster node (%s)", host,
                     (unsigned)port, rep->str);
            freeReplyObject(rep);
            return -EINVAL;
        }
        bool ok = rep->type == REDIS_REPLY_STRING &&
                  strstr(rep->str, "cluster_state:ok") != NULL;
        freeReplyObject(rep);
        if (!ok) {
            snprintf(err, errlen, "%s:%u: cluster_state is not ok", host,
                     (unsigned)port);
            rc = -EAGAIN;
            continue;
        }
        if (argc == 0 || out == NULL)
            return 0;
        rc = probe_node(o, host, port, deadline, argc, argv, &rep, err, errlen);
        if (rc < 0)
            continue;
        char to[256];
        uint16_t to_port;
        if (rep->type == REDIS_REPLY_ERROR &&
            redirection(rep->str, to, sizeof(to), &to_port) == 1) {
            /* One MOVED followed; an ASK (a slot migrating) is not: the
             * caller hears the error reply. */
            freeReplyObject(rep);
            rep = NULL;
            rc = probe_node(o, to[0] ? to : host, to_port, deadline, argc, argv,
                            &rep, err, errlen);
            if (rc < 0)
                continue;
        }
        *out = rep;
        return 0;
    }
    return rc;
}
