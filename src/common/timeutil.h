/* timeutil.h — the few time conversions every module needs, in one place.
 *
 * Two clocks, on purpose:
 * - Deadlines and durations (fetch timeouts, idle and header timeouts, how
 *   long a fill took) use CLOCK_MONOTONIC: a wall clock stepped by NTP must
 *   not fire or stall them.
 * - What a cached value carries (stored-at, expires-at) is wall-clock time in
 *   ms since the epoch, taken from the loop's cached gettimeofday(): it has
 *   to mean the same thing in another process or on another machine that
 *   reads the value from the second tier, and Age and Expires are wall-clock
 *   ideas. A step of the wall clock shifts expiry by the step, as it does in
 *   nginx and Varnish. */
#ifndef CORRAL_TIMEUTIL_H
#define CORRAL_TIMEUTIL_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

static inline struct timeval
corral_ms_to_tv(uint64_t ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    return tv;
}

static inline uint64_t
corral_tv_to_ms(const struct timeval *tv)
{
    return (uint64_t)tv->tv_sec * 1000 + (uint64_t)tv->tv_usec / 1000;
}

/* Monotonic µs, for durations that must resolve below a millisecond (a
 * Redis round trip). One vDSO call, no system call. */
static inline uint64_t
corral_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Monotonic ms, for deadlines. COARSE is enough (a few ms of resolution)
 * and costs no system call. */
static inline uint64_t
corral_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A clock a module takes when it is created, so its tests can pass a
 * fake: ms from now_ms(arg). A NULL clock (or now_ms) is corral_now_ms(). */
struct corral_clock {
    uint64_t (*now_ms)(void *arg);
    void *arg;
};

static inline uint64_t
corral_clock_now(const struct corral_clock *c)
{
    return c != NULL && c->now_ms != NULL ? c->now_ms(c->arg) : corral_now_ms();
}

/* Wall-clock ms since the epoch (what values carry; see above). */
static inline uint64_t
corral_wall_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return corral_tv_to_ms(&tv);
}

#endif
