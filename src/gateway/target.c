/* target.c — a request's target: split, and its dot segments resolved
 * (see target.h). Pure functions over borrowed bytes. */
#include "target.h"

#include <string.h>

bool
corral_target_split(const char *u, size_t len, const char **path, size_t *plen,
                    const char **query, size_t *qlen)
{
    const char *end = u + len;
    if (len && u[0] != '/' && u[0] != '*') {
        for (const char *q = u; q + 3 <= end; q++) {
            if (q[0] == ':' && q[1] == '/' && q[2] == '/') {
                const char *slash = memchr(q + 3, '/', (size_t)(end - q - 3));
                u = slash ? slash : end;
                break;
            }
        }
    }
    const char *hash = memchr(u, '#', (size_t)(end - u));
    if (hash)
        end = hash;
    const char *q = memchr(u, '?', (size_t)(end - u));
    *path = u;
    *plen = (size_t)((q ? q : end) - u);
    *query = q ? q + 1 : end;
    *qlen = q ? (size_t)(end - q - 1) : 0;
    return *plen == 0 || u[0] == '/' || (*plen == 1 && u[0] == '*' && !q);
}

/* 1 for a "." segment, 2 for "..", else 0; "%2e" counts as a dot. */
static int
dot_segment(const char *s, size_t n)
{
    int dots = 0;
    for (size_t i = 0; i < n; dots++) {
        if (dots == 2)
            return 0;
        if (s[i] == '.')
            i++;
        else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' &&
                 (s[i + 2] == 'e' || s[i + 2] == 'E'))
            i += 3;
        else
            return 0;
    }
    return dots;
}

long
corral_target_resolve_dots(char *out, const char *p, size_t n)
{
    const char *end = p + n;
    size_t o = 0;
    while (p < end) {
        const char *seg = p + 1;
        const char *slash = memchr(seg, '/', (size_t)(end - seg));
        const char *seg_end = slash ? slash : end;
        int dots = dot_segment(seg, (size_t)(seg_end - seg));
        if (dots == 0) {
            memcpy(out + o, p, (size_t)(seg_end - p));
            o += (size_t)(seg_end - p);
        } else if (dots == 2) {
            if (o == 0)
                return -1;
            while (out[--o] != '/') /* out[0] is '/' */
                ;
        }
        if (dots && !slash) /* "/a/." and "/a/b/.." are "/a/" */
            out[o++] = '/';
        p = seg_end;
    }
    return (long)o;
}
