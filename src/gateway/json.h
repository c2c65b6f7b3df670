/* json.h — is a body JSON? The answer yajl 2.1.0 (Debian 12's) gives when
 * the body is passed whole to yajl_parse, then yajl_complete_parse, with
 * the default configuration and no callbacks: what corral asked it before.
 * A value read from L2 is checked on every read, so this is one pass over
 * the bytes with no allocation (but for nesting over 4096 deep) and no
 * callback machinery; a body yajl refused is still refused, and one it let
 * through still let through, byte string for byte string, but for one case
 * below.
 *
 * Where yajl is laxer than RFC 8259, this is too:
 *  - whitespace is tab, LF, VT, FF, CR and space: VT and FF as well.
 *  - UTF-8 in strings is checked for shape only: a lead byte C0-DF, E0-EF
 *    or F0-F7 followed by 1, 2 or 3 continuation bytes (80-BF). So overlong
 *    forms (C0 80), surrogates (ED A0 80) and leads F4 90 and up (past
 *    U+10FFFF) pass; a stray continuation byte or F8-FF does not.
 *  - \u takes any 4 hex digits: a lone surrogate ("\uD800") passes.
 *  - a number may be any length: without callbacks yajl never converts
 *    one, so 1e999999 and 100 digits pass.
 *  - nesting has no limit: yajl's state stack grows as far as the text.
 * One place it is stricter: after the one top-level value only whitespace
 * may follow. yajl also passes a value followed by a string the input
 * ends inside (1 "abc, {}"x): its lexer keeps such a token for the next
 * chunk, and yajl_complete_parse feeds it one space, which an open string
 * takes as a character. That is a body cut short or garbage, never one to
 * cache, so it fails here.
 * Raw control characters (00-1F) in strings fail, DEL (7F) passes; comments
 * fail; so do an empty or all-whitespace input and a leading zero (01 is
 * two numbers). */
#ifndef CORRAL_JSON_H
#define CORRAL_JSON_H

#include <stdbool.h>
#include <stddef.h>

/* Are s[0..len) one JSON text, as yajl sees it? false also when nesting
 * over 4096 deep needs memory and there is none. */
bool corral_json_valid(const char *s, size_t len);

#endif
