/* target.h — a request's target, the same for every framing (HTTP/1.1's
 * request line, HTTP/2's :path): split into path and query, and the path's
 * dot segments resolved, so routes see one spelling of a path. */
#ifndef CORRAL_TARGET_H
#define CORRAL_TARGET_H

#include <stdbool.h>
#include <stddef.h>

/* Splits the target u[0..len) into path and query (after '?', without a
 * fragment); origin-form, absolute-form ("http://host/p?q") and "*".
 * Anything else (a path not starting with '/', "*" with more after it) is
 * not a request target: false. Borrowed: path and query point into u. */
bool corral_target_split(const char *u, size_t len, const char **path,
                         size_t *plen, const char **query, size_t *qlen);

/* Copies the path p[0..n) (starting with '/') to out with its dot segments
 * resolved (RFC 3986 5.2.4), as nginx does before it matches a location:
 * "/a/./b", "/a/../a/b" and "/a/%2e%2e/a/b" are all "/a/b". out has room
 * for n bytes. Returns the length written, at most n, or -1 when a ".."
 * would climb above the root (nginx: 400). */
long corral_target_resolve_dots(char *out, const char *p, size_t n);

#endif
