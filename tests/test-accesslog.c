/* test-accesslog.c — the access log's line format, its escaping of the
 * path, its cut of long paths, buffering until a flush, and reopening a
 * rotated file. */
#include "accesslog.h"
#include "server.h"
#include "testlib.h"

#include <event2/event.h>
#include <fcntl.h>
#include <regex.h>
#include <unistd.h>

static char dir[] = "/tmp/corral-accesslog-XXXXXX";

static size_t
slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? (size_t)n : 0;
}

static struct corral_request
request(const char *path)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (struct corral_request){
        .method = CORRAL_METHOD_GET,
        .path = path,
        .path_len = strlen(path),
        .query = "secret=1",
        .query_len = 8,
        .peer = "127.0.0.1",
        .start_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000,
        .note = "hit",
        .upstream_ms = -1,
    };
}

static void
test_line(void)
{
    char path[64], err[256], buf[4096];
    snprintf(path, sizeof(path), "%s/a.log", dir);
    struct event_base *base = event_base_new();
    struct corral_access_log *l =
        corral_access_log_open(base, path, err, sizeof(err));
    CHECK(l != NULL);
    struct corral_request req = request("/api/btc");
    corral_access_log_write(&req, 200, 1024, l);
    CHECK_EQ_INT(slurp(path, buf, sizeof(buf)), 0); /* buffered */
    req = request("/a b\"\\\x01\xc3");
    req.method = CORRAL_METHOD_HEAD;
    req.note = NULL;
    req.upstream_ms = 87;
    req.proto = CORRAL_PROTO_H2C;
    corral_access_log_write(&req, 404, 0, l);
    corral_access_log_flush(l);
    CHECK(slurp(path, buf, sizeof(buf)) > 0);

    regex_t re;
    CHECK(regcomp(&re,
                  "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\."
                  "[0-9]{3}Z 127\\.0\\.0\\.1 GET /api/btc 200 1024 hit - "
                  "[0-9]+ h1\n"
                  "[0-9T:.-]+Z 127\\.0\\.0\\.1 HEAD "
                  "/a%20b%22%5C%01%C3 404 0 - 87 [0-9]+ h2c\n$",
                  REG_EXTENDED) == 0);
    if (regexec(&re, buf, 0, NULL, 0) != 0) {
        fprintf(stderr, "log:\n%s", buf);
        CHECK(0);
    }
    regfree(&re);
    CHECK(strstr(buf, "secret") == NULL); /* the query is never logged */
    corral_access_log_free(l);
    event_base_free(base);
}

/* A path of any length gives one line of bounded length. */
static void
test_long_path(void)
{
    char path[64], err[256];
    static char buf[64 * 1024], long_path[16 * 1024];
    snprintf(path, sizeof(path), "%s/b.log", dir);
    memset(long_path, '\x7f', sizeof(long_path) - 1);
    long_path[0] = '/';
    struct event_base *base = event_base_new();
    struct corral_access_log *l =
        corral_access_log_open(base, path, err, sizeof(err));
    CHECK(l != NULL);
    for (int i = 0; i < 100; i++) { /* more than the buffer holds */
        struct corral_request req = request(long_path);
        corral_access_log_write(&req, 200, 1, l);
    }
    corral_access_log_free(l); /* flushes */
    size_t n = slurp(path, buf, sizeof(buf));
    CHECK(n > 0);
    unsigned lines = 0;
    for (char *p = buf, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        CHECK(nl - p <= 1024);
        CHECK(strstr(p, " GET /%7F%7F") != NULL);
        lines++;
    }
    /* The file is read up to its first 64 KiB: a line each, all whole. */
    CHECK(lines >= 60);
    event_base_free(base);
}

/* After a rotation (rename) the reopened log writes to a new file at the
 * old path; the lines buffered before go to the old file. */
static void
test_reopen(void)
{
    char path[64], moved[64], err[256], buf[4096];
    snprintf(path, sizeof(path), "%s/c.log", dir);
    snprintf(moved, sizeof(moved), "%s/c.log.1", dir);
    struct event_base *base = event_base_new();
    struct corral_access_log *l =
        corral_access_log_open(base, path, err, sizeof(err));
    CHECK(l != NULL);
    struct corral_request req = request("/before");
    corral_access_log_write(&req, 200, 1, l);
    CHECK(rename(path, moved) == 0);
    CHECK_EQ_INT(corral_access_log_reopen(l, err, sizeof(err)), 0);
    req = request("/after");
    corral_access_log_write(&req, 200, 1, l);
    corral_access_log_free(l);
    CHECK(slurp(moved, buf, sizeof(buf)) > 0);
    CHECK(strstr(buf, " /before ") && !strstr(buf, " /after "));
    CHECK(slurp(path, buf, sizeof(buf)) > 0);
    CHECK(strstr(buf, " /after ") && !strstr(buf, " /before "));
    event_base_free(base);
}

static void
test_open_fails(void)
{
    char err[256] = "";
    struct event_base *base = event_base_new();
    CHECK(corral_access_log_open(base, "/nonexistent-dir/x.log", err,
                                 sizeof(err)) == NULL);
    CHECK(strstr(err, "access_log: cannot open /nonexistent-dir/x.log") !=
          NULL);
    event_base_free(base);
}

int
main(void)
{
    CHECK(mkdtemp(dir) != NULL);
    RUN(test_line);
    RUN(test_long_path);
    RUN(test_reopen);
    RUN(test_open_fails);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return 0;
}
