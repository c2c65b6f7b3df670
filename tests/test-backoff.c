/* test-backoff.c — the per-key failure memory on a fake clock: waits that
 * double with jitter up to the cap, a retry-after floor, -EBUSY that sets
 * only the floor, forgetting (and starting over), keeping a key through a
 * long try, the sweep and the cap on keys. */
#include <errno.h>
#include <stdbool.h>

#include "backoff.h"
#include "siphash.h"
#include "testlib.h"

static uint64_t
note(struct corral_backoff *bo, const char *key, uint64_t now, int error,
     uint64_t retry_after_ms, uint64_t draw)
{
    return corral_backoff_note(bo, key, strlen(key),
                               corral_key_hash(key, strlen(key)), now, error,
                               "no", retry_after_ms, draw);
}

static struct corral_backoff_key *
find(struct corral_backoff *bo, const char *key, uint64_t now)
{
    return corral_backoff_find(bo, key, strlen(key),
                               corral_key_hash(key, strlen(key)), now);
}

static void
test_doubles_to_the_cap(void)
{
    struct corral_backoff bo;
    corral_backoff_init(&bo, 1000, 8000, 16);
    uint64_t now = 1000000;
    /* draw 0: the full step; the steps double and stop at max_ms. */
    static const uint64_t steps[] = {1000, 2000, 4000, 8000, 8000};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        CHECK_EQ_INT(note(&bo, "k", now, -EIO, 0, 0), steps[i]);
        struct corral_backoff_key *b = find(&bo, "k", now);
        CHECK(b != NULL);
        CHECK_EQ_INT(b->until, now + steps[i]);
        CHECK_EQ_INT(b->error, -EIO);
        CHECK_EQ_STR(b->message, "no");
        now += steps[i]; /* fails again as soon as it may try */
    }
    corral_backoff_finish(&bo);
}

static void
test_jitter_within_a_quarter(void)
{
    struct corral_backoff bo;
    corral_backoff_init(&bo, 1000, 60000, 16);
    for (uint64_t draw = 0; draw < 600; draw += 37) {
        uint64_t wait = note(&bo, "j", 0, -EIO, 0, draw);
        CHECK(wait <= 1000 && wait >= 750);
        corral_backoff_clear(&bo, "j", 1, corral_key_hash("j", 1));
    }
    corral_backoff_finish(&bo);
}

static void
test_retry_after_and_busy(void)
{
    struct corral_backoff bo;
    corral_backoff_init(&bo, 1000, 60000, 16);
    /* The source's word is a floor. */
    CHECK_EQ_INT(note(&bo, "r", 0, -EIO, 5000, 0), 5000);
    /* -EBUSY: only the floor, and the step does not grow. */
    CHECK_EQ_INT(note(&bo, "b", 0, -EBUSY, 300, 0), 300);
    CHECK_EQ_INT(find(&bo, "b", 0)->step_ms, 0);
    CHECK_EQ_INT(note(&bo, "b", 0, -EBUSY, 0, 0), 0);
    corral_backoff_finish(&bo);
}

static void
test_forgets_and_starts_over(void)
{
    struct corral_backoff bo;
    corral_backoff_init(&bo, 1000, 60000, 16);
    CHECK_EQ_INT(note(&bo, "f", 0, -EIO, 0, 0), 1000);
    struct corral_backoff_key *b = find(&bo, "f", 0);
    CHECK_EQ_INT(b->forget_at, 1000 + 2 * 1000);
    CHECK(find(&bo, "f", 2999) != NULL);
    CHECK(find(&bo, "f", 3000) == NULL); /* dropped on the spot */
    CHECK_EQ_INT(note(&bo, "f", 3000, -EIO, 0, 0), 1000);
    /* A long try keeps it, so its failure doubles the step. */
    b = find(&bo, "f", 4000);
    corral_backoff_keep(&bo, b, 20000);
    CHECK_EQ_INT(b->forget_at, 20000 + 2 * 1000);
    CHECK_EQ_INT(note(&bo, "g", 19000, -EIO, 0, 0), 1000);
    CHECK_EQ_INT(note(&bo, "f", 19000, -EIO, 0, 0), 2000);
    /* The sweep drops only what is past its time, oldest first. */
    corral_backoff_sweep(&bo, 22000);
    CHECK(find(&bo, "g", 0) == NULL);
    CHECK(find(&bo, "f", 0) != NULL);
    CHECK_EQ_INT(bo.table.n, 1);
    corral_backoff_finish(&bo);
}

static void
test_cap_drops_the_oldest(void)
{
    struct corral_backoff bo;
    corral_backoff_init(&bo, 1000, 60000, 3);
    note(&bo, "a", 0, -EIO, 0, 0);
    note(&bo, "b", 0, -EIO, 0, 0);
    note(&bo, "c", 0, -EIO, 0, 0);
    note(&bo, "a", 1, -EIO, 0, 0); /* a failed again: now the newest */
    note(&bo, "d", 2, -EIO, 0, 0);
    CHECK_EQ_INT(bo.table.n, 3);
    CHECK(find(&bo, "b", 2) == NULL);
    CHECK(find(&bo, "a", 2) != NULL);
    CHECK(find(&bo, "c", 2) != NULL);
    CHECK(find(&bo, "d", 2) != NULL);
    corral_backoff_finish(&bo);
}

int
main(void)
{
    RUN(test_doubles_to_the_cap);
    RUN(test_jitter_within_a_quarter);
    RUN(test_retry_after_and_busy);
    RUN(test_forgets_and_starts_over);
    RUN(test_cap_drops_the_oldest);
    return 0;
}
