/* corral/strategy.h — TTL strategies, durations and sizes.
 * A strategy is an enum plus a custom duration; names map both ways so logs
 * and configuration speak the same words. Durations are milliseconds. */
#ifndef CORRAL_STRATEGY_H
#define CORRAL_STRATEGY_H

#include <stddef.h>
#include <stdint.h>

enum corral_strategy_kind {
    CORRAL_STRATEGY_DEFAULT = 0, /* 5 min, when nothing is named */
    CORRAL_STRATEGY_REALTIME,    /* 30 s: prices, tickers */
    CORRAL_STRATEGY_SHORT,       /* 5 min: sentiment indexes */
    CORRAL_STRATEGY_MEDIUM,      /* 1 h: slow-moving data */
    CORRAL_STRATEGY_LONG,        /* 3 h: technical indicators */
    CORRAL_STRATEGY_CUSTOM,      /* custom_ms */
};

struct corral_strategy {
    enum corral_strategy_kind kind;
    uint64_t custom_ms; /* ttl when kind == CUSTOM */
    uint64_t swr_ms;    /* stale-while-revalidate window, 0 = none */
    uint64_t sie_ms;    /* stale-if-error window, 0 = none */
    /* 0..50: each stored value lives a random ttl between (100 - jitter_pct)
     * and 100 percent of the strategy's, so keys filled together do not
     * expire together. 0 = exactly the ttl. */
    unsigned jitter_pct;
    /* Probabilistic early refresh (XFetch, Vattani et al. 2015): a hit
     * starts a background refresh when now - fill_ms * beta * ln(rand())
     * >= expiry, fill_ms being how long the value's fill took, so a busy
     * key is refilled before it expires. 0 = never early; 1 is the
     * paper's choice. */
    double beta;
};

/* The ttl in ms a strategy stands for. */
uint64_t corral_strategy_ttl_ms(const struct corral_strategy *s);

/* "realtime", "short", ...; "custom" for CUSTOM. Static string. */
const char *corral_strategy_name(enum corral_strategy_kind kind);

/* Parses a strategy name ("realtime") or a duration ("45s") into *out
 * (stale windows untouched). Returns 0, or -EINVAL with *err set to a static
 * reason. */
int corral_strategy_parse(const char *s, struct corral_strategy *out,
                          const char **err);

/* Parses "250ms", "45s", "10m", "2h", "1d" into ms. Returns 0, or -EINVAL /
 * -ERANGE with *err set to a static reason. */
int corral_duration_parse(const char *s, uint64_t *ms, const char **err);

/* Parses "512", "64KB", "256MB", "1GB" (powers of 1024) into bytes. Returns
 * 0, or -EINVAL / -ERANGE with *err set to a static reason. */
int corral_size_parse(const char *s, uint64_t *bytes, const char **err);

#endif
