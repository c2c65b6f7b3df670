/* negotiate.h — content negotiation of codings (RFC 9110 12.5.3): a
 * request's Accept-Encoding read once, as its field lines arrive, into a
 * few bytes of q-values, and the choice among the codings a value keeps,
 * a lookup in those bytes. Neither allocates. */
#ifndef CORRAL_NEGOTIATE_H
#define CORRAL_NEGOTIATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "encoding.h"

/* What a request's Accept-Encoding says. All zero: no such field. */
struct corral_accept {
    uint16_t q[CORRAL_CODINGS]; /* per coding, 0..1000, when named */
    uint16_t star;              /* "*"'s, when named */
    uint8_t named;              /* bit c: coding c named; bit 7: "*" */
    bool present;               /* the field was sent (even empty) */
};

#define CORRAL_ACCEPT_STAR 0x80

/* Adds one Accept-Encoding field line's value (n bytes, not NUL-terminated)
 * to a: a request may split the list over several lines. Codings are
 * case-insensitive ("x-gzip" is gzip); a coding named twice keeps its
 * highest q; an element that is not a coding with an optional valid
 * "q=" weight is skipped, and so are codings corral does not keep. */
void corral_accept_add(struct corral_accept *a, const char *v, size_t n);

/* The coding to answer in, among those in available (bit c: coding c can
 * be served; identity always can): the highest q, ties going to the
 * smaller form (br, then gzip, then identity). No field: identity (what
 * clients that send none expect, though RFC 9110 lets a server pick any).
 * Identity not named and no "*": acceptable, but after any coding named
 * with a q above 0. When nothing available is acceptable (say,
 * "identity;q=0" alone), identity still: corral never answers 406 (RFC
 * 9110 12.1 lets a server disregard the field). */
enum corral_coding corral_accept_choose(const struct corral_accept *a,
                                        unsigned available);

#endif
