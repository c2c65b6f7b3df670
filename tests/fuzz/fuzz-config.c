/* fuzz-config.c — libFuzzer target: the config loader (JSON, every key's
 * validation, ${ENV} expansion, route and key checks). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct corral_config *cfg;

    setenv("CORRAL_FUZZ", "value", 0);
    cfg = corral_config_parse((const char *)data, size, "fuzz.json", err,
                              sizeof(err));
    if (cfg == NULL && memchr(err, '\0', sizeof(err)) == NULL)
        abort(); /* an error message is always a string */
    corral_config_free(cfg);
    return 0;
}
