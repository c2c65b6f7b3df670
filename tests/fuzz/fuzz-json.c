/* fuzz-json.c — libFuzzer target: corral_json_valid against the yajl
 * calls it replaced (yajl_parse of the whole input, then
 * yajl_complete_parse, default configuration, no callbacks). Aborts when
 * the two disagree, but for the string yajl lets the input end inside
 * after a value (json.h); the input is then a case for tests/test-json.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
yajl_valid(const uint8_t *data, size_t size)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    if (h == NULL)
        abort();
    bool ok = yajl_parse(h, data, size) == yajl_status_ok &&
              yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    return ok;
}

/* yajl passes the input only because it ends inside a string after a
 * whole value, which corral refuses (json.h): closed, that string makes
 * two values, which yajl refuses. */
static bool
open_string_after_value(const uint8_t *data, size_t size)
{
    uint8_t *s = malloc(size + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '"';
    bool closed = yajl_valid(s, size + 1);
    free(s);
    return !closed;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool theirs = yajl_valid(data, size);
    bool ours = corral_json_valid((const char *)data, size);
    if (ours != theirs &&
        !(theirs && !ours && open_string_after_value(data, size))) {
        fprintf(stderr, "corral_json_valid %d, yajl %d\n", ours, theirs);
        abort();
    }
    return 0;
}
