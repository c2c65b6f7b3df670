/* encoding.c — gzip and br forms of a body, made once per fill on the
 * reactor's thread, and decoded back where identity bytes are needed.
 * The levels are measured (tests/bench-compress.c, on market JSON of 16 KB
 * and 200 KB): gzip 6 is within 2x of level 1's time and 8-12% smaller,
 * while 10-12 cost 10-40x for 3% more; brotli 5 is the best quality whose
 * time stays near gzip 6's (qualities 10 and 11, 20% smaller, cost 50-150x
 * gzip's, which a reactor cannot stall for). Compressors are made once per
 * thread and kept for its life. */
#include "encoding.h"

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <errno.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xalloc.h"

#define GZIP_LEVEL 6
#define BR_QUALITY 5
#define CE_LINE                                                                \
    24 /* "Content-Encoding: gzip\r\n": what an encoded answer                 \
        * adds */

static _Thread_local struct libdeflate_compressor *gz;
static _Thread_local struct libdeflate_decompressor *gunz;
static _Thread_local struct corral_encoding_stats stats;

/* The reactor's (the main thread's) pair goes at exit, so a leak checker
 * sees nothing outstanding (libdeflate's aligned blocks would read as
 * "possibly lost"). */
__attribute__((destructor)) static void
free_codecs(void)
{
    libdeflate_free_compressor(gz);
    libdeflate_free_decompressor(gunz);
    gz = NULL;
    gunz = NULL;
}

const char *
corral_coding_name(enum corral_coding c)
{
    switch (c) {
    case CORRAL_CODING_GZIP:
        return "gzip";
    case CORRAL_CODING_BR:
        return "br";
    default:
        return "identity";
    }
}

size_t
corral_encoding_bound(enum corral_coding c, size_t len)
{
    if (c == CORRAL_CODING_GZIP) {
        if (gz == NULL)
            gz = xcheck(libdeflate_alloc_compressor(GZIP_LEVEL));
        return libdeflate_gzip_compress_bound(gz, len);
    }
    if (c == CORRAL_CODING_BR) {
        size_t n = BrotliEncoderMaxCompressedSize(len);
        return n ? n : len + (len >> 2) + 1024; /* 0: past its table */
    }
    return 0;
}

size_t
corral_encoding_compress(enum corral_coding c, const void *in, size_t len,
                         void *out, size_t cap)
{
    if (c == CORRAL_CODING_GZIP) {
        if (gz == NULL)
            gz = xcheck(libdeflate_alloc_compressor(GZIP_LEVEL));
        return libdeflate_gzip_compress(gz, in, len, out, cap);
    }
    if (c == CORRAL_CODING_BR) {
        size_t n = cap;
        if (!BrotliEncoderCompress(BR_QUALITY, BROTLI_DEFAULT_WINDOW,
                                   BROTLI_MODE_TEXT, len, in, &n, out))
            return 0;
        return n;
    }
    return 0;
}

/* One brotli stream, exactly len bytes, and nothing after it. */
static int
br_decode(const void *in, size_t n, void *out, size_t len)
{
    BrotliDecoderState *s = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    if (s == NULL)
        xcheck(NULL);
    const uint8_t *next_in = in;
    uint8_t *next_out = out;
    size_t avail_in = n, avail_out = len;
    BrotliDecoderResult r = BrotliDecoderDecompressStream(
        s, &avail_in, &next_in, &avail_out, &next_out, NULL);
    BrotliDecoderDestroyInstance(s);
    return r == BROTLI_DECODER_RESULT_SUCCESS && avail_in == 0 && avail_out == 0
               ? 0
               : -EBADMSG;
}

int
corral_encoding_decode(enum corral_coding c, const void *in, size_t n,
                       void *out, size_t len)
{
    if (c == CORRAL_CODING_BR)
        return br_decode(in, n, out, len);
    if (c != CORRAL_CODING_GZIP)
        return -EBADMSG;
    if (gunz == NULL)
        gunz = xcheck(libdeflate_alloc_decompressor());
    size_t used = 0, got = 0;
    enum libdeflate_result r =
        libdeflate_gzip_decompress_ex(gunz, in, n, out, len, &used, &got);
    return r == LIBDEFLATE_SUCCESS && used == n && got == len ? 0 : -EBADMSG;
}

static uint64_t
thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Compresses body with c into a new buffer, kept when it comes out no
 * bigger than most (at most than - than/16 bytes). */
static bool
try_form(struct corral_encoded *e, enum corral_coding c, const char *body,
         size_t len, size_t than)
{
    size_t cap = corral_encoding_bound(c, len);
    char *buf = xmalloc(cap ? cap : 1);
    size_t n = corral_encoding_compress(c, body, len, buf, cap);
    stats.in_bytes[c] += len;
    stats.out_bytes[c] += n;
    if (n == 0 || n > than - than / 16) {
        free(buf);
        return false;
    }
    e->own[c] = buf;
    e->form[c] = (struct corral_value_form){buf, n};
    return true;
}

void
corral_encoding_make(const char *body, size_t len, struct corral_encoded *out)
{
    memset(out, 0, sizeof(*out));
    out->form[CORRAL_CODING_IDENTITY] =
        (struct corral_value_form){body != NULL ? body : "", len};
    if (len < CORRAL_ENCODING_MIN)
        return;
    uint64_t t0 = thread_cpu_us();
    if (try_form(out, CORRAL_CODING_GZIP, body, len, len - CE_LINE)) {
        try_form(out, CORRAL_CODING_BR, body, len,
                 out->form[CORRAL_CODING_GZIP].len);
        if (len >= CORRAL_ENCODING_IDENTITY_MAX)
            out->form[CORRAL_CODING_IDENTITY].bytes = NULL;
    }
    out->cpu_us = thread_cpu_us() - t0;
    stats.cpu_us += out->cpu_us;
}

void
corral_encoding_stats(struct corral_encoding_stats *out)
{
    *out = stats;
}

void
corral_encoding_finish(struct corral_encoded *e)
{
    for (int i = 0; i < CORRAL_CODINGS; i++)
        free(e->own[i]);
    memset(e, 0, sizeof(*e));
}

const char *
corral_encoding_identity(const struct corral_value *v, char **own)
{
    *own = NULL;
    const char *body = corral_value_body(v);
    if (body != NULL)
        return body;
    size_t len = corral_value_len(v);
    char *buf = xmalloc(len + 1);
    for (int c = CORRAL_CODING_GZIP; c < CORRAL_CODINGS; c++) {
        size_t n;
        const char *f = corral_value_form(v, (unsigned)c, &n);
        if (f != NULL && corral_encoding_decode(c, f, n, buf, len) == 0) {
            buf[len] = '\0';
            *own = buf;
            return buf;
        }
    }
    free(buf);
    return NULL;
}
