/* jtree.h — a JSON document as a tree that remembers the line of every
 * value, so the config checker can say "file:line: key: reason". Built
 * with yajl's callbacks (comments allowed); knows nothing of what the
 * config means. */
#ifndef CORRAL_JTREE_H
#define CORRAL_JTREE_H

#include <stddef.h>

enum jtype { J_NULL, J_BOOL, J_INT, J_DOUBLE, J_STRING, J_OBJECT, J_ARRAY };

struct jnode {
    enum jtype type;
    unsigned line;
    char *key;           /* member name, when the parent is an object */
    long long num;       /* J_BOOL, J_INT */
    double dbl;          /* J_INT, J_DOUBLE */
    char *raw;           /* J_STRING as written, for messages */
    char *val;           /* J_STRING as the reader expanded it; NULL until
                          * then, freed with the tree */
    struct jnode **kids; /* J_OBJECT, J_ARRAY */
    size_t n, cap;
};

/* Parses len bytes of text (name stands for the file in messages, nested
 * at most 64 deep). Returns the tree, or NULL with "name:line: reason" in
 * err. Free with corral_jtree_free(). */
struct jnode *corral_jtree_parse(const char *text, size_t len, const char *name,
                                 char *err, size_t errlen);

/* NULL is a no-op. */
void corral_jtree_free(struct jnode *n);

#endif
