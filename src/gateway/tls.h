/* tls.h — the TLS front of the client port (listen_tls): one OpenSSL
 * server context built from a certificate and key, TLS 1.2 and newer
 * only, ALPN "h2" (preferred) and "http/1.1", no compression and no
 * renegotiation; replaced whole on reload, while connections made with
 * the old one keep it. Also the non-blocking read and gathered write that
 * server.c and h2.c use on a TLS connection in place of read(2) and
 * writev(2), with the same return conventions. OpenSSL writes to the
 * socket itself, without MSG_NOSIGNAL: the process must ignore SIGPIPE
 * (main.c does). */
#ifndef CORRAL_TLS_H
#define CORRAL_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <openssl/ssl.h>

struct corral_tls; /* opaque */

/* Returns a context serving the PEM certificate chain at cert and the PEM
 * private key at key, or NULL with the reason in err (unreadable file,
 * not PEM, key not matching the certificate). Caller frees with
 * corral_tls_free(). */
struct corral_tls *corral_tls_new(const char *cert, const char *key, char *err,
                                  size_t errlen);

/* Reads cert and key again into a new context for the connections
 * accepted from now on. Returns 0, or -1 with the reason in err and the
 * old context kept. */
int corral_tls_reload(struct corral_tls *t, const char *cert, const char *key,
                      char *err, size_t errlen);

/* Checks that cert and key load and match, as corral_tls_new() would.
 * Returns 0, or -1 with the reason in err, and which file it was in *which
 * ("cert" or "key"). */
int corral_tls_check(const char *cert, const char *key, const char **which,
                     char *err, size_t errlen);

/* A new server-side connection on the connected non-blocking socket fd,
 * its handshake not started; NULL when out of memory. Caller frees with
 * corral_tls_close() (fd stays the caller's). */
SSL *corral_tls_accept(struct corral_tls *t, int fd);

/* Drives the handshake. Returns 1 when done, 0 when it waits for the
 * socket (*want_write: for writing, else for reading), -1 when it
 * failed (garbage, a protocol or version the context refuses). */
int corral_tls_handshake(SSL *ssl, bool *want_write);

/* The protocol ALPN chose: true for "h2" (else HTTP/1.1). */
bool corral_tls_is_h2(const SSL *ssl);

/* As read(2): bytes read, 0 at the end (close_notify or EOF), -1 with
 * errno (EAGAIN: nothing to read now). */
ssize_t corral_tls_read(SSL *ssl, void *buf, size_t len);

/* As writev(2): the bytes of iov[0..n) written in order, or -1 with errno
 * (EAGAIN: the socket is full; EPIPE: the connection failed). Small
 * pieces are gathered into one record; large ones go to SSL_write as they
 * are. A call after EAGAIN must start with the same bytes. */
ssize_t corral_tls_writev(SSL *ssl, const struct iovec *iov, int n);

/* Bytes already decrypted and waiting to be read: the socket will not
 * signal them. */
bool corral_tls_pending(const SSL *ssl);

/* Sends close_notify once, if the handshake is done and the socket takes
 * it without waiting. */
void corral_tls_shutdown(SSL *ssl);

/* corral_tls_shutdown(), then frees ssl. NULL is a no-op. */
void corral_tls_close(SSL *ssl);

/* Frees t; connections still open keep their context. NULL is a no-op. */
void corral_tls_free(struct corral_tls *t);

#endif
