/* corral/cluster.h — a Redis Cluster on the caller's libevent loop: the
 * slot map read from CLUSTER SLOTS, one struct corral_redis per primary
 * (its handshake, timeout, scripts and health), commands sent by their
 * key's slot, and the MOVED and ASK redirections followed. Every command's
 * callback fires exactly once, from the loop, within the command's
 * timeout, a followed redirection included. It knows nothing of what the
 * commands mean. */
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

/* Every slot has a primary in the map. */
bool corral_redis_cluster_ready(const struct corral_redis_cluster *cl);

/* Sends argv to the primary of key's slot (keylen bytes); the callback is
 * corral_redis_command()'s, with -EIO and the error reply for a second
 * redirection. cb NULL: fire and forget. */
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

void corral_redis_cluster_stats(const struct corral_redis_cluster *cl,
                                struct corral_redis_cluster_stats *out);

#endif
