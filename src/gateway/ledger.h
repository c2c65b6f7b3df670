/* ledger.h — what the workers of a server must agree on about each
 * upstream: the calls made to it in its rate window and the pause its
 * Retry-After asked for. Accounts are kept by name in memory the workers
 * share (mapped before they are forked), so a server's rate and pause are
 * one, whatever its number of workers. Each account sits behind a robust
 * process-shared mutex: taking it is one atomic operation when no other
 * worker holds it (no system call on the path), and a worker killed while
 * holding it does not stop the others. A budget (budget.h) keeps its own
 * process's queue of waiting calls and asks its account whether one may
 * go. Times are CLOCK_MONOTONIC ms, which every process of the host
 * shares. */
#ifndef CORRAL_LEDGER_H
#define CORRAL_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of an account's name, the NUL included; longer names have none. */
#define CORRAL_LEDGER_NAME_MAX 256
/* Calls an account remembers one by one. A rate of more calls per window
 * is counted in batches of ceil(count / CORRAL_LEDGER_RING) calls, each
 * remembered by its last call's time: never more than count in any
 * window, at the price of a few calls fewer. */
#define CORRAL_LEDGER_RING 256

struct corral_ledger;  /* opaque: the shared accounts */
struct corral_account; /* opaque: this process's handle on one */

/* Accounts for n names (room for twice as many, at least 256, so reloads
 * can add some), in shared anonymous memory. NULL when mmap fails. */
struct corral_ledger *corral_ledger_new(size_t n);
/* Unmaps l: every account handle must be closed. NULL is a no-op. */
void corral_ledger_free(struct corral_ledger *l);

/* The account for name with a rate of count calls per window (0: no
 * rate, a pause only), with one more user: the one kept under that name
 * and count, else a free one, else one nobody uses any more. A new one
 * starts with an empty window and the longest pause any account of the
 * same name holds (a reload that changes the rate does not lift it).
 * NULL when there is none, or the name is too long. Caller closes. */
struct corral_account *corral_account_open(struct corral_ledger *l,
                                           const char *name, unsigned count);
/* One user less; the account keeps its calls and pause. NULL: no-op. */
void corral_account_close(struct corral_account *a);

/* How a budget counts on its account: every call must fit in window_ms,
 * and a cold one (callers waiting on a key with no copy) also in
 * cold_window_ms, which is longer (0: the same as every call's), so cold
 * calls can never take what refreshes need. */
struct corral_account_rule {
    uint64_t window_ms;
    uint64_t cold_window_ms;
};

/* May a call go at now (ms)? 0: yes, and unless dry the call is counted;
 * 1: not yet, the window frees in *wait_ms at the earliest; -EBUSY: the
 * upstream is paused for *wait_ms more. */
int corral_account_take(struct corral_account *a,
                        const struct corral_account_rule *r, bool cold,
                        uint64_t now, bool dry, uint64_t *wait_ms);
/* The earliest time (ms) a call could go with ahead calls of its kind
 * waiting before it, if nobody else asked: now, a time the window frees,
 * or the end of a pause. The call cannot go before. */
uint64_t corral_account_slot_at(struct corral_account *a,
                                const struct corral_account_rule *r, bool cold,
                                unsigned ahead, uint64_t now);
/* Pauses every call until the monotonic time until (ms), unless a longer
 * pause holds. */
void corral_account_pause(struct corral_account *a, uint64_t until);
/* When the pause ends (ms; at or before now: none). */
uint64_t corral_account_paused_until(struct corral_account *a);

#endif
