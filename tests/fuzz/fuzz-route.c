/* fuzz-route.c — libFuzzer target: route matching, percent-decoding,
 * {param} patterns, forwarded query values, and the keys and upstream
 * paths built from them. Input: a request target ("/path?query"). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "route.h"

static const char conf[] =
    "{\"listen\": \"127.0.0.1:8080\","
    " \"upstreams\": {\"o\": {\"base\": \"http://127.0.0.1:9/v1\"}},"
    " \"routes\": ["
    "  {\"path\": \"/\", \"upstream\": \"o\", \"fetch\": \"/root\"},"
    "  {\"path\": \"/api/price/{coin}\", \"upstream\": \"o\","
    "   \"fetch\": \"/simple/price?ids={coin}&vs=usd\", \"query\": [\"vs\", "
    "\"x\"],"
    "   \"params\": {\"coin\": \"^[a-z0-9-]{1,64}$\"}},"
    "  {\"path\": \"/api/price/btc\", \"upstream\": \"o\", \"fetch\": "
    "\"/btc\"},"
    "  {\"path\": \"/k/{a}/{b}\", \"upstream\": \"o\", \"fetch\": "
    "\"/k/{b}/{a}\","
    "   \"key\": \"k:{a}:{b}\", \"params\": {\"b\": \"^(1h|4h|1d)$\"}},"
    "  {\"path\": \"/any/{v}\", \"upstream\": \"o\", \"fetch\": \"/any?v={v}\"}"
    " ]}";

static struct corral_config *cfg;
static struct corral_route_table *table;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct corral_route_match m;
    char err[256], up[8192];
    const char *path = (const char *)data, *q;
    size_t plen = size, qlen = 0;

    if (cfg == NULL) {
        cfg = corral_config_parse(conf, sizeof(conf) - 1, "fuzz.json", err,
                                  sizeof(err));
        table = cfg ? corral_route_table_new(cfg, err, sizeof(err)) : NULL;
        if (table == NULL)
            abort();
    }
    if ((q = memchr(data, '?', size)) != NULL) {
        plen = (size_t)(q - path);
        qlen = size - plen - 1;
        q++;
    } else {
        q = "";
    }
    if (corral_route_match(table, path, plen, q, qlen, &m) != CORRAL_ROUTE_OK)
        return 0;
    if (m.keylen == 0 || m.key[m.keylen] != '\0' || strlen(m.key) != m.keylen)
        abort();
    int n = corral_route_upstream_path(&m, up, sizeof(up));
    if (n >= 0 && (up[0] != '/' || strlen(up) != (size_t)n ||
                   strpbrk(up, " \r\n#") != NULL))
        abort();
    return 0;
}
