/* fake_redis.h — a scripted RESP server for the unit tests that need a
 * server to misbehave in ways a real one will not on demand (answer
 * slowly, never, or with a reply nobody asked for). It runs in a forked
 * child on a loopback port, so a blocking client in the test is served
 * too; each command gets the answer of the first rule that matches it,
 * and the child counts, in memory shared with the test, the connections
 * it accepted and the commands each rule matched. Header-only, for tests. */
#ifndef CORRAL_TEST_FAKE_REDIS_H
#define CORRAL_TEST_FAKE_REDIS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "testlib.h"

#define FAKE_REDIS_RULES 16
#define FAKE_REDIS_CONNS 32

struct fake_redis_rule {
    const char *command; /* its name, any case; "*" any; NULL ends */
    unsigned conn;       /* on the conn-th connection accepted only (from
                          * 1); 0: on any */
    unsigned nth;        /* the nth time the command comes on its
                          * connection only (from 1); 0: every time */
    const char *answer;  /* raw RESP, written as is; NULL: none, ever */
    unsigned delay_ms;   /* before the answer */
};

struct fake_redis_counts {
    unsigned conns;                     /* accepted */
    unsigned matched[FAKE_REDIS_RULES]; /* commands, per rule */
};

struct fake_redis {
    pid_t pid;
    uint16_t port;
    volatile struct fake_redis_counts *counts; /* shared with the child */
};

struct fake_redis_conn {
    int fd;
    unsigned index; /* accepted as the index-th */
    redisReader *rd;
    unsigned seen[FAKE_REDIS_RULES]; /* commands per rule on it */
};

static inline const struct fake_redis_rule *
fake_redis_match(const struct fake_redis_rule *rules, struct fake_redis_conn *c,
                 const char *name, volatile struct fake_redis_counts *counts)
{
    for (unsigned i = 0; i < FAKE_REDIS_RULES && rules[i].command; i++) {
        const struct fake_redis_rule *r = &rules[i];
        if ((strcmp(r->command, "*") != 0 &&
             strcasecmp(r->command, name) != 0) ||
            (r->conn != 0 && r->conn != c->index))
            continue;
        c->seen[i]++; /* counted per rule, for nth */
        if (r->nth != 0 && r->nth != c->seen[i])
            continue;
        counts->matched[i]++;
        return r;
    }
    return NULL;
}

/* The child's loop: never returns. */
static inline void
fake_redis_serve(int lfd, const struct fake_redis_rule *rules,
                 volatile struct fake_redis_counts *counts)
{
    struct fake_redis_conn conns[FAKE_REDIS_CONNS];
    struct pollfd pfd[FAKE_REDIS_CONNS + 1];
    size_t n = 0;
    for (;;) {
        pfd[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
        for (size_t i = 0; i < n; i++)
            pfd[i + 1] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        if (poll(pfd, n + 1, -1) < 0)
            continue;
        size_t polled = n; /* a connection accepted now has no revents */
        if ((pfd[0].revents & POLLIN) && n < FAKE_REDIS_CONNS) {
            int fd = accept(lfd, NULL, NULL);
            if (fd >= 0) {
                memset(&conns[n], 0, sizeof(conns[n]));
                conns[n].fd = fd;
                conns[n].index = ++counts->conns;
                conns[n].rd = redisReaderCreate();
                n++;
            }
        }
        for (size_t i = polled; i-- > 0;) {
            if (pfd[i + 1].revents == 0)
                continue;
            struct fake_redis_conn *c = &conns[i];
            char buf[16384];
            ssize_t got = read(c->fd, buf, sizeof(buf));
            if (got <= 0) {
                close(c->fd);
                redisReaderFree(c->rd);
                conns[i] = conns[--n];
                continue;
            }
            redisReaderFeed(c->rd, buf, (size_t)got);
            void *reply = NULL;
            while (redisReaderGetReply(c->rd, &reply) == REDIS_OK &&
                   reply != NULL) {
                redisReply *cmd = reply;
                const struct fake_redis_rule *r = NULL;
                if (cmd->type == REDIS_REPLY_ARRAY && cmd->elements > 0 &&
                    cmd->element[0]->type == REDIS_REPLY_STRING)
                    r = fake_redis_match(rules, c, cmd->element[0]->str,
                                         counts);
                freeReplyObject(cmd);
                if (r == NULL || r->answer == NULL)
                    continue;
                if (r->delay_ms)
                    usleep(r->delay_ms * 1000);
                size_t len = strlen(r->answer), off = 0;
                while (off < len) {
                    ssize_t w = write(c->fd, r->answer + off, len - off);
                    if (w <= 0)
                        break;
                    off += (size_t)w;
                }
            }
        }
    }
}

/* Starts the server on a free loopback port with rules (copied by the
 * fork; at most FAKE_REDIS_RULES). */
static inline void
fake_redis_start(struct fake_redis *f, const struct fake_redis_rule *rules)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CHECK(listen(lfd, 64) == 0);
    CHECK(getsockname(lfd, (struct sockaddr *)&sin, &sl) == 0);
    f->port = ntohs(sin.sin_port);
    void *shared =
        mmap(NULL, sizeof(struct fake_redis_counts), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared != MAP_FAILED);
    memset(shared, 0, sizeof(struct fake_redis_counts));
    f->counts = shared;
    fflush(NULL);
    f->pid = fork();
    CHECK(f->pid >= 0);
    if (f->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fake_redis_serve(lfd, rules, f->counts);
        _exit(0);
    }
    close(lfd);
}

static inline void
fake_redis_stop(struct fake_redis *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = -1;
    }
    if (f->counts != NULL)
        munmap((void *)f->counts, sizeof(struct fake_redis_counts));
    f->counts = NULL;
}

/* SENTINEL get-master-addr-by-name's answer naming 127.0.0.1:port, into
 * buf. */
static inline const char *
fake_redis_addr_answer(char *buf, size_t len, uint16_t port)
{
    char p[8];
    snprintf(p, sizeof(p), "%u", (unsigned)port);
    snprintf(buf, len, "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(p), p);
    return buf;
}

#define FAKE_REDIS_SUBSCRIBED                                                  \
    "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n"
#define FAKE_REDIS_MASTER "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"

#endif
