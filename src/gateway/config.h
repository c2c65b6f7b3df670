/* config.h — the gateway's configuration, loaded from one JSON file.
 * Loading checks everything the gateway relies on (types, ranges, references
 * between routes and upstreams, patterns) and expands ${NAME} from the
 * environment, so a config that loads is one the gateway can run. A loaded
 * config is plain immutable data; everything in it belongs to it. */
#ifndef CORRAL_CONFIG_H
#define CORRAL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "corral/strategy.h"
#include "pattern.h"

/* {param}s and forwarded query names a route may have, each. */
#define CORRAL_CONFIG_MAX_PARAMS 8

/* The keys of a route purged as a whole are "~<generation>~<key>"
 * (generations.h). No other key starts with this mark: a configured key may
 * not, and one derived from the path starts with '/'. So no route's key
 * can be another's after a purge. */
#define CORRAL_CONFIG_GENERATION_MARK '~'

/* The pattern a {param} gets when the route's "params" names none. */
#define CORRAL_CONFIG_DEFAULT_PARAM_PATTERN "^[A-Za-z0-9._~-]{1,128}$"

/* "host:port". listen addresses take IPv4 literals, "[IPv6]" and
 * "localhost"; l2.redis and upstream hosts also take host names. */
struct corral_config_addr {
    char *host; /* "127.0.0.1", "::1" (no brackets), "localhost", a name */
    uint16_t port;
};

/* "listen_tls": a second client port speaking TLS (ALPN h2, http/1.1). */
struct corral_config_tls {
    struct corral_config_addr listen;
    char *cert; /* PEM certificate chain, read at start and on SIGHUP */
    char *key;  /* PEM private key, ditto */
};

struct corral_config_admin {
    struct corral_config_addr listen;
    char *token;          /* NULL: none, so every mutating call gets 403 */
    unsigned max_clients; /* connections per worker, default 64 */
    uint64_t client_timeout_ms; /* idle or slow admin client, default 5 s */
};

/* l2.sentinel: the sentinels that name the Redis primary. */
struct corral_config_sentinel {
    char *master; /* the name the sentinels monitor it by */
    struct corral_config_addr *nodes;
    size_t n_nodes;
    char *user;     /* the sentinels' AUTH user; NULL: the default */
    char *password; /* the sentinels' AUTH; NULL: none. Never logged */
};

struct corral_config_l2 {
    struct corral_config_addr redis; /* host:port, unless unix_path,
                                      * sentinel or cluster */
    char *unix_path;                 /* "unix:/path": the path */
    char *user;          /* AUTH user (Redis ACL); NULL: the default user */
    char *password;      /* AUTH; NULL: none. Never logged */
    unsigned db;         /* SELECTed; 0..65535 */
    char *prefix;        /* prepended to every key, default "corral:" */
    uint64_t timeout_ms; /* per operation, default 50 */
    uint64_t max_value_bytes; /* larger values stay in L1, default 1 MB */
    struct corral_config_sentinel *sentinel; /* NULL: l2.redis */
    struct corral_config_addr *cluster;      /* l2.cluster's seeds */
    size_t n_cluster;                        /* 0: not a cluster */
};

struct corral_config_limits {
    uint64_t max_header_bytes;  /* request line + headers, default 8KB */
    uint64_t client_timeout_ms; /* idle or slow client, default 30 s */
    unsigned max_clients;       /* open connections, default 10000 */
    unsigned max_waiters;       /* waiters per key, default 10000 */
    uint64_t max_body_bytes;    /* upstream body, default 8MB */
    /* Bytes of answers written to no client yet (their values stay alive
     * after eviction): over either, a client with answers pending is not
     * read until they are written. */
    uint64_t max_queued_bytes;        /* all clients, default 64MB */
    uint64_t max_client_queued_bytes; /* one client, default 1MB */
    /* HTTP/2 streams one connection may have open (its
     * SETTINGS_MAX_CONCURRENT_STREAMS), default 128. */
    unsigned max_streams;
    /* A key whose fill failed waits before the next, from backoff_min
     * doubling to backoff_max (defaults 1 s and 60 s). */
    uint64_t backoff_min_ms, backoff_max_ms;
};

/* Which of an upstream answer's Cache-Control directives count (compute.c):
 * "upstream_cache_control" on a route, or on its upstream for all of its
 * routes. */
enum corral_config_cache_control {
    /* no-store, private and no-cache: the answer goes to that fill's
     * clients only and is stored nowhere; lifetimes are the route's. */
    CORRAL_CONFIG_CC_DEFAULT = 0,
    CORRAL_CONFIG_CC_IGNORE, /* none: stored as the route says */
    /* the default's, and s-maxage (else max-age), less Age, caps the
     * route's lifetime */
    CORRAL_CONFIG_CC_HONOUR,
};
/* "default", "ignore", "honour"; "unknown" otherwise. Static string. */
const char *
corral_config_cache_control_name(enum corral_config_cache_control cc);

struct corral_config_header {
    char *name;  /* an RFC 9110 token */
    char *value; /* no control characters but tab */
};

struct corral_config_upstream {
    char *name;
    bool tls;                 /* https:// */
    char *host;               /* IPv6 without brackets */
    uint16_t port;            /* default 80 or 443 */
    char *prefix;             /* "" or a path like "/v1", no trailing '/' */
    uint64_t timeout_ms;      /* bounds every fill, default 10 s */
    unsigned max_connections; /* 1..1024, default 8 */
    unsigned rate_count;      /* at most this many calls (0: no limit) */
    uint64_t rate_window_ms;  /* ... in any window this long */
    /* Percent of the rate that refreshes of keys being served keep and
     * cold misses cannot take, 0 to 90, default 25. */
    unsigned refresh_share;
    struct corral_config_header *headers;
    size_t n_headers;
    char *ca_file;                                  /* NULL: the system store */
    enum corral_config_cache_control cache_control; /* its routes' default */
    /* Failed calls in a row that open its breaker (0: none), default 5. */
    unsigned breaker_failures;
};

struct corral_config_param {
    char *name;                /* a {param}'s, no braces; a query's */
    char *pattern;             /* as configured, or the default */
    struct corral_pattern *re; /* pattern compiled */
};

struct corral_config_route;
struct corral_route_table;
struct corral_route_match;

/* An aggregate's member, resolved once, when the config loads, by the
 * table that serves requests (route.h): what a request for its path would
 * get, parameters checked and key built. */
struct corral_config_member {
    char *name; /* the member's name in the aggregate body */
    char *path; /* a request path ("/api/price/ethereum"), maybe "?q=v" */
    const struct corral_config_route *route; /* the route path matches */
    struct corral_route_match *match;        /* the request's match */
};

/* An upstream route has upstream and fetch; an aggregate has members and
 * no params, query or fetch. Templates (fetch, key) hold {param}
 * placeholders naming params of this route. */
struct corral_config_route {
    char *path;                                    /* "/api/price/{coin}" */
    const struct corral_config_upstream *upstream; /* NULL for an aggregate */
    char *fetch; /* path and query template on upstream, starts with '/' */
    struct corral_config_member *members; /* aggregate only */
    size_t n_members;
    char *key; /* template holding every {param}; NULL: derive from path.
                * Forwarded query parameters are added to either. */
    struct corral_strategy strategy;    /* ttl plus swr_ms and sie_ms */
    struct corral_config_param *params; /* every {param} of path, in order */
    size_t n_params;
    /* Client query parameters forwarded and keyed on, each value checked
     * against its pattern (the default one for the array form). */
    struct corral_config_param *query;
    size_t n_query;
    /* At most new_keys_count cold fills (keys fetched with no copy to
     * serve) in any new_keys_window_ms, for all workers; 0: no limit. */
    unsigned new_keys_count;
    uint64_t new_keys_window_ms;
    bool json; /* the body must be valid JSON to be stored, default true */
    /* Negative caching: upstream 4xx answers kept for a while, by status
     * (e.g. 404 for 1 min). n_cache_errors 0: none. */
    struct corral_config_cache_error {
        int status;      /* 400..499 */
        uint64_t ttl_ms; /* 1 s .. 1 day */
    } cache_errors[8];
    size_t n_cache_errors;
    /* Its own "upstream_cache_control", else its upstream's. */
    enum corral_config_cache_control cache_control;
};

struct corral_config {
    struct corral_config_addr listen;
    struct corral_config_admin *admin;    /* NULL: no admin listener */
    struct corral_config_tls *listen_tls; /* NULL: no TLS port */
    unsigned workers; /* reactor processes, default 1; 0 = one per core */
    char *access_log; /* path, "-" (stdout) or NULL */
    uint64_t drain_timeout_ms;   /* SIGTERM: at most this long, default 30 s */
    uint64_t l1_max_bytes;       /* default 256MB */
    struct corral_config_l2 *l2; /* NULL: L1 only */
    struct corral_config_limits limits;
    struct corral_config_upstream *upstreams;
    size_t n_upstreams;
    struct corral_config_route *routes;
    size_t n_routes;
    /* The routes' matcher (route.h), built once they load: requests and
     * aggregate members resolve through it alike. */
    struct corral_route_table *table;
};

/* Reads and validates the file at path. Returns the config (caller frees
 * with corral_config_free), or NULL with err set to the first error:
 * "FILE:LINE: key.path: reason" ("FILE: ..." when no line applies). Errors
 * quote the file's own text, never an expanded ${NAME}. */
struct corral_config *corral_config_load(const char *path, char *err,
                                         size_t errlen);

/* Like corral_config_load, for len bytes of text; name stands for the file
 * in errors. */
struct corral_config *corral_config_parse(const char *text, size_t len,
                                          const char *name, char *err,
                                          size_t errlen);

/* Do a and b listen for the admin on different addresses, or only one of
 * them at all? (A reload then needs another admin socket.) */
bool corral_config_admin_moved(const struct corral_config *a,
                               const struct corral_config *b);

/* Frees cfg and everything in it. NULL is a no-op. */
void corral_config_free(struct corral_config *cfg);

/* Expands every ${NAME} in raw from the environment into *out (caller
 * frees). Returns 0, or -EINVAL (unset variable, malformed ${...}) or
 * -ENOMEM with err naming the variable, never its value. */
int corral_config_expand(const char *raw, char **out, char *err, size_t errlen);

#endif
