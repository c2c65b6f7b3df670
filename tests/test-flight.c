/* test-flight.c — single flight on its own: one call per key, waiters
 * joined to it, one result for all delivered from the loop (never inside
 * the call that queued it), the leader told apart, cancels, and teardown
 * that answers every waiter. */
#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>

#include "flight.h"
#include "siphash.h"
#include "testlib.h"

struct answer {
    int fired;
    int error;
    enum corral_source source;
    bool inside; /* fired while the test was still registering */
};

static bool registering;
static int released;

static void
answer_cb(const struct corral_result *res, void *arg)
{
    struct answer *a = arg;
    a->fired++;
    a->error = res->error;
    a->source = res->source;
    a->inside = registering;
}

static void
released_hook(struct flight_call *call)
{
    (void)call;
    released++;
}

static void
destroy_hook(void *owner)
{
    (void)owner;
}

static void
abandon_hook(struct flight_call *call)
{
    (void)call;
}

static void
open_call(struct corral_flight *fl, struct flight_call *call, const char *key)
{
    memset(call, 0, sizeof(*call));
    call->entry.key = key;
    call->entry.keylen = strlen(key);
    call->entry.hash = corral_key_hash(key, call->entry.keylen);
    corral_flight_add(fl, call);
}

static struct flight_waiter *
waiter(struct answer *a)
{
    return corral_flight_waiter_new(sizeof(struct flight_waiter), answer_cb, a);
}

static void
test_one_result_for_all(void)
{
    struct event_base *base = event_base_new();
    struct corral_flight fl;
    struct flight_call call;
    struct answer a[3] = {{0}};
    corral_flight_init(&fl, base, released_hook, destroy_hook, NULL);
    open_call(&fl, &call, "k");
    CHECK(corral_flight_find(&fl, "k", 1, call.entry.hash) == &call);
    CHECK(corral_flight_find(&fl, "j", 1, corral_key_hash("j", 1)) == NULL);
    registering = true;
    corral_flight_join(&call, waiter(&a[0]), true);
    corral_flight_join(&call, waiter(&a[1]), false);
    struct flight_waiter *gone = waiter(&a[2]);
    corral_flight_join(&call, gone, false);
    CHECK(corral_flight_cancel(&fl, gone)); /* answered -ECANCELED now */
    CHECK_EQ_INT(a[2].error, -ECANCELED);
    call.leader_says = CORRAL_SOURCE_STORED;
    call.others_say = CORRAL_SOURCE_COLLAPSED;
    call.message = "";
    corral_flight_settle(&fl, &call);
    registering = false;
    CHECK(corral_flight_find(&fl, "k", 1, call.entry.hash) ==
          NULL);                              /* closed */
    CHECK_EQ_INT(a[0].fired + a[1].fired, 0); /* not from inside */
    released = 0;
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_EQ_INT(a[0].fired, 1);
    CHECK_EQ_INT(a[1].fired, 1);
    CHECK(!a[0].inside && !a[1].inside);
    CHECK_EQ_INT(a[0].source, CORRAL_SOURCE_STORED);
    CHECK_EQ_INT(a[1].source, CORRAL_SOURCE_COLLAPSED);
    CHECK_EQ_INT(released, 1);
    CHECK_EQ_INT(fl.cancelled, 1);
    corral_flight_finish(&fl, abandon_hook);
    event_base_free(base);
}

static void
test_error_and_ready(void)
{
    struct event_base *base = event_base_new();
    struct corral_flight fl;
    struct flight_call call;
    struct answer lead = {0}, now = {0};
    corral_flight_init(&fl, base, released_hook, destroy_hook, NULL);
    open_call(&fl, &call, "e");
    corral_flight_join(&call, waiter(&lead), true);
    /* A waiter answered at once still hears from the loop. */
    registering = true;
    corral_flight_ready(&fl, waiter(&now), -ENOENT, "not found",
                        CORRAL_SOURCE_NONE, NULL);
    call.error = -EIO;
    call.message = "no";
    call.leader_says = CORRAL_SOURCE_STORED;
    corral_flight_settle(&fl, &call);
    registering = false;
    CHECK_EQ_INT(now.fired, 0);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK_EQ_INT(now.fired, 1);
    CHECK_EQ_INT(now.error, -ENOENT);
    CHECK_EQ_INT(lead.fired, 1);
    CHECK_EQ_INT(lead.error, -EIO);
    CHECK_EQ_INT(lead.source, CORRAL_SOURCE_NONE); /* an error has none */
    corral_flight_finish(&fl, abandon_hook);
    event_base_free(base);
}

static struct corral_flight *torn;

static void
abandon_answers(struct flight_call *call)
{
    corral_flight_cancel_waiters(torn, call);
}

static void
test_teardown_answers_everyone(void)
{
    struct event_base *base = event_base_new();
    struct corral_flight fl;
    struct flight_call open, settled;
    struct answer a[3] = {{0}};
    corral_flight_init(&fl, base, released_hook, destroy_hook, NULL);
    torn = &fl;
    open_call(&fl, &open, "open");
    open_call(&fl, &settled, "settled");
    corral_flight_join(&open, waiter(&a[0]), true);
    corral_flight_join(&settled, waiter(&a[1]), true);
    corral_flight_ready(&fl, waiter(&a[2]), 0, "", CORRAL_SOURCE_L1, NULL);
    settled.leader_says = CORRAL_SOURCE_STORED;
    corral_flight_settle(&fl, &settled);
    corral_flight_finish(&fl, abandon_answers);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(a[i].fired, 1);
        CHECK_EQ_INT(a[i].error, -ECANCELED);
    }
    event_base_free(base);
}

int
main(void)
{
    RUN(test_one_result_for_all);
    RUN(test_error_and_ready);
    RUN(test_teardown_answers_everyone);
    return 0;
}
