/* corral/redis.h — one Redis server on the caller's libevent loop, through
 * hiredis's async API: a pipelined command connection and a subscriber
 * connection; or, made with cluster seeds, a Redis Cluster behind the same
 * calls (corral/cluster.h does the work: each command goes to the primary
 * of its key's slot). It owns connecting, the handshake (AUTH, SELECT checked,
 * scripts loaded, PING), reconnecting with capped backoff, one timeout for
 * every command, taking a connection that accepts but never answers for
 * stuck, health with hysteresis (logged once per change, with the last
 * error), and subscriptions with a resync point. Every command's callback
 * fires exactly once, from the loop, never inside the call that gave the
 * command. It knows nothing of what the commands mean: the L2 tier
 * (corral/redis_tier.h) and its users' own state in Redis are built on it. */
#ifndef CORRAL_REDIS_H
#define CORRAL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisReply;
struct corral_redis;        /* opaque */
struct corral_redis_script; /* opaque: a Lua script loaded at every connect */

/* One sentinel's or cluster seed's address. */
struct corral_redis_node {
    const char *host;
    uint16_t port;
};

struct corral_redis_options {
    const char *host;      /* name or IP; NULL when unix_path is set or
                            * the sentinels name the server */
    uint16_t port;         /* 1..65535 */
    const char *unix_path; /* a Unix socket instead of host:port */
    unsigned db;           /* SELECT db when not 0; an error is fatal */
    const char *user;      /* ACL user for AUTH; NULL: the password alone */
    const char *password;  /* AUTH when not NULL; never logged */
    uint64_t timeout_ms;   /* every command's; 0 = 50 ms */
    /* Sentinel: with n_sentinels > 0, host, port and unix_path are unset
     * and the server is the primary that sentinels (asked in turn, each
     * within timeout_ms) name for master, asked again before every
     * connect; a server whose ROLE is not master is dropped, and so is
     * one that answers READONLY, or on a +switch-master for master. */
    const char *master;
    const struct corral_redis_node *sentinels; /* copied */
    size_t n_sentinels;
    const char *sentinel_user;     /* the sentinels' own AUTH */
    const char *sentinel_password; /* never logged */
    /* Cluster: with n_cluster > 0, host, port, unix_path and sentinels
     * are unset and db is 0; the seeds name the cluster, user, password
     * and timeout_ms hold for every node. A command goes to the primary
     * of its key's slot: corral_redis_eval()'s first key (nkeys >= 1,
     * and every key of one script in one slot: a hash tag), and
     * corral_redis_command()'s argv[1], which is the key or channel of
     * every command corral gives (GET, SET, DEL, ZREM, PUBLISH...); a
     * command of one word goes to any primary. Subscriptions are classic
     * (SUBSCRIBE, on one node, which hears every node's PUBLISH over the
     * cluster bus) and move to another node when theirs goes. */
    const struct corral_redis_node *cluster; /* copied */
    size_t n_cluster;
};

enum corral_redis_state {
    CORRAL_REDIS_DOWN = 0, /* not connected, or commands keep failing */
    CORRAL_REDIS_UP,
};

/* Upper bounds of the reply time histogram, µs. */
#define CORRAL_REDIS_LATENCY_BOUNDS                                            \
    {                                                                          \
        100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000   \
    }
enum { CORRAL_REDIS_LATENCY_BUCKETS = 11 };

struct corral_redis_stats {
    uint64_t commands;  /* given, sent or not */
    uint64_t timeouts;  /* answered -ETIMEDOUT */
    uint64_t errors;    /* error replies (not MOVED, ASK or TRYAGAIN), lost
                         * connections, not sent */
    uint64_t connects;  /* handshakes completed (1 + reconnects) */
    uint64_t stuck;     /* connections closed for never answering */
    uint64_t switches;  /* sentinel: the primary named is a new one */
    uint64_t moved;     /* cluster: MOVED replies (a slot elsewhere now) */
    uint64_t ask;       /* cluster: ASK replies (a slot migrating) */
    uint64_t refreshes; /* cluster: slot maps read */
    uint64_t primaries; /* cluster: primaries in the slot map now */
    enum corral_redis_state state; /* cluster: up when every slot's
                                    * primary is */
    /* Replies, from the command's send to its reply (one answered after
     * its timeout too; a lost connection's commands are not): how many,
     * their total µs, and how many within each bound. */
    uint64_t replies;
    uint64_t reply_us;
    uint64_t reply_le[CORRAL_REDIS_LATENCY_BUCKETS];
};

/* error 0: reply holds the answer (never an error reply). -EIO: reply is
 * Redis's error reply, or NULL when the connection went. -ETIMEDOUT: no
 * answer within the timeout (a later one is dropped). -ENOTCONN: not
 * sent, the connection was not ready. -ECANCELED: freed first. reply is
 * borrowed for the callback. */
typedef void corral_redis_reply_cb(const struct redisReply *reply, int error,
                                   void *arg);

/* Connects in the background. Returns NULL with a reason in err on bad
 * options. o's strings are copied. Caller frees. */
struct corral_redis *corral_redis_new(struct event_base *base,
                                      const struct corral_redis_options *o,
                                      char *err, size_t errlen);
/* Answers every command in flight -ECANCELED, closes both connections and
 * frees r. Not from inside one of its callbacks. NULL is a no-op. */
void corral_redis_free(struct corral_redis *r);

/* Connects once, checks AUTH and SELECT (and ROLE with sentinels), then
 * (argc > 0) sends argv and hands its reply to *out (caller frees it with
 * freeReplyObject()). Blocks for at most timeout_ms in all: every step,
 * the sentinels' included, shares that one deadline (each sentinel is
 * given a share of what is left, so one that never answers leaves time
 * for the next). With cluster seeds: the first seed that answers, which
 * must be a cluster node, and argv sent to the primary of argv[1]'s slot
 * (one redirection followed). Returns 0; -EINVAL with Redis's reason in
 * err when Redis refused AUTH or SELECT (a configuration error); or
 * another -errno (-ETIMEDOUT when the deadline came first) when Redis
 * cannot be reached (an outage: the caller goes on, and a struct
 * corral_redis keeps trying). For a program's start. */
int corral_redis_probe(const struct corral_redis_options *o,
                       uint64_t timeout_ms, int argc, const char *const *argv,
                       struct redisReply **out, char *err, size_t errlen);

/* Sends one command: argc arguments with their lengths (lens NULL:
 * NUL-terminated). cb NULL: fire and forget, failures only counted. */
void corral_redis_command(struct corral_redis *r, corral_redis_reply_cb *cb,
                          void *arg, int argc, const char *const *argv,
                          const size_t *lens);

/* A Lua script for corral_redis_eval(), loaded at every handshake (and
 * again after a NOSCRIPT). Freed with r. Aborts when out of memory. */
struct corral_redis_script *corral_redis_script_new(struct corral_redis *r,
                                                    const char *body);
/* EVALSHA of script with argv = nkeys keys, then the rest of argc. */
void corral_redis_eval(struct corral_redis *r,
                       const struct corral_redis_script *script,
                       corral_redis_reply_cb *cb, void *arg, int nkeys,
                       int argc, const char *const *argv, const size_t *lens);

/* corral_redis_eval() whose late (may be NULL) also hears the reply that
 * comes after cb heard -ETIMEDOUT: once, with the reply and 0 or -EIO, or
 * with NULL and -EIO when the connection went first. arg must live until
 * then. For commands whose effect must not go unnoticed (a lease granted
 * after its asker stopped waiting). */
void corral_redis_eval_late(struct corral_redis *r,
                            const struct corral_redis_script *script,
                            corral_redis_reply_cb *cb,
                            corral_redis_reply_cb *late, void *arg, int nkeys,
                            int argc, const char *const *argv,
                            const size_t *lens);

/* Writes what the command connection holds now instead of on the next
 * loop turn, so commands just given reach Redis before anything this
 * turn writes elsewhere (an answer to a client that then asks another
 * instance). */
void corral_redis_flush(struct corral_redis *r);

/* The command connection finished its handshake and is open. Cluster:
 * every slot has a primary in the map whose connection is. */
bool corral_redis_ready(const struct corral_redis *r);
/* The last commands went unanswered or failed since a reply came: callers
 * that can decide alone had better not wait on Redis now. Cluster: not
 * ready, or so for one of the primaries. */
bool corral_redis_struggling(const struct corral_redis *r);
/* The subscriber connection is subscribed to every channel. */
bool corral_redis_listening(const struct corral_redis *r);
/* The timeout of every command, ms. */
uint64_t corral_redis_timeout(const struct corral_redis *r);

/* What a subscriber hears on one channel. */
struct corral_redis_listener {
    /* A message: len bytes, borrowed for the call. */
    void (*message)(const char *msg, size_t len, void *arg);
    /* Subscribed, at start or again after the subscriber connection
     * went: messages published meanwhile were not heard; resync now. */
    void (*subscribed)(void *arg);
    /* The subscriber connection went: deaf until subscribed() again. */
    void (*lost)(void *arg);
};
/* Listens to channel (copied) with l (borrowed; must outlive the
 * subscription); l NULL stops listening to it. At most 4 channels. */
int corral_redis_subscribe(struct corral_redis *r, const char *channel,
                           const struct corral_redis_listener *l, void *arg);

void corral_redis_stats(const struct corral_redis *r,
                        struct corral_redis_stats *out);
/* The reply to SENTINEL get-master-addr-by-name: the host (into host,
 * hostlen bytes) and port of the primary. Returns 0, or -ENOENT when the
 * sentinel knows no such master, or -EPROTO for a reply of another shape.
 * Exposed for its test. */
int corral_redis_master_addr(const struct redisReply *reply, char *host,
                             size_t hostlen, uint16_t *port);
/* ROLE's reply says master: 1; another role: 0; not a ROLE reply: -1. */
int corral_redis_role_master(const struct redisReply *reply);

/* The hash tag of the names every instance must read in one order, in
 * one slot of a cluster: the purge log and its epoch, the generations. */
#define CORRAL_REDIS_FLEET_TAG "{fleet}"
/* Bytes a tagged name adds to prefix, kind and id: "{", 8 hex, "}". */
#define CORRAL_REDIS_TAG_LEN 10

/* The name of one thing (kind, such as "v:") of id in Redis: prefix
 * "{" tag "}" kind id, where tag is 8 hex digits of a fixed hash of id's
 * bytes: never empty and never a brace, whatever the bytes (a '{' or '}'
 * in id, or an empty id), so on a cluster every name made for one id is
 * in one slot, and ids spread over the slots. Writes min(cap, length)
 * bytes to out (no NUL); returns the length, strlen(prefix) +
 * CORRAL_REDIS_TAG_LEN + strlen(kind) + idlen. prefix must hold no brace
 * on a cluster (its first "{...}" would be the tag). */
size_t corral_redis_tagged_name(char *out, size_t cap, const char *prefix,
                                const char *kind, const void *id, size_t idlen);
/* What keys may share one script with key: its slot on a cluster; 0 on
 * one server, where any keys may. */
unsigned corral_redis_slot(const struct corral_redis *r, const char *key,
                           size_t len);

/* "up" or "down". */
const char *corral_redis_state_name(enum corral_redis_state s);
/* "host:port", "unix:PATH", the sentinels' master or "cluster
 * host:port" (the first seed), for logs. */
const char *corral_redis_name(const struct corral_redis *r);

#endif
