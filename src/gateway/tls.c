/* tls.c — the TLS front's OpenSSL context and per-connection I/O (see
 * tls.h). Connections are driven by the caller's readiness events: every
 * call here is non-blocking and maps OpenSSL's WANT_READ/WANT_WRITE to
 * EAGAIN. Partial writes and moving write buffers are on, so a gathered
 * write can be retried from a rebuilt iovec. */

#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#define GATHER_MAX 16384 /* bytes, one TLS record of plaintext */
#define DIRECT_MIN 4096  /* a piece this big is written as it is */

/* ALPN, in our order of preference. */
static const unsigned char alpn_protos[] = "\x02h2\x08http/1.1";

/* The Mozilla "intermediate" list for TLS 1.2; TLS 1.3 keeps OpenSSL's. */
static const char ciphers12[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct corral_tls {
    SSL_CTX *ctx;
};

static void
ssl_reason(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_peek_last_error();
    char why[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, why, sizeof why);
    ERR_clear_error();
    snprintf(err, errlen, "%s%s%s: %s", what, path ? " " : "", path ? path : "",
             why);
}

static int
select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
            const unsigned char *in, unsigned inlen, void *arg)
{
    unsigned char *o;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&o, outlen, alpn_protos, sizeof alpn_protos - 1,
                              in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no ALPN: HTTP/1.1 */
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

/* A context for cert and key, or NULL with err; *which names the file. */
static SSL_CTX *
ctx_new(const char *cert, const char *key, const char **which, char *err,
        size_t errlen)
{
    const char *dummy;
    if (!which)
        which = &dummy;
    *which = "cert";
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_reason(err, errlen, "cannot make a TLS context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, ciphers12) != 1) {
        ssl_reason(err, errlen, "cipher list", NULL);
        goto fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_reason(err, errlen, "cannot load the certificate", cert);
        goto fail;
    }
    *which = "key";
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_reason(err, errlen, "cannot load the private key", key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_reason(err, errlen, "the key does not match the certificate", NULL);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct corral_tls *
corral_tls_new(const char *cert, const char *key, char *err, size_t errlen)
{
    struct corral_tls *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "tls: out of memory");
        return NULL;
    }
    if ((t->ctx = ctx_new(cert, key, NULL, err, errlen)) == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

int
corral_tls_reload(struct corral_tls *t, const char *cert, const char *key,
                  char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_new(cert, key, NULL, err, errlen);
    if (!ctx)
        return -1;
    SSL_CTX_free(t->ctx); /* connections made with it hold references */
    t->ctx = ctx;
    return 0;
}

int
corral_tls_check(const char *cert, const char *key, const char **which,
                 char *err, size_t errlen)
{
    SSL_CTX *ctx = ctx_new(cert, key, which, err, errlen);
    if (!ctx)
        return -1;
    SSL_CTX_free(ctx);
    return 0;
}

SSL *
corral_tls_accept(struct corral_tls *t, int fd)
{
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

int
corral_tls_handshake(SSL *ssl, bool *want_write)
{
    ERR_clear_error(); /* SSL_get_error() reads the thread's queue */
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
        *want_write = false;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *want_write = true;
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

bool
corral_tls_is_h2(const SSL *ssl)
{
    const unsigned char *p;
    unsigned len;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == 2 && memcmp(p, "h2", 2) == 0;
}

/* Maps a failed SSL call to errno; returns -1, or 0 for a clean end. */
static int
fail_errno(SSL *ssl, int r)
{
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (errno == 0 || errno == EAGAIN)
            return 0; /* EOF without close_notify */
        return -1;
    default:
        ERR_clear_error();
        errno = EPIPE;
        return -1;
    }
}

ssize_t
corral_tls_read(SSL *ssl, void *buf, size_t len)
{
    if (len > INT32_MAX)
        len = INT32_MAX;
    errno = 0;
    ERR_clear_error();
    int r = SSL_read(ssl, buf, (int)len);
    if (r > 0)
        return r;
    return fail_errno(ssl, r);
}

/* Writes len bytes from p; returns how many, or -1 with errno. */
static ssize_t
write_all(SSL *ssl, const char *p, size_t len)
{
    size_t done = 0;
    while (done < len) {
        size_t k = len - done;
        errno = 0;
        ERR_clear_error();
        int r = SSL_write(ssl, p + done, k > INT32_MAX ? INT32_MAX : (int)k);
        if (r <= 0) {
            if (done)
                return (ssize_t)done;
            if (fail_errno(ssl, r) == 0)
                errno = EPIPE;
            return -1;
        }
        done += (size_t)r;
    }
    return (ssize_t)done;
}

ssize_t
corral_tls_writev(SSL *ssl, const struct iovec *iov, int n)
{
    static char gather[GATHER_MAX]; /* one loop per process: no races */
    size_t total = 0;
    int i = 0;
    while (i < n) {
        const char *p;
        size_t len;
        if (iov[i].iov_len >= DIRECT_MIN) {
            p = iov[i].iov_base;
            len = iov[i].iov_len;
            i++;
        } else {
            len = 0;
            while (i < n && iov[i].iov_len < DIRECT_MIN &&
                   len + iov[i].iov_len <= sizeof gather) {
                memcpy(gather + len, iov[i].iov_base, iov[i].iov_len);
                len += iov[i].iov_len;
                i++;
            }
            p = gather;
        }
        if (!len)
            continue;
        ssize_t w = write_all(ssl, p, len);
        if (w < 0)
            return total ? (ssize_t)total : -1;
        total += (size_t)w;
        if ((size_t)w < len)
            break;
    }
    return (ssize_t)total;
}

bool
corral_tls_pending(const SSL *ssl)
{
    return SSL_pending(ssl) > 0;
}

void
corral_tls_shutdown(SSL *ssl)
{
    /* Not during a handshake, nor after a fatal error (then back in
     * init): OpenSSL refuses, or would send garbage. */
    if (SSL_is_init_finished(ssl) &&
        !(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
        SSL_shutdown(ssl); /* one try: close_notify if the socket takes it */
    ERR_clear_error();
}

void
corral_tls_close(SSL *ssl)
{
    if (!ssl)
        return;
    corral_tls_shutdown(ssl);
    SSL_free(ssl);
}

void
corral_tls_free(struct corral_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}
