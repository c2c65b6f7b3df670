/* test-strategy.c — strategy names and ttls, duration and size parsing. */
#include <errno.h>

#include "corral/strategy.h"
#include "testlib.h"

static void
test_ttls(void)
{
    struct corral_strategy s = {0};
    static const struct {
        enum corral_strategy_kind kind;
        uint64_t ms;
        const char *name;
    } want[] = {
        {CORRAL_STRATEGY_REALTIME, 30000, "realtime"},
        {CORRAL_STRATEGY_SHORT, 300000, "short"},
        {CORRAL_STRATEGY_MEDIUM, 3600000, "medium"},
        {CORRAL_STRATEGY_LONG, 10800000, "long"},
        {CORRAL_STRATEGY_DEFAULT, 300000, "default"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        s.kind = want[i].kind;
        CHECK_EQ_INT(corral_strategy_ttl_ms(&s), want[i].ms);
        CHECK_EQ_STR(corral_strategy_name(want[i].kind), want[i].name);
        const char *err = NULL;
        struct corral_strategy p = {.kind = CORRAL_STRATEGY_CUSTOM};
        CHECK_EQ_INT(corral_strategy_parse(want[i].name, &p, &err), 0);
        CHECK_EQ_INT(p.kind, want[i].kind);
    }
    s.kind = CORRAL_STRATEGY_CUSTOM;
    s.custom_ms = 1234;
    CHECK_EQ_INT(corral_strategy_ttl_ms(&s), 1234);
    CHECK_EQ_STR(corral_strategy_name(CORRAL_STRATEGY_CUSTOM), "custom");
}

static void
test_strategy_parse(void)
{
    struct corral_strategy s = {0};
    const char *err = NULL;
    CHECK_EQ_INT(corral_strategy_parse("45s", &s, &err), 0);
    CHECK_EQ_INT(s.kind, CORRAL_STRATEGY_CUSTOM);
    CHECK_EQ_INT(corral_strategy_ttl_ms(&s), 45000);
    CHECK_EQ_INT(corral_strategy_parse("fast", &s, &err), -EINVAL);
    CHECK(strstr(err, "not a strategy") != NULL);
    CHECK_EQ_INT(corral_strategy_parse("0s", &s, &err), -EINVAL);
    CHECK(strstr(err, "longer than 0") != NULL);
}

static void
test_durations(void)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } ok[] = {
        {"250ms", 250},  {"45s", 45000},   {"10m", 600000},
        {"2h", 7200000}, {"1d", 86400000}, {"0ms", 0},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t ms = 99;
        const char *err = NULL;
        CHECK_EQ_INT(corral_duration_parse(ok[i].text, &ms, &err), 0);
        CHECK_EQ_INT(ms, ok[i].ms);
    }
    static const struct {
        const char *text;
        const char *reason;
    } bad[] = {
        {"", "must start with a number"},
        {"s", "must start with a number"},
        {"-5s", "must start with a number"},
        {"10", "missing unit"},
        {"10 s", "unknown unit"},
        {"1.5s", "unknown unit"},
        {"10sec", "unknown unit"},
        {"99999999999999999999s", "too large"},
        {"999999999999999999d", "too large"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms = 0;
        const char *err = NULL;
        CHECK(corral_duration_parse(bad[i].text, &ms, &err) < 0);
        CHECK(err != NULL && strstr(err, bad[i].reason) != NULL);
    }
}

static void
test_sizes(void)
{
    uint64_t b = 0;
    const char *err = NULL;
    CHECK_EQ_INT(corral_size_parse("64KB", &b, &err), 0);
    CHECK_EQ_INT(b, 65536);
    CHECK_EQ_INT(corral_size_parse("256MB", &b, &err), 0);
    CHECK_EQ_INT(b, 256u << 20);
    CHECK_EQ_INT(corral_size_parse("1GB", &b, &err), 0);
    CHECK_EQ_INT(b, 1u << 30);
    CHECK_EQ_INT(corral_size_parse("512", &b, &err), 0);
    CHECK_EQ_INT(b, 512);
    CHECK(corral_size_parse("12kb", &b, &err) < 0);
    CHECK(strstr(err, "unknown unit") != NULL);
    CHECK(corral_size_parse("MB", &b, &err) < 0);
}

int
main(void)
{
    RUN(test_ttls);
    RUN(test_strategy_parse);
    RUN(test_durations);
    RUN(test_sizes);
    return 0;
}
