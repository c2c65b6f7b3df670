/* testlib.h — the few assertions the unit tests share.
 * A failed check prints file:line and the expression, and exits 1; the
 * summary line counts checks so a test that checked nothing is visible. */
#ifndef CORRAL_TESTLIB_H
#define CORRAL_TESTLIB_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long testlib_checks;

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

#endif
