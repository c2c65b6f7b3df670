/* strategy.c — strategy names and ttls, duration and size parsing.
 * Parsers accept exactly one unsigned integer and one unit; no spaces, no
 * fractions, no overflow. */
#include "corral/strategy.h"

#include <errno.h>
#include <string.h>

static const struct {
    const char *name;
    uint64_t ttl_ms;
} strategies[] = {
    [CORRAL_STRATEGY_DEFAULT] = {"default", 5 * 60 * 1000},
    [CORRAL_STRATEGY_REALTIME] = {"realtime", 30 * 1000},
    [CORRAL_STRATEGY_SHORT] = {"short", 5 * 60 * 1000},
    [CORRAL_STRATEGY_MEDIUM] = {"medium", 60 * 60 * 1000},
    [CORRAL_STRATEGY_LONG] = {"long", 3 * 60 * 60 * 1000},
    [CORRAL_STRATEGY_CUSTOM] = {"custom", 0},
};

uint64_t
corral_strategy_ttl_ms(const struct corral_strategy *s)
{
    if (s->kind == CORRAL_STRATEGY_CUSTOM)
        return s->custom_ms;
    if ((unsigned)s->kind > CORRAL_STRATEGY_CUSTOM)
        return strategies[CORRAL_STRATEGY_DEFAULT].ttl_ms;
    return strategies[s->kind].ttl_ms;
}

const char *
corral_strategy_name(enum corral_strategy_kind kind)
{
    if ((unsigned)kind > CORRAL_STRATEGY_CUSTOM)
        return "unknown";
    return strategies[kind].name;
}

int
corral_strategy_parse(const char *s, struct corral_strategy *out,
                      const char **err)
{
    for (unsigned i = 0; i < CORRAL_STRATEGY_CUSTOM; i++) {
        if (strcmp(s, strategies[i].name) == 0) {
            out->kind = (enum corral_strategy_kind)i;
            out->custom_ms = 0;
            return 0;
        }
    }
    uint64_t ms;
    const char *derr;
    if (corral_duration_parse(s, &ms, &derr) < 0) {
        *err = "not a strategy (realtime, short, medium, long, default) "
               "nor a duration (250ms, 45s, 10m, 2h, 1d)";
        return -EINVAL;
    }
    if (ms == 0) {
        *err = "a custom ttl must be longer than 0";
        return -EINVAL;
    }
    out->kind = CORRAL_STRATEGY_CUSTOM;
    out->custom_ms = ms;
    return 0;
}

/* Reads the leading digits of s into *n; returns the rest, or NULL. */
static const char *
parse_number(const char *s, uint64_t *n, const char **err)
{
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9') {
        *err = "must start with a number";
        return NULL;
    }
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10) {
            *err = "number too large";
            return NULL;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *n = v;
    return p;
}

struct unit {
    const char *name;
    uint64_t scale;
};

/* Parses a number followed by one of n units into *out. */
static int
parse_with_units(const char *s, const struct unit *units, size_t n,
                 uint64_t *out, const char **err, const char *unknown,
                 const char *missing)
{
    uint64_t v;
    const char *rest = parse_number(s, &v, err);
    if (rest == NULL)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rest, units[i].name) != 0)
            continue;
        if (v > UINT64_MAX / units[i].scale) {
            *err = "value too large";
            return -ERANGE;
        }
        *out = v * units[i].scale;
        return 0;
    }
    *err = *rest ? unknown : missing;
    return -EINVAL;
}

int
corral_duration_parse(const char *s, uint64_t *ms, const char **err)
{
    static const struct unit units[] = {
        {"ms", 1},
        {"s", 1000},
        {"m", 60 * 1000},
        {"h", 3600000},
        {"d", 24 * 3600000ull},
    };
    return parse_with_units(s, units, sizeof(units) / sizeof(units[0]), ms, err,
                            "unknown unit (use ms, s, m, h or d)",
                            "missing unit (use ms, s, m, h or d)");
}

int
corral_size_parse(const char *s, uint64_t *bytes, const char **err)
{
    static const struct unit units[] = {
        {"", 1}, {"B", 1}, {"KB", 1024}, {"MB", 1 << 20}, {"GB", 1ull << 30},
    };
    return parse_with_units(s, units, sizeof(units) / sizeof(units[0]), bytes,
                            err, "unknown unit (use B, KB, MB or GB)",
                            "unknown unit (use B, KB, MB or GB)");
}
