/* fuzz-json.c — libFuzzer target: corral_json_valid against the yajl
 * calls it replaced (yajl_parse of the whole input, then
 * yajl_complete_parse, default configuration, no callbacks). Aborts when
 * the two disagree; the input is then a case for tests/test-json.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <yajl/yajl_parse.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    if (h == NULL)
        abort();
    bool theirs = yajl_parse(h, data, size) == yajl_status_ok &&
                  yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    bool ours = corral_json_valid((const char *)data, size);
    if (ours != theirs) {
        fprintf(stderr, "corral_json_valid %d, yajl %d\n", ours, theirs);
        abort();
    }
    return 0;
}
