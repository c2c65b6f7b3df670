/* fuzz-accept.c — libFuzzer target: Accept-Encoding read into q-values
 * and the coding chosen. Input: field values separated by NUL bytes (a
 * request's several field lines); the first byte picks the codings kept.
 * Every choice must be a coding kept, or identity. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "negotiate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned available = data[0] & 7u;
    struct corral_accept a = {0};
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    while (p <= end) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        const char *e = nul ? nul : end;
        /* A copy of exactly the line: a read past it is caught. */
        char *line = malloc((size_t)(e - p) + 1);
        memcpy(line, p, (size_t)(e - p));
        corral_accept_add(&a, line, (size_t)(e - p));
        free(line);
        p = e + 1;
    }
    for (int c = 0; c < CORRAL_CODINGS; c++)
        if (a.q[c] > 1000)
            abort();
    if (a.star > 1000)
        abort();
    enum corral_coding got = corral_accept_choose(&a, available);
    if (got != CORRAL_CODING_IDENTITY && !(available & 1u << got))
        abort();
    return 0;
}
