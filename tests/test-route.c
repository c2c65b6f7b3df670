/* test-route.c — route matching, parameter checks, keys and upstream
 * paths, from a config parsed the way the gateway parses it. */
#include "config.h"
#include "route.h"
#include "testlib.h"

static const char conf[] =
    "{ \"listen\": \"127.0.0.1:1\",\n"
    "  \"upstreams\": { \"up\": { \"base\": \"http://127.0.0.1:9/v1\" } },\n"
    "  \"routes\": [\n"
    "    { \"path\": \"/api/btc\", \"upstream\": \"up\",\n"
    "      \"fetch\": \"/simple/price?ids=bitcoin\", \"key\": \"btc_30s\" },\n"
    "    { \"path\": \"/api/price/{coin}\", \"upstream\": \"up\",\n"
    "      \"fetch\": \"/simple/price?ids={coin}&vs=usd\" },\n"
    "    { \"path\": \"/api/price/special\", \"upstream\": \"up\",\n"
    "      \"fetch\": \"/special\" },\n"
    "    { \"path\": \"/api/strict/{id}\", \"upstream\": \"up\",\n"
    "      \"fetch\": \"/s/{id}\", \"params\": { \"id\": \"^[0-9]{1,4}$\" } "
    "},\n"
    "    { \"path\": \"/api/global\", \"upstream\": \"up\",\n"
    "      \"fetch\": \"/global\",\n"
    "      \"query\": { \"currency\": \"^.{1,64}$\", \"x\": \"^.{1,64}$\" } "
    "},\n"
    "    { \"path\": \"/p/q/c\", \"upstream\": \"up\", \"fetch\": \"/c\" },\n"
    "    { \"path\": \"/p/{y}/d\", \"upstream\": \"up\", \"fetch\": \"/d\" },\n"
    "    { \"path\": \"/k/{a}/{b}\", \"upstream\": \"up\",\n"
    "      \"fetch\": \"/k/{a}/{b}\", \"key\": \"k_{a}_{b}\" },\n"
    "    { \"path\": \"/api/fx\", \"upstream\": \"up\", \"fetch\": \"/fx\",\n"
    "      \"query\": [\"currency\"] },\n"
    "    { \"path\": \"/api/cur\", \"upstream\": \"up\", \"fetch\": \"/cur\",\n"
    "      \"query\": { \"currency\": \"^[a-z]{3}$\" } }\n"
    "  ] }\n";

static struct corral_config *cfg;
static struct corral_route_table *table;

static int
match(const char *path, const char *query, struct corral_route_match *m)
{
    return corral_route_match(table, path, strlen(path), query, strlen(query),
                              m);
}

static void
test_literals_and_params(void)
{
    struct corral_route_match m;
    CHECK_EQ_INT(match("/api/btc", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "btc_30s");
    CHECK_EQ_INT(m.index, 0);
    char up[512];
    CHECK(corral_route_upstream_path(&m, up, sizeof(up)) > 0);
    CHECK_EQ_STR(up, "/v1/simple/price?ids=bitcoin");

    CHECK_EQ_INT(match("/api/price/ethereum", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_INT(m.index, 1);
    CHECK_EQ_STR(m.key, "/api/price/ethereum");
    CHECK(corral_route_upstream_path(&m, up, sizeof(up)) > 0);
    CHECK_EQ_STR(up, "/v1/simple/price?ids=ethereum&vs=usd");

    /* A literal beats a parameter. */
    CHECK_EQ_INT(match("/api/price/special", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_INT(m.index, 2);

    CHECK_EQ_INT(match("/api/nope", "", &m), CORRAL_ROUTE_NOT_FOUND);
    CHECK_EQ_INT(match("/api/btc/extra", "", &m), CORRAL_ROUTE_NOT_FOUND);
    CHECK_EQ_INT(match("/api/price/", "", &m), CORRAL_ROUTE_NOT_FOUND);
    CHECK_EQ_INT(match("/", "", &m), CORRAL_ROUTE_NOT_FOUND);
    CHECK_EQ_INT(match("api/btc", "", &m), CORRAL_ROUTE_NOT_FOUND);
}

static void
test_bad_params(void)
{
    struct corral_route_match m;
    static const char *bad[] = {
        "/api/price/..%2Fadmin", "/api/price/a%20b",  "/api/price/a%00b",
        "/api/price/%zz",        "/api/price/%4",     "/api/price/a b",
        "/api/price/..",         "/api/strict/12345", "/api/strict/abc",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = match(bad[i], "", &m);
        if (rc != CORRAL_ROUTE_BAD_PARAM)
            fprintf(stderr, "%s: %d\n", bad[i], rc);
        CHECK_EQ_INT(rc, CORRAL_ROUTE_BAD_PARAM);
        CHECK(m.bad_param != NULL);
    }
    char longp[300] = "/api/price/";
    memset(longp + strlen(longp), 'a', 129);
    CHECK_EQ_INT(match(longp, "", &m), CORRAL_ROUTE_BAD_PARAM);
    /* Encoded but allowed characters decode and are encoded again. */
    CHECK_EQ_INT(match("/api/price/b%69tcoin", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/price/bitcoin");
    CHECK_EQ_INT(match("/api/strict/42", "", &m), CORRAL_ROUTE_OK);
}

static void
test_query(void)
{
    struct corral_route_match m;
    char up[512];
    /* Not forwarded: ignored, not in the key. */
    CHECK_EQ_INT(match("/api/price/btc", "cachebust=123", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/price/btc");
    /* Forwarded: in the route's order, encoded, others dropped. */
    CHECK_EQ_INT(match("/api/global", "junk=1&x=a+b&currency=eur", &m),
                 CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/global?currency=eur&x=a%20b");
    CHECK(corral_route_upstream_path(&m, up, sizeof(up)) > 0);
    CHECK_EQ_STR(up, "/v1/global?currency=eur&x=a%20b");
    CHECK_EQ_INT(match("/api/global", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/global");
    /* An injection attempt stays inside its value. */
    CHECK_EQ_INT(match("/api/global", "currency=eur%26admin%3D1", &m),
                 CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/global?currency=eur%26admin%3D1");
    CHECK_EQ_INT(match("/api/global", "currency=%00", &m),
                 CORRAL_ROUTE_BAD_QUERY);
    CHECK_EQ_STR(m.bad_param, "currency");
    CHECK_EQ_INT(match("/api/global", "currency=%zz", &m),
                 CORRAL_ROUTE_BAD_QUERY);
    /* An encoded '/' is just a character in a query value. */
    CHECK_EQ_INT(match("/api/global", "currency=BTC%2FUSDT", &m),
                 CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/global?currency=BTC%2FUSDT");
    CHECK_EQ_INT(match("/api/global", "currency=BTC/USDT", &m),
                 CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/global?currency=BTC%2FUSDT");
}

/* Issue 19, item 2: a forwarded query value is checked against its
 * pattern, as a path parameter is: 400, no upstream call. */
static void
test_query_patterns(void)
{
    struct corral_route_match m;
    CHECK_EQ_INT(match("/api/cur", "currency=usd", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/cur?currency=usd");
    CHECK_EQ_INT(match("/api/cur", "currency=usdx", &m),
                 CORRAL_ROUTE_BAD_QUERY);
    CHECK_EQ_STR(m.bad_param, "currency");
    CHECK_EQ_INT(match("/api/cur", "currency=USD", &m), CORRAL_ROUTE_BAD_QUERY);
    CHECK_EQ_INT(match("/api/cur", "currency=", &m), CORRAL_ROUTE_BAD_QUERY);
    /* Decoded first: %75sd is usd. */
    CHECK_EQ_INT(match("/api/cur", "currency=%75sd", &m), CORRAL_ROUTE_OK);
    /* Absent: nothing forwarded, nothing checked. */
    CHECK_EQ_INT(match("/api/cur", "other=zzzz", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_STR(m.key, "/api/cur");
    /* The array form: the default pattern of a path parameter. */
    CHECK_EQ_INT(match("/api/fx", "currency=eur.x_1~-", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_INT(match("/api/fx", "currency=a+b", &m), CORRAL_ROUTE_BAD_QUERY);
    CHECK_EQ_INT(match("/api/fx", "currency=BTC%2FUSDT", &m),
                 CORRAL_ROUTE_BAD_QUERY);
    char big[200] = "currency=";
    memset(big + 9, 'a', 129);
    CHECK_EQ_INT(match("/api/fx", big, &m), CORRAL_ROUTE_BAD_QUERY);
}

static void
test_decoded_literals(void)
{
    struct corral_route_match m;
    /* Regression: "/api/price/%73pecial" is "/api/price/special", the
     * literal route, not the {coin} route filling that route's key. */
    CHECK_EQ_INT(match("/api/price/%73pecial", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_INT(m.index, 2);
    CHECK_EQ_INT(match("/api/%62tc", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_INT(m.index, 0);
    CHECK_EQ_INT(match("/api/price/%7", "", &m), CORRAL_ROUTE_BAD_PARAM);
}

static void
test_backtracking(void)
{
    struct corral_route_match m;
    CHECK_EQ_INT(match("/p/q/c", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_INT(m.index, 5);
    /* The literal "q" leads nowhere for "d": the {y} route takes it. */
    CHECK_EQ_INT(match("/p/q/d", "", &m), CORRAL_ROUTE_OK);
    CHECK_EQ_INT(m.index, 6);
    CHECK_EQ_STR(m.values[0], "q");
    CHECK_EQ_INT(match("/p/z/c", "", &m), CORRAL_ROUTE_NOT_FOUND);
}

static void
test_configured_key_is_unambiguous(void)
{
    struct corral_route_match m;
    char one[CORRAL_ROUTE_KEY_MAX];
    /* Regression: "k_{a}_{b}" must not make x_y/z and x/y_z one key. */
    CHECK_EQ_INT(match("/k/x_y/z", "", &m), CORRAL_ROUTE_OK);
    snprintf(one, sizeof(one), "%s", m.key);
    CHECK_EQ_INT(match("/k/x/y_z", "", &m), CORRAL_ROUTE_OK);
    CHECK(strcmp(one, m.key) != 0);
    CHECK_EQ_STR(one, "k_x%5Fy_z");
    char up[128];
    CHECK(corral_route_upstream_path(&m, up, sizeof(up)) > 0);
    CHECK_EQ_STR(up, "/v1/k/x/y_z");
}

int
main(void)
{
    char err[512];
    cfg = corral_config_parse(conf, sizeof(conf) - 1, "test.json", err,
                              sizeof(err));
    if (cfg == NULL)
        fprintf(stderr, "%s\n", err);
    CHECK(cfg != NULL);
    table = corral_route_table_new(cfg, err, sizeof(err));
    CHECK(table != NULL);
    RUN(test_literals_and_params);
    RUN(test_bad_params);
    RUN(test_query);
    RUN(test_query_patterns);
    RUN(test_decoded_literals);
    RUN(test_backtracking);
    RUN(test_configured_key_is_unambiguous);
    corral_route_table_free(table);
    corral_config_free(cfg);
    return 0;
}
