/* corral/cluster.h — a Redis Cluster on the caller's libevent loop: the
 * slot map read from CLUSTER SLOTS, one struct corral_redis per primary
 * (its handshake, timeout, scripts and health), commands sent by their
 * key's slot, the MOVED and ASK redirections followed, and subscriptions
 * held on one node and moved when it goes. Every command's callback fires
 * exactly once, from the loop, within the command's timeout, a followed
 * redirection and the wait for a node's first connection included. It
 * knows nothing of what the commands mean. A struct corral_redis made
 * with cluster seeds (corral/redis.h) wraps one: most callers use that. */
#ifndef CORRAL_CLUSTER_H
#define CORRAL_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/redis.h"

#define CORRAL_REDIS_SLOTS 16384

struct corral_redis_cluster;        /* opaque */
struct corral_redis_cluster_script; /* opaque: a script on every primary */

struct corral_redis_cluster_stats {
    uint64_t commands;  /* given */
    uint64_t moved;     /* MOVED replies followed or not */
    uint64_t ask;       /* ASK replies followed or not */
    uint64_t refreshes; /* slot maps read */
    uint64_t nodes;     /* connections, seeds included */
    uint64_t primaries; /* distinct owners in the slot map now */
    uint64_t timeouts;  /* answered -ETIMEDOUT by the cluster itself: after
                         * a redirection, or waiting for a new node */
    uint64_t moves;     /* subscriptions moved to another node */
};

/* One range of slots and its primary, from CLUSTER SLOTS. */
struct corral_redis_slot_range {
    uint16_t first, last; /* inclusive */
    char host[256];
    uint16_t port;
};

/* The slot of a key: CRC16-XMODEM of the key, or of its hash tag (what
 * lies between the first '{' and the next '}' when that is not empty),
 * mod 16384. */
unsigned corral_redis_key_slot(const char *key, size_t len);
/* CRC16-XMODEM, as Redis Cluster uses it. Exposed for its test. */
uint16_t corral_redis_crc16(const char *buf, size_t len);

/* Reads a CLUSTER SLOTS reply into *out (caller frees) and *n ranges. A
 * primary without a host ("") is the node that was asked, asked_host.
 * Returns 0, or -EPROTO for a reply of another shape. */
int corral_redis_cluster_slots_parse(const struct redisReply *reply,
                                     const char *asked_host,
                                     struct corral_redis_slot_range **out,
                                     size_t *n);

/* Connects to the n_seeds seeds (copied) in the background and reads the
 * slot map from the first that answers. o gives user, password and
 * timeout_ms; its host, unix_path and sentinels must be unset and db 0
 * (a cluster has one database). Returns NULL with a reason in err on bad
 * options. Caller frees. */
struct corral_redis_cluster *
corral_redis_cluster_new(struct event_base *base,
                         const struct corral_redis_options *o,
                         const struct corral_redis_node *seeds, size_t n_seeds,
                         char *err, size_t errlen);
/* Answers every command in flight -ECANCELED and frees cl. Not from
 * inside one of its callbacks. NULL is a no-op. */
void corral_redis_cluster_free(struct corral_redis_cluster *cl);

/* Every slot has a primary in the map whose connection is ready. */
bool corral_redis_cluster_ready(const struct corral_redis_cluster *cl);
/* Not ready, or a primary in the map struggles (corral_redis_struggling). */
bool corral_redis_cluster_struggling(const struct corral_redis_cluster *cl);
/* The node that holds the subscriptions is subscribed to every channel. */
bool corral_redis_cluster_listening(const struct corral_redis_cluster *cl);
/* corral_redis_flush() on every node. */
void corral_redis_cluster_flush(struct corral_redis_cluster *cl);

/* Sends argv to the primary of key's slot (keylen bytes); the callback is
 * corral_redis_command()'s, with -EIO and the error reply for a second
 * redirection. cb NULL: fire and forget. A node whose first connection
 * is being made holds its commands until it is ready (or they time out);
 * one that was ready and went refuses them (-ENOTCONN) at once. */
void corral_redis_cluster_command(struct corral_redis_cluster *cl,
                                  const char *key, size_t keylen,
                                  corral_redis_reply_cb *cb, void *arg,
                                  int argc, const char *const *argv,
                                  const size_t *lens);

/* A Lua script created on every primary's connection, present and to
 * come. Freed with cl. Aborts when out of memory. */
struct corral_redis_cluster_script *
corral_redis_cluster_script_new(struct corral_redis_cluster *cl,
                                const char *body);
/* corral_redis_eval() on the primary of the first key's slot (nkeys >= 1;
 * the keys share one slot). */
void corral_redis_cluster_eval(struct corral_redis_cluster *cl,
                               const struct corral_redis_cluster_script *s,
                               corral_redis_reply_cb *cb, void *arg, int nkeys,
                               int argc, const char *const *argv,
                               const size_t *lens);
/* corral_redis_cluster_eval() whose late hears what corral_redis_eval_late()
 * says: the reply that comes after cb heard -ETIMEDOUT (a redirection that
 * comes late is an -EIO: the script did not run). arg must live until. */
void corral_redis_cluster_eval_late(struct corral_redis_cluster *cl,
                                    const struct corral_redis_cluster_script *s,
                                    corral_redis_reply_cb *cb,
                                    corral_redis_reply_cb *late, void *arg,
                                    int nkeys, int argc,
                                    const char *const *argv,
                                    const size_t *lens);

/* corral_redis_subscribe(), on one node: a seed at first (chosen at
 * random, so a fleet's subscribers spread over the seeds), another ready
 * node when its connection goes; subscribed() fires again there, so the
 * caller resyncs. Classic SUBSCRIBE: the node hears what any node
 * publishes, over the cluster bus. */
int corral_redis_cluster_subscribe(struct corral_redis_cluster *cl,
                                   const char *channel,
                                   const struct corral_redis_listener *l,
                                   void *arg);

void corral_redis_cluster_stats(const struct corral_redis_cluster *cl,
                                struct corral_redis_cluster_stats *out);
/* Every node's corral_redis_stats() added up; state is up when every
 * slot's primary is. */
void corral_redis_cluster_node_stats(const struct corral_redis_cluster *cl,
                                     struct corral_redis_stats *out);

/* corral_redis_probe() on a cluster: the seeds asked in turn within
 * timeout_ms; the first that answers must be a cluster node (else
 * -EINVAL); argv goes to the primary of argv[1]'s slot, one MOVED or ASK
 * followed. */
int corral_redis_cluster_probe(const struct corral_redis_options *o,
                               const struct corral_redis_node *seeds,
                               size_t n_seeds, uint64_t timeout_ms, int argc,
                               const char *const *argv, struct redisReply **out,
                               char *err, size_t errlen);

#endif
