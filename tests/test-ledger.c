/* test-ledger.c — the upstreams' shared accounts on a fake clock: the
 * sliding window (exact up to CORRAL_LEDGER_RING calls, in batches
 * beyond, never more than count in any window either way), the longer
 * window of cold calls, the slot a call would get, pauses, accounts by
 * name and count, and two processes on one account. */
#include <errno.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ledger.h"
#include "testlib.h"

static const struct corral_account_rule one_window = {100, 0};

static int
take(struct corral_account *a, const struct corral_account_rule *r, bool cold,
     uint64_t now, uint64_t *wait)
{
    uint64_t dummy;
    return corral_account_take(a, r, cold, now, false, wait ? wait : &dummy);
}

/* The most of the sorted times t[0..n) in any window of w. */
static unsigned
most_in_window(const uint64_t *t, size_t n, uint64_t w)
{
    unsigned best = 0;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        while (t[j] + w <= t[i])
            j++;
        if (i - j + 1 > best)
            best = (unsigned)(i - j + 1);
    }
    return best;
}

static void
test_window(void)
{
    struct corral_ledger *l = corral_ledger_new(4);
    struct corral_account *a = corral_account_open(l, "u", 3);
    uint64_t wait = 0;
    CHECK(a != NULL);
    CHECK_EQ_INT(take(a, &one_window, false, 1000, NULL), 0);
    CHECK_EQ_INT(take(a, &one_window, false, 1010, NULL), 0);
    CHECK_EQ_INT(take(a, &one_window, true, 1020, NULL), 0);
    CHECK_EQ_INT(take(a, &one_window, false, 1030, &wait), 1);
    CHECK_EQ_INT(wait, 70); /* the call of 1000 leaves at 1100 */
    /* A dry run counts nothing. */
    CHECK_EQ_INT(corral_account_take(a, &one_window, false, 1100, true, &wait),
                 0);
    CHECK_EQ_INT(take(a, &one_window, false, 1100, NULL), 0);
    CHECK_EQ_INT(take(a, &one_window, false, 1105, &wait), 1);
    CHECK_EQ_INT(wait, 5);
    CHECK_EQ_INT(take(a, &one_window, false, 1110, NULL), 0);
    /* A clock that goes back counts the call at the latest time seen. */
    CHECK_EQ_INT(take(a, &one_window, false, 1120, NULL), 0);
    CHECK_EQ_INT(take(a, &one_window, false, 1500, NULL), 0);
    CHECK_EQ_INT(take(a, &one_window, false, 1400, NULL), 0);
    CHECK_EQ_INT(take(a, &one_window, false, 1400, NULL), 0);
    CHECK_EQ_INT(take(a, &one_window, false, 1590, &wait), 1);
    CHECK_EQ_INT(wait, 10);
    corral_account_close(a);
    corral_ledger_free(l);
}

/* Rates of more calls than the ring holds count in batches: never more
 * than count in any window, and not many fewer when calls keep coming. */
static void
test_batches(void)
{
    struct corral_ledger *l = corral_ledger_new(1);
    const unsigned count = 1000;
    struct corral_account *a = corral_account_open(l, "big", count);
    size_t cap = 60000, n = 0;
    uint64_t *t = calloc(cap, sizeof(*t));
    CHECK(t != NULL);
    /* Up to 30 calls a ms, three times the rate. */
    for (uint64_t now = 0; now < 5000 && n < cap; now++)
        for (int k = 0; k < 30 && n < cap; k++)
            if (take(a, &one_window, false, now, NULL) == 0)
                t[n++] = now;
    CHECK(most_in_window(t, n, 100) <= count);
    /* 50 windows of 100 ms: at least 95% of the rate went through. */
    CHECK(n >= 50 * count * 95 / 100);
    free(t);
    corral_account_close(a);
    corral_ledger_free(l);
}

/* Cold calls fit count in a longer window too: refreshes keep the rest. */
static void
test_cold_window(void)
{
    struct corral_ledger *l = corral_ledger_new(1);
    struct corral_account *a = corral_account_open(l, "u", 2);
    const struct corral_account_rule r = {100, 200};
    uint64_t wait = 0;
    CHECK_EQ_INT(take(a, &r, true, 0, NULL), 0);
    CHECK_EQ_INT(take(a, &r, true, 10, NULL), 0);
    CHECK_EQ_INT(take(a, &r, true, 120, &wait), 1);
    CHECK_EQ_INT(wait, 80); /* the cold call of 0 leaves the 200 ms window */
    /* Refreshes take what cold calls may not. */
    CHECK_EQ_INT(take(a, &r, false, 120, NULL), 0);
    CHECK_EQ_INT(take(a, &r, false, 125, NULL), 0);
    CHECK_EQ_INT(take(a, &r, false, 130, &wait), 1);
    CHECK_EQ_INT(wait, 90); /* every call's window: 120 leaves at 220 */
    CHECK_EQ_INT(take(a, &r, true, 200, &wait), 1);
    CHECK_EQ_INT(wait, 20);
    CHECK_EQ_INT(take(a, &r, true, 220, NULL), 0);
    /* Without a longer window for its rule, a cold call is any call. */
    CHECK_EQ_INT(take(a, &one_window, true, 330, NULL), 0);
    corral_account_close(a);
    corral_ledger_free(l);
}

static void
test_slot_at(void)
{
    struct corral_ledger *l = corral_ledger_new(1);
    struct corral_account *a = corral_account_open(l, "u", 2);
    const struct corral_account_rule r = {100, 400};
    CHECK_EQ_INT(corral_account_slot_at(a, &r, false, 1, 0), 0);
    CHECK_EQ_INT(take(a, &r, true, 0, NULL), 0);
    CHECK_EQ_INT(take(a, &r, false, 10, NULL), 0);
    CHECK_EQ_INT(corral_account_slot_at(a, &r, false, 0, 20), 100);
    CHECK_EQ_INT(corral_account_slot_at(a, &r, false, 1, 20), 110);
    /* Then the slots those calls took, a window after them. */
    CHECK_EQ_INT(corral_account_slot_at(a, &r, false, 2, 20), 200);
    CHECK_EQ_INT(corral_account_slot_at(a, &r, false, 3, 20), 210);
    CHECK_EQ_INT(corral_account_slot_at(a, &r, false, 4, 20), 300);
    /* A cold call: one cold call in the 400 ms window, room for one. */
    CHECK_EQ_INT(corral_account_slot_at(a, &r, true, 0, 20), 100);
    CHECK_EQ_INT(corral_account_slot_at(a, &r, true, 1, 20), 400);
    corral_account_pause(a, 1000);
    CHECK_EQ_INT(corral_account_slot_at(a, &r, false, 0, 20), 1000);
    corral_account_close(a);
    corral_ledger_free(l);
}

static void
test_pause(void)
{
    struct corral_ledger *l = corral_ledger_new(1);
    struct corral_account *a = corral_account_open(l, "u", 0);
    uint64_t wait = 0;
    CHECK_EQ_INT(take(a, &one_window, false, 100, NULL), 0); /* no rate */
    corral_account_pause(a, 500);
    corral_account_pause(a, 300); /* a shorter one does not cut it */
    CHECK_EQ_INT(corral_account_paused_until(a), 500);
    CHECK_EQ_INT(take(a, &one_window, false, 100, &wait), -EBUSY);
    CHECK_EQ_INT(wait, 400);
    CHECK_EQ_INT(take(a, &one_window, false, 500, NULL), 0);
    corral_account_close(a);
    corral_ledger_free(l);
}

static void
test_names(void)
{
    struct corral_ledger *l = corral_ledger_new(1); /* 256 accounts */
    struct corral_account *a = corral_account_open(l, "u", 1);
    struct corral_account *b = corral_account_open(l, "u", 1);
    uint64_t wait;
    /* One name and rate, one account: a's call fills b's window. */
    CHECK_EQ_INT(take(a, &one_window, false, 0, NULL), 0);
    CHECK_EQ_INT(take(b, &one_window, false, 0, &wait), 1);
    corral_account_pause(a, 5000);
    /* Another rate (a reload) is another window, with the pause. */
    struct corral_account *c = corral_account_open(l, "u", 2);
    CHECK_EQ_INT(corral_account_paused_until(c), 5000);
    CHECK_EQ_INT(take(c, &one_window, false, 5000, NULL), 0);
    CHECK_EQ_INT(take(c, &one_window, false, 5000, NULL), 0);
    char name[CORRAL_LEDGER_NAME_MAX + 1];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    CHECK(corral_account_open(l, name, 1) == NULL);
    CHECK(corral_account_open(NULL, "u", 1) == NULL);
    /* Full: a name nobody uses any more gives its account up. */
    struct corral_account *all[256];
    corral_account_close(c);
    for (int i = 0; i < 254; i++) {
        char n[16];
        snprintf(n, sizeof(n), "x%d", i);
        all[i] = corral_account_open(l, n, 1);
        CHECK(all[i] != NULL);
    }
    struct corral_account *e = corral_account_open(l, "one-more", 1);
    CHECK(e != NULL); /* c's: nobody used it any more */
    CHECK(corral_account_open(l, "two-more", 1) == NULL);
    corral_account_close(all[0]);
    struct corral_account *d = corral_account_open(l, "two-more", 1);
    CHECK(d != NULL);
    CHECK_EQ_INT(take(d, &one_window, false, 0, NULL), 0); /* a fresh one */
    corral_account_close(d);
    corral_account_close(e);
    for (int i = 1; i < 254; i++)
        corral_account_close(all[i]);
    corral_account_close(a);
    corral_account_close(b);
    corral_ledger_free(l);
}

/* Two processes on one account, as two workers on the real clock:
 * together never more than count in any window. */
static void
test_two_processes(void)
{
    enum { PER = 400 };
    struct shared {
        unsigned n[2];
        uint64_t t[2][PER];
    } *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    struct corral_ledger *l = corral_ledger_new(1);
    struct corral_account *a = corral_account_open(l, "u", 5);
    fflush(stdout); /* no parent's lines printed again */
    pid_t pid = fork();
    CHECK(pid >= 0);
    int me = pid == 0;
    uint64_t end = mono_ms() + 600;
    for (uint64_t now; (now = mono_ms()) < end && sh->n[me] < PER;) {
        if (take(a, &one_window, false, now, NULL) == 0)
            sh->t[me][sh->n[me]++] = now;
        usleep(100);
    }
    if (pid == 0)
        _exit(0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    uint64_t all[2 * PER];
    size_t total = 0;
    for (int p = 0; p < 2; p++)
        for (unsigned i = 0; i < sh->n[p]; i++) {
            size_t j = total++;
            for (; j > 0 && all[j - 1] > sh->t[p][i]; j--)
                all[j] = all[j - 1];
            all[j] = sh->t[p][i];
        }
    CHECK(sh->n[0] > 0 && sh->n[1] > 0);
    CHECK(total >= 25); /* 6 windows of 5 */
    /* A process may read the clock a few ms before another's later call
     * is counted: the window checked is a little shorter. */
    CHECK(most_in_window(all, total, 95) <= 5);
    munmap(sh, sizeof(*sh));
    corral_account_close(a);
    corral_ledger_free(l);
}

int
main(void)
{
    RUN(test_window);
    RUN(test_batches);
    RUN(test_cold_window);
    RUN(test_slot_at);
    RUN(test_pause);
    RUN(test_names);
    RUN(test_two_processes);
    printf("%lu checks\n", testlib_checks);
    return 0;
}
