/* redisd.h — a real redis-server for the unit tests that need one: started
 * on a free loopback port in a temp dir, stopped (SIGSTOP/SIGCONT), killed
 * and started again on the same port, and a few helpers to talk to Redis
 * synchronously. Header-only, for tests. A test without redis-server exits
 * 77 (skipped). */
#ifndef CORRAL_TEST_REDISD_H
#define CORRAL_TEST_REDISD_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "testlib.h"

static struct event_base *base;
static uint16_t redisd_port;
static pid_t redisd_pid = -1;
static char redisd_dir[64];

static redisContext *
sync_conn(void)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redisd_port, tv);
    if (c != NULL)
        redisSetTimeout(c, tv);
    return c;
}

/* One command on a new connection; the reply, which the caller frees. */
static redisReply *
sync_cmd(const char *fmt, ...)
{
    redisContext *c = sync_conn();
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = c && !c->err ? redisvCommand(c, fmt, ap) : NULL;
    va_end(ap);
    redisFree(c);
    return r;
}

static bool
redisd_start(void)
{
    char p[8];
    snprintf(p, sizeof(p), "%u", (unsigned)redisd_port);
    redisd_pid = fork();
    if (redisd_pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", p, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
               redisd_dir, "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        redisContext *c = sync_conn();
        bool ok = c != NULL && c->err == 0;
        redisFree(c);
        if (ok)
            return true;
        usleep(50000);
    }
    return false;
}

static void
redisd_kill(void)
{
    if (redisd_pid > 0) {
        kill(redisd_pid, SIGCONT);
        kill(redisd_pid, SIGKILL);
        waitpid(redisd_pid, NULL, 0);
        redisd_pid = -1;
    }
}

static void
redisd_stop(void)
{
    kill(redisd_pid, SIGSTOP);
}

static void
redisd_cont(void)
{
    kill(redisd_pid, SIGCONT);
}

static void
redisd_cleanup(void)
{
    redisd_kill();
    rmdir(redisd_dir);
}

/* Starts Redis for the test, or exits 77 when there is none. */
static void
redisd_setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (system("redis-server --version >/dev/null 2>&1") != 0) {
        printf("# redis-server missing: skipped\n");
        exit(77);
    }
    strcpy(redisd_dir, "/tmp/corral-test-redis-XXXXXX");
    CHECK(mkdtemp(redisd_dir) != NULL);
    atexit(redisd_cleanup);
    base = event_base_new();
    redisd_port = free_port();
    CHECK(redisd_start());
}

#endif
