/* pattern.h — the patterns a route's {param} values must match.
 * Patterns are PCRE2 syntax (as in nginx), matched against the whole
 * decoded value as bytes. The common shape ^[class]{m,n}$ (also with + or
 * *, and the default pattern) is matched by a 256-entry character table and a
 * length check, with no regex engine at all; anything else is compiled by
 * PCRE2 with JIT, under a limit on the compiled size and on the work one
 * match may do, so no pattern can take seconds or gigabytes. */
#ifndef CORRAL_PATTERN_H
#define CORRAL_PATTERN_H

#include <stdbool.h>
#include <stddef.h>

struct corral_pattern; /* opaque */

/* Compiles src. Returns NULL with a reason in err (when errlen > 0) for a
 * bad or too large pattern, or no memory. Free with
 * corral_pattern_free(). */
struct corral_pattern *corral_pattern_new(const char *src, char *err,
                                          size_t errlen);

/* Does s[0..len) match? A match that passes the work limit is no match. */
bool corral_pattern_match(const struct corral_pattern *p, const char *s,
                          size_t len);

/* true when p runs on the character table, not PCRE2 (for tests). */
bool corral_pattern_is_simple(const struct corral_pattern *p);

/* NULL is a no-op. */
void corral_pattern_free(struct corral_pattern *p);

#endif
