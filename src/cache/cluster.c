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
 * any time. Its deadline is fixed when given; a retry after a redirection
 * gets a timer for what remains of it, so the caller hears within the
 * original timeout and the retry's own (longer) timeout only frees it. */
#include "corral/cluster.h"
#include "log.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"
#include "xalloc.h"

#define MAX_NODES 256
#define MAX_SCRIPTS 16
#define REFRESH_MIN_MS 100 /* between two map reads begun */
#define REFRESH_RETRY_MS 250

struct node {
    char host[256];
    uint16_t port;
    struct corral_redis *r;
    struct corral_redis_script *scripts[MAX_SCRIPTS];
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

    bool refreshing;       /* one CLUSTER SLOTS in flight at most */
    size_t refresh_from;   /* the node that answered last */
    size_t refresh_tried;  /* nodes asked in this refresh */
    size_t refresh_node;   /* asked now */
    uint64_t refreshed_ms; /* when the last refresh began */
    struct event *refresh_ev;

    bool closing;
    struct corral_redis_cluster_stats stats;
};

struct ccmd {
    struct corral_redis_cluster *cl;
    corral_redis_reply_cb *cb;
    void *arg;
    const struct corral_redis_cluster_script *script; /* NULL: a command */
    int nkeys;
    size_t node;         /* asked last */
    uint64_t deadline;   /* monotonic ms */
    struct event *timer; /* after a redirection only */
    bool redirected;
    bool done; /* cb has fired */
    int argc;
    const char **argv;
    size_t *lens;
};

/* ---- slots ---- */

uint16_t
corral_redis_crc16(const char *buf, size_t len)
{
    /* Bitwise, not a table: a hit never touches Redis, and a command
     * costs a round trip that dwarfs these few shifts. */
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021)
                               : (uint16_t)(crc << 1);
    }
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
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    n->r = r;
    for (size_t i = 0; i < cl->n_scripts; i++)
        n->scripts[i] = corral_redis_script_new(r, cl->scripts[i]->body);
    cl->nodes[cl->n_nodes] = n;
    cl->stats.nodes++;
    return (int)cl->n_nodes++;
}

/* ---- the map ---- */

static void refresh_next(struct corral_redis_cluster *cl);

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
    for (size_t s = 0; s < CORRAL_REDIS_SLOTS; s++)
        cl->slots[s] = -1;
    for (size_t i = 0; i < n; i++) {
        int idx = node_get(cl, v[i].host, v[i].port);
        for (unsigned s = v[i].first; s <= v[i].last; s++)
            cl->slots[s] = (int16_t)idx;
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
        return;
    }
    refresh_next(cl);
}

static void
refresh_next(struct corral_redis_cluster *cl)
{
    static const char *const argv[2] = {"CLUSTER", "SLOTS"};
    if (cl->refresh_tried == cl->n_nodes) {
        struct timeval tv = {0, REFRESH_RETRY_MS * 1000};
        cl->refreshing = false;
        evtimer_add(cl->refresh_ev, &tv);
        return;
    }
    size_t i = (cl->refresh_from + cl->refresh_tried++) % cl->n_nodes;
    cl->refresh_node = i;
    corral_redis_command(cl->nodes[i]->r, slots_reply, cl, 2, argv, NULL);
}

static void
refresh(struct corral_redis_cluster *cl)
{
    if (cl->refreshing || cl->closing)
        return;
    cl->refreshing = true;
    cl->refresh_tried = 0;
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

static void
send_to(struct ccmd *c, size_t idx, bool asking)
{
    static const char *const ask[1] = {"ASKING"};
    struct node *n = c->cl->nodes[idx];
    c->node = idx;
    if (asking) /* the same connection, so Redis reads it just before */
        corral_redis_command(n->r, NULL, NULL, 1, ask, NULL);
    if (c->script != NULL)
        corral_redis_eval(n->r, n->scripts[c->script->index], ccmd_reply, c,
                          c->nkeys, c->argc, c->argv, c->lens);
    else
        corral_redis_command(n->r, ccmd_reply, c, c->argc, c->argv, c->lens);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ccmd *c = arg;
    (void)fd;
    (void)what;
    if (!c->done)
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

/* Follows a MOVED or an ASK: true when the command was sent again. */
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
            cl->slots[slot] = (int16_t)idx;
    }
    c->redirected = true;
    c->timer = evtimer_new(cl->base, deadline_cb, c);
    uint64_t left = c->deadline - now;
    struct timeval tv = {(time_t)(left / 1000),
                         (suseconds_t)(left % 1000 * 1000)};
    evtimer_add(c->timer, &tv);
    send_to(c, (size_t)idx, kind == 2);
    return true;
}

static void
ccmd_reply(const redisReply *rep, int error, void *arg)
{
    struct ccmd *c = arg;
    struct corral_redis_cluster *cl = c->cl;
    if (c->done) { /* answered at the deadline */
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
    answer(c, rep, error);
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

static size_t
primary_of(struct corral_redis_cluster *cl, const char *key, size_t keylen)
{
    int idx = cl->slots[corral_redis_key_slot(key, keylen)];
    /* No owner known: any node, which redirects. */
    return idx >= 0 ? (size_t)idx : cl->refresh_from;
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
    send_to(c, primary_of(cl, key, keylen), false);
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
    if (refused_closing(cl, cb, arg))
        return;
    struct ccmd *c = ccmd_new(cl, cb, arg, argc, argv, lens);
    c->script = s;
    c->nkeys = nkeys;
    send_to(c, primary_of(cl, c->argv[0], c->lens[0]), false);
}

/* ---- lifecycle ---- */

bool
corral_redis_cluster_ready(const struct corral_redis_cluster *cl)
{
    for (size_t s = 0; s < CORRAL_REDIS_SLOTS; s++)
        if (cl->slots[s] < 0)
            return false;
    return true;
}

void
corral_redis_cluster_stats(const struct corral_redis_cluster *cl,
                           struct corral_redis_cluster_stats *out)
{
    *out = cl->stats;
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
    cl->refresh_ev = evtimer_new(base, refresh_cb, cl);
    for (size_t i = 0; i < n_seeds; i++)
        if (node_get(cl, seeds[i].host, seeds[i].port) < 0) {
            snprintf(err, errlen, "redis cluster: seed %s:%u refused",
                     seeds[i].host, (unsigned)seeds[i].port);
            corral_redis_cluster_free(cl);
            return NULL;
        }
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
    for (size_t i = 0; i < cl->n_nodes; i++) {
        corral_redis_free(cl->nodes[i]->r); /* answers its commands */
        free(cl->nodes[i]);
        cl->nodes[i] = NULL;
    }
    for (size_t i = 0; i < cl->n_scripts; i++) {
        free(cl->scripts[i]->body);
        free(cl->scripts[i]);
    }
    event_free(cl->refresh_ev);
    free(cl->user);
    free(cl->password);
    free(cl);
}
