/* test-jtree.c — the config's JSON tree: values, member names and the
 * line of each, comments, and the "name:line: reason" of every refusal. */
#include "jtree.h"
#include "testlib.h"

static struct jnode *
parse(const char *text, char *err, size_t errlen)
{
    return corral_jtree_parse(text, strlen(text), "t.json", err, errlen);
}

static const struct jnode *
member(const struct jnode *obj, const char *key)
{
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->kids[i]->key, key) == 0)
            return obj->kids[i];
    return NULL;
}

static void
test_values_and_lines(void)
{
    char err[256] = "";
    struct jnode *root = parse("{\n"
                               "  // a comment\n"
                               "  \"a\": 1,\n"
                               "  \"b\": [true, null, 2.5],\n"
                               "  \"c\": \"x\\u00e9\",\n"
                               "  \"d\": {}\n"
                               "}\n",
                               err, sizeof(err));
    CHECK(root != NULL);
    CHECK_EQ_INT(root->type, J_OBJECT);
    CHECK_EQ_INT(root->n, 4);
    const struct jnode *a = member(root, "a");
    CHECK(a && a->type == J_INT && a->num == 1 && a->dbl == 1.0);
    CHECK_EQ_INT(a->line, 3);
    const struct jnode *b = member(root, "b");
    CHECK(b && b->type == J_ARRAY && b->n == 3);
    CHECK_EQ_INT(b->line, 4);
    CHECK(b->kids[0]->type == J_BOOL && b->kids[0]->num == 1);
    CHECK_EQ_INT(b->kids[1]->type, J_NULL);
    CHECK(b->kids[2]->type == J_DOUBLE && b->kids[2]->dbl == 2.5);
    CHECK(b->kids[0]->key == NULL);
    const struct jnode *c = member(root, "c");
    CHECK(c && c->type == J_STRING);
    CHECK_EQ_STR(c->raw, "x\xc3\xa9");
    CHECK(c->val == NULL);
    CHECK_EQ_INT(c->line, 5);
    const struct jnode *d = member(root, "d");
    CHECK(d && d->type == J_OBJECT && d->n == 0);
    corral_jtree_free(root);
}

static void
test_refusals(void)
{
    static const struct {
        const char *text, *err;
    } cases[] = {
        {"{\"a\": 1,\n\"b\": }", "t.json:2: invalid JSON: "},
        {"{\"a\":\n\n\"\\u0000\"}",
         "t.json:3: strings must not contain \\u0000"},
        {"{\"\\u0000\": 1}", "t.json:1: keys must not contain \\u0000"},
        {"{\"a\": 1", "t.json:1: invalid JSON: premature EOF"},
        {"", "t.json:1: invalid JSON: "},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        CHECK(parse(cases[i].text, err, sizeof(err)) == NULL);
        if (strncmp(err, cases[i].err, strlen(cases[i].err)) != 0) {
            fprintf(stderr, "case %zu: \"%s\"\n", i, err);
            CHECK(0);
        }
    }
}

/* 64 levels are fine; the 65th is refused, not a stack overflow. */
static void
test_depth(void)
{
    char text[2 * 65 + 1], err[256] = "";
    for (int deep = 64; deep <= 65; deep++) {
        memset(text, '[', deep);
        memset(text + deep, ']', deep);
        text[2 * deep] = '\0';
        struct jnode *root = parse(text, err, sizeof(err));
        if (deep == 64) {
            CHECK(root != NULL);
            corral_jtree_free(root);
        } else {
            CHECK(root == NULL);
            CHECK(strstr(err, "nested too deeply") != NULL);
        }
    }
    corral_jtree_free(NULL);
}

int
main(void)
{
    RUN(test_values_and_lines);
    RUN(test_refusals);
    RUN(test_depth);
    return 0;
}
