/* log.h — the error log: one line per event on standard error, with its
 * level, written with one write(2) so the lines of several workers never
 * mix. Under systemd (JOURNAL_STREAM is set) each line starts with the
 * syslog priority, "<3>" for an error, so the journal files it at that
 * level; elsewhere it reads "corral: error: ...". Nothing secret is ever
 * passed here: no token, password or upstream key. */
#ifndef CORRAL_LOG_H
#define CORRAL_LOG_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum corral_log_level {
    CORRAL_LOG_ERROR = 3,   /* something failed: a request, a reload, start */
    CORRAL_LOG_WARNING = 4, /* it works, but not as configured */
    CORRAL_LOG_NOTICE = 5,  /* worth knowing: up, down, reloads, signals */
    CORRAL_LOG_INFO = 6,
};

static inline void corral_log(enum corral_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void
corral_log(enum corral_log_level level, const char *fmt, ...)
{
    static int journal = -1;
    static const char *const names[] = {
        [CORRAL_LOG_ERROR] = "error",
        [CORRAL_LOG_WARNING] = "warning",
        [CORRAL_LOG_NOTICE] = "notice",
        [CORRAL_LOG_INFO] = "info",
    };
    char line[1024];
    int n;
    va_list ap;

    if (journal < 0)
        journal = getenv("JOURNAL_STREAM") != NULL;
    if (journal)
        n = snprintf(line, sizeof(line), "<%d>corral: ", (int)level);
    else
        n = snprintf(line, sizeof(line), "corral: %s: ", names[level]);
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

#endif
