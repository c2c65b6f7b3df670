/* redis_impl.h — what the cluster client (cluster.c) needs of one server's
 * connection (redis.c) beyond corral/redis.h. Private to libcorral. */
#ifndef CORRAL_REDIS_IMPL_H
#define CORRAL_REDIS_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "corral/redis.h"

/* fn(arg) hears each time r's command connection finished a handshake or
 * gave up an attempt. It is called inside r's own callbacks: it must only
 * schedule work (event_active). One watcher; fn NULL: none. */
void corral_redis_watch(struct corral_redis *r, void (*fn)(void *arg),
                        void *arg);
/* A connection attempt (connect and handshake) is under way. */
bool corral_redis_connecting(const struct corral_redis *r);
/* A handshake ever completed. */
bool corral_redis_ever_ready(const struct corral_redis *r);
/* argv as one RESP command, byte for byte what hiredis's
 * redisFormatCommandArgv() writes (lens NULL: C strings), and a NUL after
 * it as there (hiredis reads the byte after a command of one argument),
 * into buf when both fit in cap bytes, else into a block *heap that the
 * caller frees (*heap NULL: buf holds it). Its length, without the NUL. */
size_t corral_redis_format(char *buf, size_t cap, char **heap, int argc,
                           const char *const *argv, const size_t *lens);

#endif
