/* testlib.h — the few assertions and loop helpers the unit tests share.
 * A failed check prints file:line and the expression, and exits 1; the
 * summary line counts checks so a test that checked nothing is visible.
 * The loop helpers run a libevent loop for a bounded time, never longer. */
#ifndef CORRAL_TESTLIB_H
#define CORRAL_TESTLIB_H

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

/* Unused in the benchmarks, which share only the clock. */
static unsigned long testlib_checks __attribute__((unused));

#define CHECK(expr)                                                            \
    do {                                                                       \
        testlib_checks++;                                                      \
        if (!(expr)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #expr);                                                    \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
    do {                                                                       \
        testlib_checks++;                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (a_ != b_) {                                                        \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n",        \
                    __FILE__, __LINE__, #a, a_, #b, b_);                       \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                     \
    do {                                                                       \
        testlib_checks++;                                                      \
        const char *a_ = (a), *b_ = (b);                                       \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                 \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n",          \
                    __FILE__, __LINE__, #a, a_ ? a_ : "(null)",                \
                    b_ ? b_ : "(null)");                                       \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

#define RUN(test)                                                              \
    do {                                                                       \
        unsigned long before_ = testlib_checks;                                \
        test();                                                                \
        printf("ok %s (%lu checks)\n", #test, testlib_checks - before_);       \
    } while (0)

/* A part that cannot run here (no openssl, no IPv6): said, and remembered
 * so that the test ends as a skip, not a pass. */
static int testlib_skipped __attribute__((unused));

static inline void
skip_part(const char *why)
{
    printf("# skipped: %s\n", why);
    testlib_skipped++;
}

/* What main returns when every check passed: 77 (meson's skip) when a
 * part could not run, so a check that did not run never counts as one
 * that passed. */
static inline int
testlib_result(void)
{
    printf("%lu checks\n", testlib_checks);
    return testlib_skipped ? 77 : 0;
}

/* The monotonic clock, for deadlines and for measuring. */
static inline uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
mono_ms(void)
{
    return mono_ns() / 1000000;
}

static inline double
mono_s(void)
{
    return (double)mono_ns() / 1e9;
}

static inline void
testlib_expire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

/* A one-shot timer that sets *expired after ms: the bound of the loops
 * below, and what keeps the loop from returning at once (and spinning) when
 * nothing else is pending. */
static inline struct event *
testlib_guard(struct event_base *base, unsigned ms, bool *expired)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct event *guard = evtimer_new(base, testlib_expire, expired);
    CHECK(guard != NULL && evtimer_add(guard, &tv) == 0);
    return guard;
}

/* Runs base's loop until cond holds or ms pass; cond is tested between
 * callbacks. The caller checks cond afterwards. */
#define RUN_UNTIL(base, cond, ms)                                              \
    do {                                                                       \
        bool expired_ = false;                                                 \
        struct event *guard_ = testlib_guard((base), (ms), &expired_);         \
        while (!(cond) && !expired_)                                           \
            event_base_loop((base), EVLOOP_ONCE);                              \
        event_free(guard_);                                                    \
    } while (0)

/* Runs base's loop until cond holds, a failed check when it never does
 * (the bound is for a hang, not a measure: valgrind is slow). */
#define WAIT_FOR(base, cond)                                                   \
    do {                                                                       \
        RUN_UNTIL((base), (cond), 30000);                                      \
        CHECK(cond);                                                           \
    } while (0)

/* A loopback TCP port free now, for a server a test starts. */
static inline uint16_t
free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &sl) == 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* Runs base's loop until nothing is left to do now (active events and
 * ready callbacks; timers still pending do not count), bounded. */
static inline void
settle(struct event_base *base)
{
    for (int i = 0; i < 100; i++)
        if (event_base_loop(base, EVLOOP_NONBLOCK) == 1)
            break;
}

/* Runs base's loop for ms, whatever is pending. */
static inline void
run_for(struct event_base *base, unsigned ms)
{
    RUN_UNTIL(base, false, ms);
}

#endif
