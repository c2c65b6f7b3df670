/* test-budget.c — an upstream's budget on a fake clock: the sliding
 * window (never more than count calls in any window, cold misses before
 * refreshes, FIFO within each), the share refreshes keep whatever cold
 * misses queue, waits bounded by their timeout and refused at once when
 * their slot lies beyond it, pauses, cancels, teardown with calls queued,
 * and two worker processes on one ledger. Every decision and check reads
 * the fake clock, so the figures are exact; only the budget's timers sleep
 * on the real loop (libevent has no clock to fake). */
#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include "budget.h"
#include "ledger.h"
#include "testlib.h"
#include "timeutil.h"

static struct event_base *base;
static int order; /* grants so far, to see the order */
static uint64_t fake_now = 1000000;

static uint64_t
fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static const struct corral_clock clock_ = {fake_clock, NULL};

/* Lets ms pass on both clocks, in steps of 5 ms: the fake clock moves
 * first, so a timer the budget armed for a time on it finds that time
 * come when it fires. */
static void
elapse(int ms)
{
    for (int t = 0; t < ms; t += 5) {
        fake_now += 5;
        run_for(base, 5);
    }
}

struct call {
    int fired, error, rank;
    uint64_t ms, at;
};

static void
call_cb(int error, uint64_t ms, void *arg)
{
    struct call *c = arg;
    c->fired++;
    c->error = error;
    c->ms = ms;
    c->at = fake_now;
    c->rank = ++order;
}

static int
ask(struct corral_budget *b, bool refresh, uint64_t timeout, struct call *c,
    struct corral_budget_wait **w)
{
    uint64_t retry = 0;
    struct corral_budget_wait *dummy;
    int rc = corral_budget_acquire(b, refresh, timeout, call_cb, c,
                                   w ? w : &dummy, &retry);
    if (rc == -EBUSY)
        c->ms = retry;
    CHECK_EQ_INT(c->fired, 0); /* never from inside the call */
    return rc;
}

static struct corral_budget *
budget(const char *name, unsigned count, uint64_t window_ms, unsigned share,
       struct corral_ledger *ledger)
{
    struct corral_budget_rate rate = {count, window_ms, share};
    return corral_budget_new(base, &clock_, name, &rate, NULL, ledger);
}

static void
test_window(void)
{
    /* 2 calls per 300 ms (+15 ms margin), no share kept for refreshes. */
    struct corral_budget *b = budget("u", 2, 300, 0, NULL);
    struct call c[6] = {{0}};
    uint64_t t0 = fake_now;
    order = 0;
    CHECK_EQ_INT(ask(b, false, 5000, &c[0], NULL), 0);
    CHECK_EQ_INT(ask(b, true, 5000, &c[1], NULL), 0);
    /* Full: a refresh, then two cold misses, then another refresh. */
    CHECK_EQ_INT(ask(b, true, 5000, &c[2], NULL), -EINPROGRESS);
    CHECK_EQ_INT(ask(b, false, 5000, &c[3], NULL), -EINPROGRESS);
    CHECK_EQ_INT(ask(b, false, 5000, &c[4], NULL), -EINPROGRESS);
    CHECK_EQ_INT(ask(b, true, 5000, &c[5], NULL), -EINPROGRESS);
    elapse(310);
    for (int i = 2; i < 6; i++)
        CHECK_EQ_INT(c[i].fired, 0);
    elapse(900);
    for (int i = 2; i < 6; i++) {
        CHECK_EQ_INT(c[i].fired, 1);
        CHECK_EQ_INT(c[i].error, 0);
        /* What is left of the timeout goes with a grant. */
        CHECK_EQ_INT(c[i].ms, 5000 - (c[i].at - t0));
    }
    /* The cold ones first, in order; the refreshes after, in order. */
    CHECK_EQ_INT(c[3].rank, 1);
    CHECK_EQ_INT(c[4].rank, 2);
    CHECK_EQ_INT(c[2].rank, 3);
    CHECK_EQ_INT(c[5].rank, 4);
    /* Never early, on the clock the budget reads. */
    CHECK(c[3].at - t0 >= 315 && c[4].at - t0 >= 315);
    CHECK(c[2].at - c[3].at >= 315 && c[5].at - c[4].at >= 315);
    struct corral_budget_stats st;
    corral_budget_stats(b, &st);
    CHECK_EQ_INT(st.granted, 6);
    CHECK_EQ_INT(st.waited, 4);
    CHECK_EQ_INT(st.queued, 0);
    corral_budget_free(b);
}

/* Issue 19, item 2: however many cold misses queue, refreshes of keys
 * being served get their share of the rate. */
static void
test_refresh_share_cold_flood(void)
{
    /* 4 calls per 200 ms (+10 ms margin); refreshes keep 50%: cold calls
     * fit 4 per 420 ms. */
    struct corral_budget *b = budget("u", 4, 200, 50, NULL);
    enum { COLD = 40, REFRESH = 4 };
    struct call cold[COLD] = {{0}}, refresh[REFRESH] = {{0}};
    uint64_t t0 = fake_now;
    for (int i = 0; i < COLD; i++)
        CHECK(ask(b, false, 60000, &cold[i], NULL) != -EBUSY);
    for (int i = 0; i < REFRESH; i++)
        CHECK_EQ_INT(ask(b, true, 60000, &refresh[i], NULL), -EINPROGRESS);
    elapse(700);
    /* Within about two windows every refresh went, cold ones waiting. */
    for (int i = 0; i < REFRESH; i++) {
        CHECK_EQ_INT(refresh[i].fired, 1);
        CHECK_EQ_INT(refresh[i].error, 0);
        CHECK(refresh[i].at - t0 < 650);
    }
    int cold_done = 0;
    for (int i = 0; i < COLD; i++)
        cold_done += cold[i].fired;
    CHECK(cold_done >= 4 && cold_done < COLD);
    /* Cold calls: never more than 4 in 420 ms (their own window). */
    uint64_t at[COLD];
    int n = 0;
    for (int i = 0; i < COLD; i++)
        if (cold[i].fired)
            at[n++] = cold[i].at;
    for (int i = 0; i + 4 < n; i++)
        CHECK(at[i + 4] - at[i] >= 420);
    corral_budget_free(b);
}

/* Issue 19, item 4: a call whose slot lies beyond its timeout is refused
 * at once, with the wait until that slot as its Retry-After. */
static void
test_certain_refusal_at_once(void)
{
    struct corral_budget *b = budget("u", 1, 1000, 0, NULL);
    struct call c[4] = {{0}};
    struct corral_budget_wait *w = NULL;
    CHECK_EQ_INT(ask(b, false, 5000, &c[0], NULL), 0);
    CHECK_EQ_INT(ask(b, false, 100, &c[1], NULL), -EBUSY);
    CHECK_EQ_INT(c[1].ms, 1050); /* until the slot frees */
    /* Within its timeout, a call waits; the one after it would come a
     * window later still. */
    CHECK_EQ_INT(ask(b, false, 1500, &c[2], &w), -EINPROGRESS);
    CHECK_EQ_INT(ask(b, false, 1500, &c[3], NULL), -EBUSY);
    CHECK_EQ_INT(c[3].ms, 2100);
    corral_budget_cancel(w);
    elapse(300);
    CHECK_EQ_INT(c[1].fired + c[2].fired + c[3].fired, 0);
    struct corral_budget_stats st;
    corral_budget_stats(b, &st);
    CHECK_EQ_INT(st.refused, 2);
    corral_budget_free(b);
}

/* Another worker takes the slot a queued call counted on: the call waits
 * out its timeout, then is refused; teardown refuses what is queued. */
static void
test_timeout_and_teardown(void)
{
    struct corral_ledger *l = corral_ledger_new(1);
    struct corral_budget *b = budget("u", 1, 400, 0, l);
    struct corral_budget *other = budget("u", 1, 400, 0, l);
    struct call c[3] = {{0}};
    uint64_t retry;
    CHECK_EQ_INT(ask(b, false, 5000, &c[0], NULL), 0);
    CHECK_EQ_INT(ask(b, false, 600, &c[1], NULL), -EINPROGRESS);
    /* The slot frees at 420 ms; the other worker asks first, at 430,
     * and takes it until 850. The clock then stands at 630, past the
     * call's timeout, while the loop runs until the timeout's timer. */
    fake_now += 430;
    CHECK_EQ_INT(corral_budget_try(other, false, &retry), 0);
    fake_now += 200;
    run_for(base, 700);
    CHECK_EQ_INT(c[1].fired, 1);
    CHECK_EQ_INT(c[1].error, -EBUSY);
    CHECK_EQ_INT(c[1].ms, 220);
    CHECK_EQ_INT(ask(b, false, 5000, &c[2], NULL), -EINPROGRESS);
    corral_budget_free(b);
    CHECK_EQ_INT(c[2].fired, 1);
    CHECK_EQ_INT(c[2].error, -EBUSY);
    corral_budget_free(other);
    corral_ledger_free(l);
}

static void
test_pause(void)
{
    struct corral_budget *b = budget("u", 0, 0, 25, NULL);
    struct call c[3] = {{0}};
    CHECK_EQ_INT(ask(b, false, 5000, &c[0], NULL), 0); /* no rate */
    corral_budget_pause(b, 200);
    CHECK_EQ_INT(ask(b, false, 5000, &c[1], NULL), -EBUSY);
    CHECK_EQ_INT(c[1].ms, 200);
    fake_now += 199;
    CHECK_EQ_INT(ask(b, false, 5000, &c[1], NULL), -EBUSY);
    CHECK_EQ_INT(c[1].ms, 1);
    fake_now += 1;
    CHECK_EQ_INT(ask(b, false, 5000, &c[2], NULL), 0);
    /* Calls queued behind a window are refused when a pause comes. */
    struct corral_budget *r = budget("r", 1, 1000, 25, NULL);
    struct call q[2] = {{0}};
    CHECK_EQ_INT(ask(r, false, 5000, &q[0], NULL), 0);
    CHECK_EQ_INT(ask(r, false, 5000, &q[1], NULL), -EINPROGRESS);
    corral_budget_pause(r, 3000);
    CHECK_EQ_INT(q[1].fired, 1);
    CHECK_EQ_INT(q[1].error, -EBUSY);
    CHECK_EQ_INT(q[1].ms, 3000);
    struct corral_budget_stats st;
    corral_budget_stats(r, &st);
    CHECK_EQ_INT(st.pauses, 1);
    CHECK_EQ_INT(st.refused, 1);
    corral_budget_free(r);
    corral_budget_free(b);
}

/* Issue 19, item 1: the budgets of two workers (processes) on one ledger
 * are one budget: one window, one pause. */
static void
test_workers_share_one_budget(void)
{
    struct corral_ledger *l = corral_ledger_new(1);
    int ready[2], told[2];
    CHECK(pipe(ready) == 0 && pipe(told) == 0);
    fflush(stdout); /* the child must not print the parent's lines again */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The other worker: its own loop and budget, the same ledger. */
        event_base_free(base);
        base = event_base_new();
        struct corral_budget *b = budget("u", 2, 1000, 0, l);
        struct call c = {0};
        char x = 0;
        int bad = 0;
        if (read(ready[0], &x, 1) != 1)
            _exit(2);
        /* The parent took both slots of the window, then paused. */
        bad |= ask(b, false, 50, &c, NULL) != -EBUSY;
        bad |= c.ms != 5000; /* the pause's 5 s, not the window's 1 s */
        corral_budget_free(b);
        corral_ledger_free(l); /* its own copy of the handle (valgrind) */
        event_base_free(base);
        _exit(bad ? 1 : (write(told[1], "k", 1) == 1 ? 0 : 3));
    }
    struct corral_budget *b = budget("u", 2, 1000, 0, l);
    struct call c[3] = {{0}};
    CHECK_EQ_INT(ask(b, false, 5000, &c[0], NULL), 0);
    CHECK_EQ_INT(ask(b, false, 5000, &c[1], NULL), 0);
    corral_budget_pause(b, 5000);
    CHECK(write(ready[1], "g", 1) == 1);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
    close(ready[0]);
    close(ready[1]);
    close(told[0]);
    close(told[1]);
    corral_budget_free(b);
    corral_ledger_free(l);
}

static void
test_try(void)
{
    struct corral_budget *b = budget("/r/{k}", 2, 500, 0, NULL);
    uint64_t retry = 0;
    CHECK_EQ_INT(corral_budget_try(b, false, &retry), 0);
    CHECK_EQ_INT(corral_budget_try(b, false, &retry), 0);
    CHECK_EQ_INT(corral_budget_try(b, false, &retry), -EBUSY);
    CHECK_EQ_INT(retry, 525);
    fake_now += 524;
    CHECK_EQ_INT(corral_budget_try(b, false, &retry), -EBUSY);
    CHECK_EQ_INT(retry, 1);
    fake_now += 1;
    CHECK_EQ_INT(corral_budget_try(b, false, &retry), 0);
    corral_budget_free(b);
}

int
main(void)
{
    base = event_base_new();
    RUN(test_window);
    RUN(test_refresh_share_cold_flood);
    RUN(test_certain_refusal_at_once);
    RUN(test_timeout_and_teardown);
    RUN(test_pause);
    RUN(test_workers_share_one_budget);
    RUN(test_try);
    event_base_free(base);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
