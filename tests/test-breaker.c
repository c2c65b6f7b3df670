/* test-breaker.c — an upstream's breaker on a fake clock: it opens after
 * failures in a row (a success between resets the count), refuses calls
 * until the next probe is due, lets exactly one probe through per step
 * (the step doubling to its longest), closes on the first success;
 * neutral and untried probes, a probe that lapses, calls that were in
 * flight when it opened, what the fleet says; and the table the workers
 * share: one state per name across processes (fork), exactly one probe
 * when they race for it. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "breaker.h"
#include "testlib.h"

#define T0 1000000 /* the fake clock's start, ms */

static struct corral_breaker *
breaker(struct corral_breaker_table *t, const char *name, unsigned failures)
{
    struct corral_breaker_options o = {
        .name = name,
        .failures = failures,
        .step_min_ms = 100,
        .step_max_ms = 800,
        .hold_ms = 1000,
    };
    return corral_breaker_new(t, &o, NULL);
}

/* acquire without a fleet: never waits. Returns 0 (go, *probe), or -EBUSY
 * with *retry. */
static int
ask(struct corral_breaker *b, uint64_t now, uint64_t *probe, uint64_t *retry)
{
    struct corral_breaker_wait *w = NULL;
    uint64_t p = 0, r = 0;
    int rc = corral_breaker_acquire(b, now, NULL, NULL, &w, &p, &r);
    CHECK(rc == 0 || rc == -EBUSY);
    CHECK(w == NULL);
    if (probe)
        *probe = p;
    if (retry)
        *retry = r;
    return rc;
}

static enum corral_breaker_state
state(struct corral_breaker *b, uint64_t now)
{
    struct corral_breaker_stats st;
    corral_breaker_stats(b, now, &st);
    return st.state;
}

static void
fail(struct corral_breaker *b, int n, uint64_t now)
{
    for (int i = 0; i < n; i++)
        corral_breaker_report(b, 0, CORRAL_BREAKER_FAILURE, now);
}

static void
test_opens_after_failures_in_a_row(void)
{
    struct corral_breaker *b = breaker(NULL, "u", 3);
    uint64_t probe = 1, retry = 0;
    fail(b, 2, T0);
    /* A success (a 4xx counts) ends the run. */
    corral_breaker_report(b, 0, CORRAL_BREAKER_SUCCESS, T0);
    fail(b, 2, T0);
    /* Neither does a Retry-After answer count, nor end it. */
    corral_breaker_report(b, 0, CORRAL_BREAKER_NEUTRAL, T0);
    CHECK_EQ_INT(state(b, T0), CORRAL_BREAKER_CLOSED);
    CHECK_EQ_INT(ask(b, T0, &probe, NULL), 0);
    CHECK_EQ_INT(probe, 0);
    fail(b, 1, T0 + 10);
    CHECK_EQ_INT(state(b, T0 + 10), CORRAL_BREAKER_OPEN);
    CHECK_EQ_INT(ask(b, T0 + 40, NULL, &retry), -EBUSY);
    CHECK_EQ_INT(retry, 70); /* the first step: 100 ms from opening */
    struct corral_breaker_stats st;
    corral_breaker_stats(b, T0 + 40, &st);
    CHECK_EQ_INT(st.opened, 1);
    CHECK_EQ_INT(st.refused, 1);
    CHECK_EQ_INT(st.next_probe_ms, 70);
    CHECK_EQ_STR(corral_breaker_state_name(st.state), "open");
    corral_breaker_free(b);
}

/* One probe per step; failed probes double the step up to the longest;
 * the first success closes. */
static void
test_one_probe_per_step(void)
{
    struct corral_breaker *b = breaker(NULL, "u", 1);
    uint64_t now = T0, probe = 0, other = 0, retry = 0;
    fail(b, 1, now);
    static const uint64_t steps[] = {100, 200, 400, 800, 800};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        CHECK_EQ_INT(ask(b, now + steps[i] - 1, NULL, &retry), -EBUSY);
        CHECK_EQ_INT(retry, 1);
        now += steps[i];
        CHECK_EQ_INT(ask(b, now, &probe, NULL), 0);
        CHECK(probe != 0);
        CHECK_EQ_INT(state(b, now), CORRAL_BREAKER_HALF_OPEN);
        /* Every other call waits on the probe. */
        CHECK_EQ_INT(ask(b, now, &other, &retry), -EBUSY);
        CHECK(retry > 0 && retry <= 100);
        CHECK_EQ_INT(corral_breaker_check(b, 0, now, &retry), -EBUSY);
        CHECK_EQ_INT(corral_breaker_check(b, probe, now, &retry), 0);
        corral_breaker_report(b, probe, CORRAL_BREAKER_FAILURE, now);
        CHECK_EQ_INT(state(b, now), CORRAL_BREAKER_OPEN);
    }
    now += 800;
    CHECK_EQ_INT(ask(b, now, &probe, NULL), 0);
    corral_breaker_report(b, probe, CORRAL_BREAKER_SUCCESS, now + 5);
    CHECK_EQ_INT(state(b, now + 5), CORRAL_BREAKER_CLOSED);
    CHECK_EQ_INT(ask(b, now + 5, &probe, NULL), 0);
    CHECK_EQ_INT(probe, 0);
    CHECK_EQ_INT(corral_breaker_check(b, 0, now + 5, &retry), 0);
    struct corral_breaker_stats st;
    corral_breaker_stats(b, now, &st);
    CHECK_EQ_INT(st.opened, 1);
    CHECK_EQ_INT(st.closed, 1);
    CHECK_EQ_INT(st.probes, 6);
    /* Opened again, it starts from the shortest step. */
    fail(b, 1, now + 10);
    CHECK_EQ_INT(ask(b, now + 109, NULL, NULL), -EBUSY);
    CHECK_EQ_INT(ask(b, now + 110, &probe, NULL), 0);
    CHECK(probe != 0);
    corral_breaker_free(b);
}

/* Calls that went before it opened and fail late change nothing; one
 * that succeeds late closes it (the upstream answered). */
static void
test_calls_in_flight_when_it_opened(void)
{
    struct corral_breaker *b = breaker(NULL, "u", 2);
    uint64_t retry = 0;
    fail(b, 2, T0);
    fail(b, 5, T0 + 50);
    CHECK_EQ_INT(ask(b, T0 + 60, NULL, &retry), -EBUSY);
    CHECK_EQ_INT(retry, 40); /* still the first step */
    corral_breaker_report(b, 0, CORRAL_BREAKER_SUCCESS, T0 + 70);
    CHECK_EQ_INT(state(b, T0 + 70), CORRAL_BREAKER_CLOSED);
    corral_breaker_free(b);
}

/* A probe answered with Retry-After: the next a step later, not doubled.
 * A probe never made: the next may go at once. */
static void
test_neutral_and_untried_probes(void)
{
    struct corral_breaker *b = breaker(NULL, "u", 1);
    uint64_t probe = 0, again = 0, retry = 0;
    fail(b, 1, T0);
    CHECK_EQ_INT(ask(b, T0 + 100, &probe, NULL), 0);
    corral_breaker_report(b, probe, CORRAL_BREAKER_NEUTRAL, T0 + 110);
    CHECK_EQ_INT(ask(b, T0 + 209, NULL, &retry), -EBUSY);
    CHECK_EQ_INT(retry, 1);
    CHECK_EQ_INT(ask(b, T0 + 210, &probe, NULL), 0);
    CHECK(probe != 0);
    corral_breaker_report(b, probe, CORRAL_BREAKER_UNTRIED, T0 + 215);
    CHECK_EQ_INT(ask(b, T0 + 215, &again, NULL), 0);
    CHECK(again != 0 && again != probe);
    /* An outcome with a ticket that is no longer the state's is not a
     * probe's: the old one's untried report frees nothing. */
    corral_breaker_report(b, probe, CORRAL_BREAKER_UNTRIED, T0 + 216);
    CHECK_EQ_INT(ask(b, T0 + 216, NULL, &retry), -EBUSY);
    corral_breaker_report(b, again, CORRAL_BREAKER_FAILURE, T0 + 220);
    /* Doubled from the step the neutral probe kept. */
    CHECK_EQ_INT(ask(b, T0 + 419, NULL, NULL), -EBUSY);
    CHECK_EQ_INT(ask(b, T0 + 420, &probe, NULL), 0);
    corral_breaker_free(b);
}

/* A probe nobody reports on (its worker died) lapses after hold_ms; its
 * late failure then settles nothing. */
static void
test_lapsed_probe(void)
{
    struct corral_breaker *b = breaker(NULL, "u", 1);
    uint64_t gone = 0, probe = 0, retry = 0;
    fail(b, 1, T0);
    CHECK_EQ_INT(ask(b, T0 + 100, &gone, NULL), 0);
    CHECK_EQ_INT(ask(b, T0 + 1099, NULL, &retry), -EBUSY);
    CHECK_EQ_INT(ask(b, T0 + 1100, &probe, NULL), 0);
    CHECK(probe != 0 && probe != gone);
    corral_breaker_report(b, gone, CORRAL_BREAKER_FAILURE, T0 + 1150);
    CHECK_EQ_INT(state(b, T0 + 1150), CORRAL_BREAKER_HALF_OPEN);
    corral_breaker_report(b, probe, CORRAL_BREAKER_FAILURE, T0 + 1160);
    /* The live probe's failure doubles the step it claimed at. */
    CHECK_EQ_INT(ask(b, T0 + 1359, NULL, NULL), -EBUSY);
    CHECK_EQ_INT(ask(b, T0 + 1360, &probe, NULL), 0);
    corral_breaker_free(b);
}

/* What the fleet says: open (a closed breaker opens; a longer step is
 * taken; its own echo changes nothing), closed. */
static void
test_heard(void)
{
    struct corral_breaker *b = breaker(NULL, "u", 5);
    uint64_t probe = 0, retry = 0;
    corral_breaker_heard(b, 100, 100, T0);
    CHECK_EQ_INT(state(b, T0), CORRAL_BREAKER_OPEN);
    CHECK_EQ_INT(ask(b, T0 + 50, NULL, &retry), -EBUSY);
    CHECK_EQ_INT(retry, 50);
    corral_breaker_heard(b, 100, 100, T0 + 50); /* an echo */
    CHECK_EQ_INT(ask(b, T0 + 60, NULL, &retry), -EBUSY);
    CHECK_EQ_INT(retry, 40);
    corral_breaker_heard(b, 400, 400, T0 + 60); /* a probe elsewhere failed */
    CHECK_EQ_INT(ask(b, T0 + 100, NULL, &retry), -EBUSY);
    CHECK_EQ_INT(retry, 360);
    CHECK_EQ_INT(ask(b, T0 + 460, &probe, NULL), 0);
    CHECK(probe != 0);
    /* While this server's probe is out, its answer decides. */
    corral_breaker_heard(b, 800, 800, T0 + 470);
    CHECK_EQ_INT(state(b, T0 + 470), CORRAL_BREAKER_HALF_OPEN);
    corral_breaker_heard(b, 0, 0, T0 + 480);
    CHECK_EQ_INT(state(b, T0 + 480), CORRAL_BREAKER_CLOSED);
    /* The probe's own answer, after the fleet closed it: nothing left. */
    corral_breaker_report(b, probe, CORRAL_BREAKER_FAILURE, T0 + 490);
    CHECK_EQ_INT(state(b, T0 + 490), CORRAL_BREAKER_CLOSED);
    struct corral_breaker_stats st;
    corral_breaker_stats(b, T0, &st);
    CHECK_EQ_INT(st.opened, 1);
    CHECK_EQ_INT(st.closed, 1);
    corral_breaker_free(b);
}

static void
test_off(void)
{
    struct corral_breaker *b = breaker(NULL, "u", 0);
    uint64_t probe = 1;
    fail(b, 100, T0);
    corral_breaker_heard(b, 100, 100, T0);
    CHECK_EQ_INT(ask(b, T0, &probe, NULL), 0);
    CHECK_EQ_INT(probe, 0);
    CHECK_EQ_INT(state(b, T0), CORRAL_BREAKER_CLOSED);
    corral_breaker_free(b);
    corral_breaker_free(NULL);
    uint64_t retry;
    CHECK_EQ_INT(
        corral_breaker_acquire(NULL, T0, NULL, NULL, NULL, &probe, &retry), 0);
}

static struct corral_breaker_table *
shared_table(unsigned cap, size_t *len)
{
    *len = corral_breaker_table_size(cap);
    void *mem = mmap(NULL, *len, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    return corral_breaker_table_init(mem, cap);
}

/* The workers of a server: breakers of one name in one table are one
 * breaker, also in another process; other names are others; a name with
 * no room is alone. */
static void
test_shared_by_workers(void)
{
    size_t len;
    struct corral_breaker_table *t = shared_table(2, &len);
    struct corral_breaker *a = breaker(t, "up", 3), *b = breaker(t, "up", 3);
    struct corral_breaker *c = breaker(t, "other", 3);
    fail(a, 2, T0);
    fail(b, 1, T0);
    CHECK_EQ_INT(state(a, T0), CORRAL_BREAKER_OPEN);
    CHECK_EQ_INT(state(c, T0), CORRAL_BREAKER_CLOSED);
    struct corral_breaker_stats st;
    CHECK(corral_breaker_table_read(t, "up", T0, &st));
    CHECK_EQ_INT(st.state, CORRAL_BREAKER_OPEN);
    CHECK(!corral_breaker_table_read(t, "nope", T0, &st));
    /* The table is full: a third name has its own. */
    struct corral_breaker *d = breaker(t, "third", 1),
                          *e = breaker(t, "third", 1);
    fail(d, 1, T0);
    CHECK_EQ_INT(state(d, T0), CORRAL_BREAKER_OPEN);
    CHECK_EQ_INT(state(e, T0), CORRAL_BREAKER_CLOSED);
    char longname[300];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    struct corral_breaker *f = breaker(t, longname, 1);
    CHECK_EQ_INT(state(f, T0), CORRAL_BREAKER_CLOSED);
    /* A reload's new breaker of the name finds the state. */
    corral_breaker_free(a);
    a = breaker(t, "up", 3);
    CHECK_EQ_INT(state(a, T0), CORRAL_BREAKER_OPEN);

    /* Another process (a worker forked after the mapping) closes it. */
    fflush(stdout); /* no parent's lines printed again */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct corral_breaker *x = breaker(t, "up", 3);
        uint64_t probe = 0;
        int rc = ask(x, T0 + 100, &probe, NULL);
        if (rc == 0 && probe != 0)
            corral_breaker_report(x, probe, CORRAL_BREAKER_SUCCESS, T0 + 101);
        /* What the parent made is this copy's to free (valgrind). */
        struct corral_breaker *mine[] = {x, a, b, c, d, e, f};
        for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++)
            corral_breaker_free(mine[i]);
        _exit(rc == 0 && probe != 0 ? 0 : 1);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(state(b, T0 + 101), CORRAL_BREAKER_CLOSED);
    CHECK(corral_breaker_table_read(t, "up", T0, &st));
    CHECK_EQ_INT(st.closed, 1);
    CHECK_EQ_INT(st.probes, 1);
    /* A reload that turns it off leaves nothing open. */
    fail(b, 3, T0 + 200);
    CHECK_EQ_INT(state(a, T0 + 200), CORRAL_BREAKER_OPEN);
    struct corral_breaker *off = breaker(t, "up", 0);
    CHECK(corral_breaker_table_read(t, "up", T0 + 200, &st));
    CHECK_EQ_INT(st.state, CORRAL_BREAKER_CLOSED);
    corral_breaker_free(off);
    struct corral_breaker *all[] = {a, b, c, d, e, f};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        corral_breaker_free(all[i]);
    munmap(t, len);
}

/* Workers that race, each at once: to name the slot of a new upstream
 * (one state for all), then for the probe: exactly one gets it. */
static void
test_one_probe_among_workers(void)
{
    enum { WORKERS = 8, ROUNDS = 20 };
    size_t len;
    struct corral_breaker_table *t = shared_table(64, &len);
    for (int r = 0; r < ROUNDS; r++) {
        char name[16];
        snprintf(name, sizeof(name), "up%d", r);
        int go[2];
        CHECK(pipe(go) == 0);
        pid_t pids[WORKERS];
        for (int i = 0; i < WORKERS; i++) {
            fflush(stdout);
            pids[i] = fork();
            CHECK(pids[i] >= 0);
            if (pids[i] > 0)
                continue;
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) != 0)
                _exit(100);
            struct corral_breaker *x = breaker(t, name, 1);
            int probes = 0;
            fail(x, 1, T0);
            for (int k = 0; k < 20; k++) {
                uint64_t probe = 0;
                if (ask(x, T0 + 100, &probe, NULL) == 0 && probe != 0)
                    probes++;
            }
            corral_breaker_free(x);
            _exit(probes);
        }
        close(go[0]);
        close(go[1]); /* all start at once */
        int total = 0;
        for (int i = 0; i < WORKERS; i++) {
            int status;
            CHECK(waitpid(pids[i], &status, 0) == pids[i]);
            CHECK(WIFEXITED(status));
            total += WEXITSTATUS(status);
        }
        CHECK_EQ_INT(total, 1);
        struct corral_breaker_stats st;
        CHECK(corral_breaker_table_read(t, name, T0, &st));
        CHECK_EQ_INT(st.opened, 1);
        CHECK_EQ_INT(st.probes, 1);
        CHECK_EQ_INT(st.state, CORRAL_BREAKER_HALF_OPEN);
    }
    munmap(t, len);
}

int
main(void)
{
    RUN(test_opens_after_failures_in_a_row);
    RUN(test_one_probe_per_step);
    RUN(test_calls_in_flight_when_it_opened);
    RUN(test_neutral_and_untried_probes);
    RUN(test_lapsed_probe);
    RUN(test_heard);
    RUN(test_off);
    RUN(test_shared_by_workers);
    RUN(test_one_probe_among_workers);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
