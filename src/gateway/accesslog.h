/* accesslog.h — one line per answered request, buffered: lines collect in
 * memory and go out in whole-line writes (O_APPEND, so the workers of a
 * server can share one file) when the buffer fills and every second, so
 * the hit path pays for formatting a line and nothing else. Reopened on
 * demand (SIGUSR1, for logrotate). A line:
 *
 *   2026-12-03T09:20:01.123Z 127.0.0.1 GET /api/btc 200 1024 hit 52 87 h1
 *
 * time (UTC), client, method, path (no query: it is not logged), status,
 * body bytes, how the cache answered (or -), the upstream call's ms (or
 * -), the µs from the parsed request to the queued answer, and the
 * protocol (h1, h2c). Nothing secret is in it: no query, no header. */
#ifndef CORRAL_ACCESSLOG_H
#define CORRAL_ACCESSLOG_H

#include <stddef.h>

struct event_base;
struct corral_request;
struct corral_access_log; /* opaque */

/* Opens path for appending ("-": standard output). Returns NULL with the
 * reason in err. */
struct corral_access_log *corral_access_log_open(struct event_base *base,
                                                 const char *path, char *err,
                                                 size_t errlen);
/* Flushes, then opens the path again (a rotated file is let go). Returns
 * 0, or -errno with the reason in err (the old file stays in use). */
int corral_access_log_reopen(struct corral_access_log *l, char *err,
                             size_t errlen);
/* The server's access callback (corral_access_cb): arg is the log. */
void corral_access_log_write(const struct corral_request *req, int status,
                             size_t body_bytes, void *arg);
/* Writes what is buffered now. */
void corral_access_log_flush(struct corral_access_log *l);
/* Flushes and closes. NULL is a no-op. */
void corral_access_log_free(struct corral_access_log *l);

#endif
