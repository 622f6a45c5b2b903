/* JSON Patch (src/engine/patch.c): RFC 6902 appendix A and RFC 6901's pointers through apply,
 * every error of apply (and that the document is untouched after each), the diff's paths,
 * numbers and sizes, and the property that apply(diff(a, b), a) serialises exactly like b for
 * thousands of random states and edits, with the reverse patches and the composed patch too. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libsync/libsync.h>

#include "check.h"
#include "engine/patch.h"

static cJSON *parse(const char *text)
{
    cJSON *v = cJSON_Parse(text);
    if (!v) {
        fprintf(stderr, "test JSON does not parse: %s\n", text);
        abort();
    }
    return v;
}

/* Applies `ops` (text) to `doc` (text); returns the status and, on success, the result's text in
 * *out (caller frees); on failure checks the document was left exactly as it was. */
static int apply_texts(const char *doc, const char *ops, char **out)
{
    cJSON *d = parse(doc);
    char *before = cJSON_PrintUnformatted(d);
    int rc = sync__json_patch_apply_text(&d, ops, strlen(ops));
    char *after = cJSON_PrintUnformatted(d);
    if (rc != SYNC_OK) {
        CHECK_EQ_STR(after, before);
        cJSON_free(after);
        after = NULL;
    }
    cJSON_free(before);
    cJSON_Delete(d);
    if (out)
        *out = after;
    else
        cJSON_free(after);
    return rc;
}

/* The patch gives `expect` (compared as RFC 6902 compares: member order aside). */
static void expect_apply(const char *doc, const char *ops, const char *expect)
{
    char *out = NULL;
    int rc = apply_texts(doc, ops, &out);
    CHECK_EQ_INT(rc, SYNC_OK);
    if (rc != SYNC_OK) {
        fprintf(stderr, "  %s on %s: %s\n", ops, doc, sync_error_last());
        return;
    }
    cJSON *got = parse(out), *want = parse(expect);
    if (!sync__json_equal(got, want, 0)) {
        fprintf(stderr, "  %s on %s gave %s, want %s\n", ops, doc, out, expect);
        CHECK(!"patch result");
    }
    cJSON_Delete(got);
    cJSON_Delete(want);
    cJSON_free(out);
}

/* The patch fails with `status` and an error naming `words`, and leaves the document as it was. */
static void expect_error(const char *doc, const char *ops, int status, const char *words)
{
    int rc = apply_texts(doc, ops, NULL);
    if (rc != status || !strstr(sync_error_last(), words)) {
        fprintf(stderr, "  %s on %s: status %d (want %d), error \"%s\" (want \"%s\")\n", ops, doc,
                rc, status, sync_error_last(), words);
        CHECK(!"patch error");
    }
}

static void test_rfc6902_appendix_a(void)
{
    /* A.1 - A.16 */
    expect_apply("{\"foo\":\"bar\"}", "[{\"op\":\"add\",\"path\":\"/baz\",\"value\":\"qux\"}]",
                 "{\"baz\":\"qux\",\"foo\":\"bar\"}");
    expect_apply("{\"foo\":[\"bar\",\"baz\"]}",
                 "[{\"op\":\"add\",\"path\":\"/foo/1\",\"value\":\"qux\"}]",
                 "{\"foo\":[\"bar\",\"qux\",\"baz\"]}");
    expect_apply("{\"baz\":\"qux\",\"foo\":\"bar\"}", "[{\"op\":\"remove\",\"path\":\"/baz\"}]",
                 "{\"foo\":\"bar\"}");
    expect_apply("{\"foo\":[\"bar\",\"qux\",\"baz\"]}", "[{\"op\":\"remove\",\"path\":\"/foo/1\"}]",
                 "{\"foo\":[\"bar\",\"baz\"]}");
    expect_apply("{\"baz\":\"qux\",\"foo\":\"bar\"}",
                 "[{\"op\":\"replace\",\"path\":\"/baz\",\"value\":\"boo\"}]",
                 "{\"baz\":\"boo\",\"foo\":\"bar\"}");
    expect_apply("{\"foo\":{\"bar\":\"baz\",\"waldo\":\"fred\"},\"qux\":{\"corge\":\"grault\"}}",
                 "[{\"op\":\"move\",\"from\":\"/foo/waldo\",\"path\":\"/qux/thud\"}]",
                 "{\"foo\":{\"bar\":\"baz\"},\"qux\":{\"corge\":\"grault\",\"thud\":\"fred\"}}");
    expect_apply("{\"foo\":[\"all\",\"grass\",\"cows\",\"eat\"]}",
                 "[{\"op\":\"move\",\"from\":\"/foo/1\",\"path\":\"/foo/3\"}]",
                 "{\"foo\":[\"all\",\"cows\",\"eat\",\"grass\"]}");
    expect_apply("{\"baz\":\"qux\",\"foo\":[\"a\",2,\"c\"]}",
                 "[{\"op\":\"test\",\"path\":\"/baz\",\"value\":\"qux\"},"
                 "{\"op\":\"test\",\"path\":\"/foo/1\",\"value\":2}]",
                 "{\"baz\":\"qux\",\"foo\":[\"a\",2,\"c\"]}");
    expect_error("{\"baz\":\"qux\"}", "[{\"op\":\"test\",\"path\":\"/baz\",\"value\":\"bar\"}]",
                 SYNC_ESTATE, "test failed");
    expect_apply("{\"foo\":\"bar\"}",
                 "[{\"op\":\"add\",\"path\":\"/child\",\"value\":{\"grandchild\":{}}}]",
                 "{\"foo\":\"bar\",\"child\":{\"grandchild\":{}}}");
    expect_apply("{\"foo\":\"bar\"}",
                 "[{\"op\":\"add\",\"path\":\"/baz\",\"value\":\"qux\",\"xyz\":123}]",
                 "{\"foo\":\"bar\",\"baz\":\"qux\"}");
    expect_error("{\"foo\":\"bar\"}", "[{\"op\":\"add\",\"path\":\"/baz/bat\",\"value\":\"qux\"}]",
                 SYNC_ESTATE, "no such member");
    expect_error("{\"foo\":\"bar\"}",
                 "[{\"op\":\"add\",\"path\":\"/baz\",\"value\":\"qux\",\"op\":\"remove\"}]",
                 SYNC_EPARSE, "");
    expect_apply("{\"/\":9,\"~1\":10}", "[{\"op\":\"test\",\"path\":\"/~01\",\"value\":10}]",
                 "{\"/\":9,\"~1\":10}");
    expect_error("{\"/\":9,\"~1\":10}", "[{\"op\":\"test\",\"path\":\"/~01\",\"value\":\"10\"}]",
                 SYNC_ESTATE, "test failed");
    expect_apply("{\"foo\":[\"bar\"]}",
                 "[{\"op\":\"add\",\"path\":\"/foo/-\",\"value\":[\"abc\",\"def\"]}]",
                 "{\"foo\":[\"bar\",[\"abc\",\"def\"]]}");
    /* test compares objects without regard to member order (RFC 6902 section 4.6) */
    expect_apply("{\"o\":{\"a\":1,\"b\":[1,{\"c\":2,\"d\":3}]}}",
                 "[{\"op\":\"test\",\"path\":\"/o\",\"value\":{\"b\":[1,{\"d\":3,\"c\":2}],"
                 "\"a\":1}}]",
                 "{\"o\":{\"a\":1,\"b\":[1,{\"c\":2,\"d\":3}]}}");
    expect_error("{\"o\":[1,2]}", "[{\"op\":\"test\",\"path\":\"/o\",\"value\":[2,1]}]",
                 SYNC_ESTATE, "test failed");
}

/* RFC 6901 section 5: every pointer of its example names the right value. */
static void test_rfc6901_pointers(void)
{
    const char *doc = "{\"foo\":[\"bar\",\"baz\"],\"\":0,\"a/b\":1,\"c%d\":2,\"e^f\":3,\"g|h\":4,"
                      "\"i\\\\j\":5,\"k\\\"l\":6,\" \":7,\"m~n\":8}";
    const char *pairs[][2] = {
        {"/foo", "[\"bar\",\"baz\"]"},
        {"/foo/0", "\"bar\""},
        {"/", "0"},
        {"/a~1b", "1"},
        {"/c%d", "2"},
        {"/e^f", "3"},
        {"/g|h", "4"},
        {"/i\\\\j", "5"},
        {"/k\\\"l", "6"},
        {"/ ", "7"},
        {"/m~0n", "8"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char ops[256];
        snprintf(ops, sizeof ops, "[{\"op\":\"test\",\"path\":\"%s\",\"value\":%s}]", pairs[i][0],
                 pairs[i][1]);
        expect_apply(doc, ops, doc);
    }
    /* "" is the whole document */
    char whole[512];
    snprintf(whole, sizeof whole, "[{\"op\":\"test\",\"path\":\"\",\"value\":%s}]", doc);
    expect_apply(doc, whole, doc);
}

static void test_whole_document(void)
{
    /* "" names the whole document: add and replace swap it, test compares it */
    expect_apply("{\"a\":1}", "[{\"op\":\"replace\",\"path\":\"\",\"value\":[1,2]}]", "[1,2]");
    expect_apply("{\"a\":1}", "[{\"op\":\"add\",\"path\":\"\",\"value\":3}]", "3");
    expect_apply("{\"a\":{\"b\":[1]}}", "[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"\"}]",
                 "{\"b\":[1]}");
    expect_apply("[1]", "[{\"op\":\"copy\",\"from\":\"\",\"path\":\"/-\"}]", "[1,[1]]");
    expect_error("{\"a\":1}", "[{\"op\":\"remove\",\"path\":\"\"}]", SYNC_EINVAL, "whole document");
    expect_error("{\"a\":1}", "[{\"op\":\"move\",\"from\":\"\",\"path\":\"/b\"}]", SYNC_EINVAL,
                 "own child");
}

/* The same pointers escaped by the diff: ~ as ~0, / as ~1, the empty name as "/". */
/* A move from a path to itself is remove + add (RFC 6902 4.4): an object member goes to the end
 * (how the diff says "this member moved in order"), an array element stays. '-' is a plain name
 * in an object. */
static void test_move_to_itself_and_dash_members(void)
{
    char *out = NULL;
    CHECK_EQ_INT(apply_texts("{\"a\":1,\"b\":2}",
                             "[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/a\"}]", &out),
                 SYNC_OK);
    CHECK_EQ_STR(out, "{\"b\":2,\"a\":1}");
    cJSON_free(out);
    CHECK_EQ_INT(
        apply_texts("[1,2,3]", "[{\"op\":\"move\",\"from\":\"/1\",\"path\":\"/1\"}]", &out),
        SYNC_OK);
    CHECK_EQ_STR(out, "[1,2,3]");
    cJSON_free(out);
    /* replacing a member keeps its place; adding an existing one replaces it in place */
    CHECK_EQ_INT(apply_texts("{\"a\":1,\"b\":2}",
                             "[{\"op\":\"add\",\"path\":\"/a\",\"value\":3},{\"op\":\"add\","
                             "\"path\":\"/-\",\"value\":4}]",
                             &out),
                 SYNC_OK);
    CHECK_EQ_STR(out, "{\"a\":3,\"b\":2,\"-\":4}");
    cJSON_free(out);
}

static void test_diff_escapes_paths(void)
{
    cJSON *a = parse("{\"a/b\":1,\"m~n\":2,\"\":3,\"~1\":4,\"/\":{\"\":5},\"q\\\"\\\\\\n\":6}");
    cJSON *b =
        parse("{\"a/b\":10,\"m~n\":20,\"\":30,\"~1\":40,\"/\":{\"\":50},\"q\\\"\\\\\\n\":60}");
    sync__json_patch p;
    REQUIRE(sync__json_diff(a, b, 0, 0, &p) == SYNC_OK);
    CHECK(strstr(p.text, "\"path\":\"/a~1b\"") != NULL);
    CHECK(strstr(p.text, "\"path\":\"/m~0n\"") != NULL);
    CHECK(strstr(p.text, "\"path\":\"/\"") != NULL);
    CHECK(strstr(p.text, "\"path\":\"/~01\"") != NULL);
    CHECK(strstr(p.text, "\"path\":\"/~1/\"") != NULL);
    CHECK(strstr(p.text, "\"path\":\"/q\\\"\\\\\\n\"") != NULL);
    CHECK_EQ_INT(p.ops, 6);
    cJSON *got = cJSON_Duplicate(a, 1);
    CHECK_EQ_INT(sync__json_patch_apply_text(&got, p.text, p.len), SYNC_OK);
    CHECK(sync__json_equal(got, b, 1));
    cJSON_Delete(got);
    sync__json_patch_clear(&p);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_apply_errors(void)
{
    const char *doc = "{\"a\":{\"b\":1},\"arr\":[1,2,3],\"n\":5,\"s\":\"x\"}";
    /* a malformed patch: SYNC_EINVAL */
    expect_error(doc, "{\"op\":\"add\"}", SYNC_EINVAL, "not an array");
    expect_error(doc, "[1]", SYNC_EINVAL, "op 0 is not an object");
    expect_error(doc, "[{\"path\":\"/a\"}]", SYNC_EINVAL, "no string \"op\"");
    expect_error(doc, "[{\"op\":7,\"path\":\"/a\"}]", SYNC_EINVAL, "no string \"op\"");
    expect_error(doc, "[{\"op\":\"frob\",\"path\":\"/a\"}]", SYNC_EINVAL, "unknown op \"frob\"");
    expect_error(doc, "[{\"op\":\"remove\"}]", SYNC_EINVAL, "no string \"path\"");
    expect_error(doc, "[{\"op\":\"remove\",\"path\":3}]", SYNC_EINVAL, "no string \"path\"");
    expect_error(doc, "[{\"op\":\"add\",\"path\":\"/x\"}]", SYNC_EINVAL, "no \"value\"");
    expect_error(doc, "[{\"op\":\"replace\",\"path\":\"/n\"}]", SYNC_EINVAL, "no \"value\"");
    expect_error(doc, "[{\"op\":\"test\",\"path\":\"/n\"}]", SYNC_EINVAL, "no \"value\"");
    expect_error(doc, "[{\"op\":\"move\",\"path\":\"/x\"}]", SYNC_EINVAL, "no string \"from\"");
    expect_error(doc, "[{\"op\":\"copy\",\"path\":\"/x\",\"from\":null}]", SYNC_EINVAL,
                 "no string \"from\"");
    /* bad pointers */
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"a\"}]", SYNC_EINVAL, "starts with '/'");
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/a~2\"}]", SYNC_EINVAL, "'~'");
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/a~\"}]", SYNC_EINVAL, "'~'");
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/arr/01\"}]", SYNC_EINVAL,
                 "not an array index");
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/arr/x\"}]", SYNC_EINVAL,
                 "not an array index");
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/arr/-1\"}]", SYNC_EINVAL,
                 "not an array index");
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/arr/\"}]", SYNC_EINVAL,
                 "not an array index");
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/arr/1e0\"}]", SYNC_EINVAL,
                 "not an array index");
    /* '-' only for add */
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/arr/-\"}]", SYNC_EINVAL, "only for add");
    expect_error(doc, "[{\"op\":\"replace\",\"path\":\"/arr/-\",\"value\":1}]", SYNC_EINVAL,
                 "only for add");
    expect_error(doc, "[{\"op\":\"test\",\"path\":\"/arr/-\",\"value\":1}]", SYNC_EINVAL,
                 "only for add");
    expect_error(doc, "[{\"op\":\"copy\",\"from\":\"/arr/-\",\"path\":\"/x\"}]", SYNC_EINVAL,
                 "only for add");
    expect_error(doc, "[{\"op\":\"add\",\"path\":\"/arr/-/x\",\"value\":1}]", SYNC_ESTATE,
                 "'-' names no element");
    /* indices out of range, huge ones included */
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/arr/3\"}]", SYNC_ESTATE, "out of range");
    expect_error(doc, "[{\"op\":\"replace\",\"path\":\"/arr/3\",\"value\":0}]", SYNC_ESTATE,
                 "out of range");
    expect_error(doc, "[{\"op\":\"add\",\"path\":\"/arr/4\",\"value\":0}]", SYNC_ESTATE,
                 "out of range");
    expect_error(doc, "[{\"op\":\"add\",\"path\":\"/arr/18446744073709551616\",\"value\":0}]",
                 SYNC_ESTATE, "out of range");
    expect_error(doc,
                 "[{\"op\":\"add\",\"path\":\"/arr/99999999999999999999999999999/a\","
                 "\"value\":0}]",
                 SYNC_ESTATE, "out of range");
    expect_apply(doc, "[{\"op\":\"add\",\"path\":\"/arr/3\",\"value\":4}]",
                 "{\"a\":{\"b\":1},\"arr\":[1,2,3,4],\"n\":5,\"s\":\"x\"}");
    /* missing paths and values that are not containers */
    expect_error(doc, "[{\"op\":\"remove\",\"path\":\"/nope\"}]", SYNC_ESTATE, "no such member");
    expect_error(doc, "[{\"op\":\"replace\",\"path\":\"/nope\",\"value\":1}]", SYNC_ESTATE,
                 "no such member");
    expect_error(doc, "[{\"op\":\"add\",\"path\":\"/nope/x\",\"value\":1}]", SYNC_ESTATE,
                 "no such member");
    expect_error(doc, "[{\"op\":\"add\",\"path\":\"/n/x\",\"value\":1}]", SYNC_ESTATE,
                 "not a container");
    expect_error(doc, "[{\"op\":\"add\",\"path\":\"/s/0/x\",\"value\":1}]", SYNC_ESTATE,
                 "not a container");
    expect_error(doc, "[{\"op\":\"move\",\"from\":\"/nope\",\"path\":\"/x\"}]", SYNC_ESTATE,
                 "no such member");
    expect_error(doc, "[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/a/b/c\"}]", SYNC_EINVAL,
                 "own child");
    expect_error(doc, "[{\"op\":\"test\",\"path\":\"/n\",\"value\":6}]", SYNC_ESTATE,
                 "test failed");
    /* the text is not JSON the engine accepts */
    expect_error(doc, "[{\"op\":", SYNC_EPARSE, "");
    expect_error(doc, "[{\"op\":\"add\",\"path\":\"/x\",\"value\":\"\\u0000\"}]", SYNC_EPARSE, "");
    /* the error names the op and its pointer */
    expect_error(doc,
                 "[{\"op\":\"test\",\"path\":\"/n\",\"value\":5},{\"op\":\"remove\","
                 "\"path\":\"/zz\"}]",
                 SYNC_ESTATE, "op 1 (remove): \"/zz\"");
    /* no document */
    cJSON *none = NULL, *ops = parse("[]");
    CHECK_EQ_INT(sync__json_patch_apply(&none, ops), SYNC_EINVAL);
    CHECK_EQ_INT(sync__json_patch_apply(NULL, ops), SYNC_EINVAL);
    cJSON_Delete(ops);
}

/* Every kind of change is taken back when a later op fails: the document is byte for byte as
 * it was, and nothing leaks (ASan). */
static void test_apply_is_atomic(void)
{
    const char *doc = "{\"a\":{\"b\":1,\"c\":[1,2,3]},\"arr\":[1,2,3],\"n\":5,\"s\":\"x\"}";
    const char *bodies[] = {
        "{\"op\":\"add\",\"path\":\"/z\",\"value\":{\"deep\":[1]}}",
        "{\"op\":\"add\",\"path\":\"/arr/0\",\"value\":0}",
        "{\"op\":\"add\",\"path\":\"/arr/-\",\"value\":9}",
        "{\"op\":\"add\",\"path\":\"/a\",\"value\":7}",
        "{\"op\":\"remove\",\"path\":\"/a/c/1\"}",
        "{\"op\":\"remove\",\"path\":\"/a\"}",
        "{\"op\":\"remove\",\"path\":\"/s\"}",
        "{\"op\":\"replace\",\"path\":\"/arr/2\",\"value\":[]}",
        "{\"op\":\"replace\",\"path\":\"/a/b\",\"value\":null}",
        "{\"op\":\"move\",\"from\":\"/a/c\",\"path\":\"/arr/1\"}",
        "{\"op\":\"move\",\"from\":\"/n\",\"path\":\"/n\"}",
        "{\"op\":\"move\",\"from\":\"/a\",\"path\":\"\"}",
        "{\"op\":\"copy\",\"from\":\"/a\",\"path\":\"/a/c/0\"}",
        "{\"op\":\"replace\",\"path\":\"\",\"value\":[1]}",
    };
    size_t n = sizeof bodies / sizeof bodies[0];
    /* each alone succeeds; then every prefix of them followed by a failing op fails unchanged */
    for (size_t i = 0; i < n; i++) {
        char ops[512];
        snprintf(ops, sizeof ops, "[%s]", bodies[i]);
        CHECK_EQ_INT(apply_texts(doc, ops, NULL), SYNC_OK);
    }
    for (size_t i = 0; i < n; i++) {
        char ops[4096] = "[";
        for (size_t j = i; j < n; j++) {
            strcat(ops, bodies[j]);
            strcat(ops, ",");
        }
        strcat(ops, "{\"op\":\"remove\",\"path\":\"/no/such/thing\"}]");
        int rc = apply_texts(doc, ops, NULL); /* checks the document is unchanged */
        CHECK(rc == SYNC_ESTATE || rc == SYNC_EINVAL);
    }
}

/* Hostile pointers: very deep, very long, and deep documents; bounded, no crash. */
static void test_apply_hostile(void)
{
    size_t n = 200000;
    char *ops = malloc(n * 2 + 100);
    strcpy(ops, "[{\"op\":\"add\",\"path\":\"");
    char *p = ops + strlen(ops);
    for (size_t i = 0; i < n; i++) {
        *p++ = '/';
        *p++ = 'a';
    }
    strcpy(p, "\",\"value\":1}]");
    CHECK_EQ_INT(apply_texts("{\"a\":{\"a\":{}}}", ops, NULL), SYNC_ESTATE);
    CHECK_EQ_INT(apply_texts("[[[0]]]", ops, NULL), SYNC_EINVAL);
    free(ops);

    /* a document 900 deep (cJSON's parser stops at 1000), patched at the bottom */
    size_t depth = 900;
    char *deep = malloc(depth * 8 + 16);
    char *path = malloc(depth * 2 + 64);
    deep[0] = path[0] = '\0';
    for (size_t i = 0; i < depth; i++) {
        strcat(deep, "{\"a\":");
        strcat(path, "/a");
    }
    strcat(deep, "0");
    for (size_t i = 0; i < depth; i++)
        strcat(deep, "}");
    char *patch = malloc(depth * 2 + 128);
    snprintf(patch, depth * 2 + 128, "[{\"op\":\"replace\",\"path\":\"%s\",\"value\":1}]", path);
    cJSON *d = parse(deep);
    CHECK_EQ_INT(sync__json_patch_apply_text(&d, patch, strlen(patch)), SYNC_OK);
    /* and the diff of two such documents stays correct past its recursion bound */
    cJSON *orig = parse(deep);
    sync__json_patch dp;
    REQUIRE(sync__json_diff(orig, d, 0, 0, &dp) == SYNC_OK);
    cJSON *r = cJSON_Duplicate(orig, 1);
    CHECK_EQ_INT(sync__json_patch_apply_text(&r, dp.text, dp.len), SYNC_OK);
    CHECK(sync__json_equal(r, d, 1) || depth > SYNC__JSON_PATCH_MAX_DEPTH);
    char *rt = cJSON_PrintUnformatted(r), *dt = cJSON_PrintUnformatted(d);
    CHECK_EQ_STR(rt, dt);
    cJSON_free(rt);
    cJSON_free(dt);
    sync__json_patch_clear(&dp);
    cJSON_Delete(r);
    cJSON_Delete(orig);
    cJSON_Delete(d);
    free(deep);
    free(path);
    free(patch);
}

/* ---- numbers: the patch carries exactly the double of the state ---------------------------- */

static void test_numbers_exact(void)
{
    const double values[] = {0.1,
                             1.0 / 3,
                             -2.5e-308,
                             1e300,
                             9007199254740993.0,
                             -0.0,
                             123456789.123456789,
                             4294967296.5,
                             -1e-7,
                             2147483647,
                             -2147483648.0,
                             2147483648.0,
                             5e-324};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        cJSON *a = parse("{\"n\":7,\"arr\":[7]}"), *b = parse("{\"n\":7,\"arr\":[7]}");
        cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(b, "n"), values[i]);
        cJSON_SetNumberValue(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(b, "arr"), 0),
                             values[i]);
        sync__json_patch p;
        REQUIRE(sync__json_diff(a, b, 0, 0, &p) == SYNC_OK);
        CHECK_EQ_INT(p.ops, values[i] == 7 ? 0 : 2);
        REQUIRE(sync__json_patch_apply_text(&a, p.text, p.len) == SYNC_OK);
        /* the client holds exactly the double it would have parsed from a state frame */
        char *frame = cJSON_PrintUnformatted(b);
        cJSON *from_frame = parse(frame);
        cJSON_free(frame);
        double want = cJSON_GetObjectItemCaseSensitive(from_frame, "n")->valuedouble;
        double got = cJSON_GetObjectItemCaseSensitive(a, "n")->valuedouble;
        double in_arr =
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(a, "arr"), 0)->valuedouble;
        CHECK(memcmp(&got, &want, sizeof got) == 0);
        CHECK(memcmp(&in_arr, &want, sizeof got) == 0);
        cJSON_Delete(from_frame);
        char *ta = cJSON_PrintUnformatted(a), *tb = cJSON_PrintUnformatted(b);
        CHECK_EQ_STR(ta, tb);
        cJSON_free(ta);
        cJSON_free(tb);
        sync__json_patch_clear(&p);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
}

/* ---- random states and edits --------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return n ? (uint32_t)(rng_state % n) : 0;
}

static const char *const keys[] = {"a", "b",    "",      "a/b", "~", "~1", "/",       "m~n",
                                   "é", "日本", "\"q\"", "x y", "0", "-",  "counter", "k\\"};
static const char *const strings[] = {"",  "/",         "~",     "~0/~1", "héllo", "日本語",
                                      "😀", "a\"b\\c\n", "tab\t", "x",     "0",     "null"};

static cJSON *random_number(void)
{
    switch (rnd(8)) {
    case 0:
        return cJSON_CreateNumber((double)rnd(100));
    case 1:
        return cJSON_CreateNumber(-(double)rnd(1000000));
    case 2:
        return cJSON_CreateNumber((double)rnd(1000000) / 7.0);
    case 3:
        return cJSON_CreateNumber(-(double)rnd(1000) * 1e-9 / 3.0);
    case 4:
        return cJSON_CreateNumber((double)rnd(1000) * 1e200);
    case 5:
        return cJSON_CreateNumber(9007199254740992.0 + (double)rnd(4) * 2);
    case 6:
        return cJSON_CreateNumber((double)rnd(4000000000u) - 2e9);
    default:
        return cJSON_CreateNumber(0.1 * (double)rnd(50));
    }
}

static cJSON *random_value(int depth)
{
    uint32_t kind = rnd(depth > 3 ? 6 : 9);
    switch (kind) {
    case 0:
        return cJSON_CreateNull();
    case 1:
        return cJSON_CreateBool((cJSON_bool)rnd(2));
    case 2:
    case 3:
        return random_number();
    case 4:
    case 5:
        return cJSON_CreateString(strings[rnd(sizeof strings / sizeof strings[0])]);
    case 6: {
        cJSON *arr = cJSON_CreateArray();
        for (uint32_t i = rnd(6); i > 0; i--)
            cJSON_AddItemToArray(arr, random_value(depth + 1));
        return arr;
    }
    default: {
        cJSON *obj = cJSON_CreateObject();
        for (uint32_t i = rnd(7); i > 0; i--) {
            const char *k = keys[rnd(sizeof keys / sizeof keys[0])];
            if (!cJSON_GetObjectItemCaseSensitive(obj, k))
                cJSON_AddItemToObject(obj, k, random_value(depth + 1));
        }
        return obj;
    }
    }
}

/* A state: an object (mostly) or an array, sometimes deep. */
static cJSON *random_container_value(void)
{
    for (;;) {
        cJSON *v = random_value(rnd(4) == 0 ? 2 : 0);
        if ((cJSON_IsObject(v) && (v->child || rnd(8) == 0)) || (cJSON_IsArray(v) && rnd(3) == 0))
            return v;
        cJSON_Delete(v);
    }
}

/* A random container inside `root` (root itself included). */
static cJSON *random_container(cJSON *root)
{
    cJSON *cur = root;
    for (;;) {
        if (!cur->child || rnd(3) == 0)
            return cur;
        size_t n = 0;
        for (cJSON *it = cur->child; it; it = it->next)
            n++;
        cJSON *pick = cur->child;
        for (uint32_t i = rnd((uint32_t)n); i > 0; i--)
            pick = pick->next;
        if (!cJSON_IsArray(pick) && !cJSON_IsObject(pick))
            return cur;
        cur = pick;
    }
}

static cJSON *nth_child(cJSON *c, uint32_t i)
{
    cJSON *it = c->child;
    while (it && i--)
        it = it->next;
    return it;
}

/* One edit of the kinds handlers make: a value changed, a member added, deleted or deleted and
 * added again (to the end), an element inserted, removed or appended, a subtree replaced. */
static void random_edit(cJSON **root)
{
    if (rnd(40) == 0) {
        cJSON_Delete(*root);
        *root = random_value(0);
        return;
    }
    if (!cJSON_IsArray(*root) && !cJSON_IsObject(*root))
        return;
    cJSON *c = random_container(*root);
    uint32_t n = (uint32_t)cJSON_GetArraySize(c);
    uint32_t what = rnd(6);
    if (cJSON_IsArray(c)) {
        if (what < 2 || n == 0) {
            /* cJSON 1.7.15 refuses an insert at the end (and leaves the item to the caller) */
            uint32_t at = rnd(n + 1);
            cJSON *v = random_value(2);
            if (at == n)
                cJSON_AddItemToArray(c, v);
            else if (!cJSON_InsertItemInArray(c, (int)at, v))
                cJSON_Delete(v);
        } else if (what == 2)
            cJSON_DeleteItemFromArray(c, (int)rnd(n));
        else if (what == 3)
            cJSON_AddItemToArray(c, random_value(2));
        else
            cJSON_ReplaceItemInArray(c, (int)rnd(n), random_value(2));
        return;
    }
    const char *k = keys[rnd(sizeof keys / sizeof keys[0])];
    cJSON *have = cJSON_GetObjectItemCaseSensitive(c, k);
    if (what < 2 && !have) {
        cJSON_AddItemToObject(c, k, random_value(2));
    } else if (what == 2 && n) {
        cJSON *m = nth_child(c, rnd(n));
        cJSON_Delete(cJSON_DetachItemViaPointer(c, m));
    } else if (what == 3 && n) {
        cJSON *m = nth_child(c, rnd(n));
        cJSON_DetachItemViaPointer(c, m);
        char *name = strdup(m->string);
        cJSON_AddItemToObject(c, name, m); /* deleted and added again: now last */
        free(name);
    } else if (have) {
        if (cJSON_IsNumber(have) && rnd(2))
            cJSON_SetNumberValue(have, have->valuedouble + 1);
        else
            cJSON_ReplaceItemInObjectCaseSensitive(c, k, random_value(2));
    }
}

static int check_diff_apply(const cJSON *a, const cJSON *b, int round)
{
    sync__json_patch p;
    int ok = 1;
    if (sync__json_diff(a, b, 0, SYNC__JSON_DIFF_REVERSE, &p) != SYNC_OK) {
        fprintf(stderr, "  round %d: diff failed: %s\n", round, sync_error_last());
        return 0;
    }
    char *tb = cJSON_PrintUnformatted(b), *ta = cJSON_PrintUnformatted(a);
    cJSON *got = cJSON_Duplicate(a, 1);
    int rc = sync__json_patch_apply_text(&got, p.text, p.len);
    char *tg = rc == SYNC_OK ? cJSON_PrintUnformatted(got) : NULL;
    if (!tg || strcmp(tg, tb) != 0) {
        fprintf(stderr,
                "  round %d: apply(diff(a, b), a) != b (%s)\n  a = %s\n  b = %s\n"
                "  patch = %s\n  got = %s\n",
                round, rc == SYNC_OK ? "" : sync_error_last(), ta, tb, p.text, tg ? tg : "-");
        ok = 0;
    }
    /* the reverse patch takes b back to exactly a (small objects: member order included) */
    cJSON *back = cJSON_Duplicate(b, 1);
    if (sync__json_patch_apply_text(&back, p.reverse, p.reverse_len) != SYNC_OK ||
        !sync__json_equal(back, a, 1)) {
        fprintf(stderr, "  round %d: reverse patch %s does not give a back (%s)\n", round,
                p.reverse, sync_error_last());
        ok = 0;
    }
    /* equal states give an empty patch; the size check refuses one byte too few */
    if (p.ops == 0 && (strcmp(p.text, "[]") != 0 || !sync__json_equal(a, b, 1)))
        ok = 0;
    sync__json_patch small;
    if (sync__json_diff(a, b, p.len - 1, 0, &small) != SYNC_ETOOBIG ||
        sync__json_diff(a, b, p.len, 0, &small) != SYNC_OK || small.len != p.len) {
        fprintf(stderr, "  round %d: the size check is off\n", round);
        ok = 0;
    }
    sync__json_patch_clear(&small);
    /* a failing op at the end leaves a untouched */
    char *failing = malloc(p.len + 64);
    snprintf(failing, p.len + 64, "%.*s%s{\"op\":\"test\",\"path\":\"/no~such\",\"value\":0}]",
             (int)(p.len - 1), p.text, p.ops ? "," : "");
    cJSON *same = cJSON_Duplicate(a, 1);
    char *ts = NULL;
    if (sync__json_patch_apply_text(&same, failing, strlen(failing)) == SYNC_OK ||
        !(ts = cJSON_PrintUnformatted(same)) || strcmp(ts, ta) != 0) {
        fprintf(stderr, "  round %d: a failed patch changed the document\n", round);
        ok = 0;
    }
    cJSON_free(ts);
    free(failing);
    cJSON_Delete(same);
    cJSON_Delete(back);
    cJSON_free(tg);
    cJSON_free(ta);
    cJSON_free(tb);
    cJSON_Delete(got);
    sync__json_patch_clear(&p);
    return ok;
}

/* 0 and -0 are equal doubles, but state frames print them as "0" and "-0" (cJSON 1.7.15): a
 * change from one to the other must reach the client (found by fuzz_json_patch). */
static void test_negative_zero(void)
{
    cJSON *a = parse("{\"z\":0,\"y\":[-0]}"), *b = parse("{\"z\":-0,\"y\":[0]}");
    char *ta = cJSON_PrintUnformatted(a), *tb = cJSON_PrintUnformatted(b);
    if (strcmp(ta, tb) != 0) {
        sync__json_patch p;
        REQUIRE(sync__json_diff(a, b, 0, 0, &p) == SYNC_OK);
        CHECK_EQ_INT(p.ops, 2);
        CHECK(!sync__json_equal(a, b, 1));
        CHECK(check_diff_apply(a, b, -1));
        sync__json_patch_clear(&p);
    }
    cJSON_free(ta);
    cJSON_free(tb);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_property_diff_apply(void)
{
    int failures = 0;
    size_t total_ops = 0;
    for (int round = 0; round < 5000 && failures < 5; round++) {
        cJSON *a = random_container_value();
        cJSON *b = cJSON_Duplicate(a, 1);
        for (uint32_t e = 1 + rnd(4); e > 0; e--)
            random_edit(&b);
        if (rnd(20) == 0) {
            cJSON_Delete(b);
            b = random_value(0);
        }
        if (!check_diff_apply(a, b, round))
            failures++;
        sync__json_patch p;
        if (sync__json_diff(a, b, 0, 0, &p) == SYNC_OK)
            total_ops += p.ops;
        sync__json_patch_clear(&p);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
    printf("  5000 random pairs, %zu ops in all\n", total_ops);
    CHECK_EQ_INT(failures, 0);
}

/* A chain of versions: the composed patch from any base rebuilds the newest state, byte for byte
 * (the random objects are small: their reverse patches keep member order). */
static void test_property_compose(void)
{
    int failures = 0;
    for (int round = 0; round < 300 && failures < 5; round++) {
        enum { VERSIONS = 12 };
        cJSON *states[VERSIONS];
        char *rev[VERSIONS];
        size_t rev_len[VERSIONS];
        states[0] = random_container_value();
        for (int v = 1; v < VERSIONS; v++) {
            states[v] = cJSON_Duplicate(states[v - 1], 1);
            for (uint32_t e = 1 + rnd(3); e > 0; e--)
                random_edit(&states[v]);
            sync__json_patch p;
            REQUIRE(sync__json_diff(states[v - 1], states[v], 0, SYNC__JSON_DIFF_REVERSE, &p) ==
                    SYNC_OK);
            rev[v] = p.reverse; /* kept: V -> V-1 */
            rev_len[v] = p.reverse_len;
            free(p.text);
        }
        cJSON *current = states[VERSIONS - 1];
        for (int base = 0; base < VERSIONS; base++) {
            /* newest first: reverse of V-1, V-2, ..., base+1 */
            const char *list[VERSIONS];
            size_t lens[VERSIONS];
            size_t count = 0;
            for (int v = VERSIONS - 1; v > base; v--) {
                list[count] = rev[v];
                lens[count++] = rev_len[v];
            }
            sync__json_patch p;
            if (sync__json_diff_since(current, list, lens, count, 0, &p) != SYNC_OK) {
                fprintf(stderr, "  compose failed: %s\n", sync_error_last());
                failures++;
                continue;
            }
            cJSON *client = cJSON_Duplicate(states[base], 1);
            char *tc = NULL, *tv = cJSON_PrintUnformatted(current);
            if (sync__json_patch_apply_text(&client, p.text, p.len) != SYNC_OK ||
                !(tc = cJSON_PrintUnformatted(client)) || strcmp(tc, tv) != 0) {
                fprintf(stderr, "  compose from %d: %s does not rebuild the state (%s)\n", base,
                        p.text, sync_error_last());
                failures++;
            }
            cJSON_free(tc);
            cJSON_free(tv);
            if (base == VERSIONS - 1)
                CHECK_EQ_STR(p.text, "[]");
            cJSON_Delete(client);
            sync__json_patch_clear(&p);
        }
        for (int v = 0; v < VERSIONS; v++) {
            if (v)
                free(rev[v]);
            cJSON_Delete(states[v]);
        }
    }
    CHECK_EQ_INT(failures, 0);
}

/* The reverse of an object that lost a member from its middle restores the member order when the
 * object is small (the whole object comes back), and the values, not the order, when it is wide
 * (a member added back lands at the end). */
static void test_reverse_member_order(void)
{
    for (int wide = 0; wide < 2; wide++) {
        cJSON *a = cJSON_CreateObject();
        cJSON *inner = cJSON_AddObjectToObject(a, "map");
        int n = wide ? 1000 : 5;
        for (int i = 0; i < n; i++) {
            char key[32];
            snprintf(key, sizeof key, "member-%d", i);
            cJSON_AddNumberToObject(inner, key, i);
        }
        cJSON *b = cJSON_Duplicate(a, 1);
        cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(b, "map"),
                                                "member-2");
        sync__json_patch p;
        REQUIRE(sync__json_diff(a, b, 0, SYNC__JSON_DIFF_REVERSE, &p) == SYNC_OK);
        CHECK_EQ_INT(p.ops, 1);
        cJSON *back = cJSON_Duplicate(b, 1);
        REQUIRE(sync__json_patch_apply_text(&back, p.reverse, p.reverse_len) == SYNC_OK);
        CHECK(sync__json_equal(back, a, 0));
        CHECK(sync__json_equal(back, a, 1) == !wide);
        CHECK(wide ? p.reverse_len < 100 : strstr(p.reverse, "\"op\":\"replace\"") != NULL);
        cJSON_Delete(back);
        sync__json_patch_clear(&p);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
}

/* A stored reverse patch that does not fit fails the composition with apply's error. */
static void test_compose_errors(void)
{
    cJSON *cur = parse("{\"counter\":3,\"list\":[1,2]}");
    const char *good = "[{\"op\":\"replace\",\"path\":\"/counter\",\"value\":2}]";
    const char *bad = "[{\"op\":\"remove\",\"path\":\"/list/5\"}]";
    const char *list[2] = {good, bad};
    size_t lens[2] = {strlen(good), strlen(bad)};
    sync__json_patch p;
    CHECK_EQ_INT(sync__json_diff_since(cur, list, lens, 2, 0, &p), SYNC_ESTATE);
    CHECK(strstr(sync_error_last(), "out of range") != NULL);
    CHECK(p.text == NULL);
    list[1] = "[{";
    lens[1] = 2;
    CHECK_EQ_INT(sync__json_diff_since(cur, list, lens, 2, 0, &p), SYNC_EPARSE);
    CHECK_EQ_INT(sync__json_diff_since(cur, NULL, NULL, 1, 0, &p), SYNC_EINVAL);
    /* the size check applies to the composed patch too */
    CHECK_EQ_INT(sync__json_diff_since(cur, list, lens, 1, 10, &p), SYNC_ETOOBIG);
    REQUIRE(sync__json_diff_since(cur, list, lens, 1, 0, &p) == SYNC_OK);
    CHECK_EQ_STR(p.text, "[{\"op\":\"replace\",\"path\":\"/counter\",\"value\":3}]");
    sync__json_patch_clear(&p);
    /* the current state is never touched */
    char *text = cJSON_PrintUnformatted(cur);
    CHECK_EQ_STR(text, "{\"counter\":3,\"list\":[1,2]}");
    cJSON_free(text);
    cJSON_Delete(cur);
}

/* ---- size and speed on large states -------------------------------------------------------- */

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ~1 MiB: a counter, a list of records and a map of 5,000 members. */
static cJSON *big_state(void)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "counter", 41);
    cJSON *items = cJSON_AddArrayToObject(s, "items");
    for (int i = 0; i < 13000; i++) {
        cJSON *it = cJSON_CreateObject();
        char name[48];
        snprintf(name, sizeof name, "item number %d / ~ é", i);
        cJSON_AddNumberToObject(it, "id", i);
        cJSON_AddStringToObject(it, "name", name);
        cJSON_AddNumberToObject(it, "price", i * 1.25);
        cJSON_AddBoolToObject(it, "stock", i % 2);
        cJSON_AddItemToArray(items, it);
    }
    cJSON *map = cJSON_AddObjectToObject(s, "users");
    for (int i = 0; i < 5000; i++) {
        char key[32];
        snprintf(key, sizeof key, "user-%06d", i);
        cJSON_AddNumberToObject(map, key, i * 3.5);
    }
    return s;
}

static size_t diff_size(const cJSON *a, const cJSON *b, const char *what)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sync__json_patch p;
    if (sync__json_diff(a, b, 0, 0, &p) != SYNC_OK)
        return SIZE_MAX;
    double ms = ms_since(&t0);
    printf("  %-34s %4zu bytes in %.2f ms: %s\n", what, p.len, ms, p.len < 160 ? p.text : "...");
    cJSON *got = cJSON_Duplicate(a, 1);
    CHECK_EQ_INT(sync__json_patch_apply_text(&got, p.text, p.len), SYNC_OK);
    CHECK(sync__json_equal(got, b, 1));
    cJSON_Delete(got);
    size_t len = p.len;
    sync__json_patch_clear(&p);
    return len;
}

static void test_large_state_small_patches(void)
{
    cJSON *a = big_state();
    char *text = cJSON_PrintUnformatted(a);
    size_t state_len = strlen(text);
    cJSON_free(text);
    printf("  state: %zu bytes\n", state_len);
    CHECK(state_len >= 1024 * 1024);

    cJSON *b = cJSON_Duplicate(a, 1);
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(b, "counter"), 42);
    CHECK(diff_size(a, b, "counter + 1") <= 200);

    cJSON *items = cJSON_GetObjectItemCaseSensitive(b, "items");
    cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(items, 4500), "price"),
                         99.5);
    CHECK(diff_size(a, b, "+ one field of item 4500") <= 200);
    cJSON_AddItemToArray(items, cJSON_CreateString("appended"));
    CHECK(diff_size(a, b, "+ appended to the items") <= 300);

    cJSON *c = cJSON_Duplicate(a, 1);
    cJSON_DeleteItemFromArray(cJSON_GetObjectItemCaseSensitive(c, "items"), 10);
    CHECK(diff_size(a, c, "item 10 removed") <= 200);
    cJSON *f = cJSON_Duplicate(a, 1);
    cJSON_InsertItemInArray(cJSON_GetObjectItemCaseSensitive(f, "items"), 0, cJSON_CreateNumber(1));
    CHECK(diff_size(a, f, "one inserted at the front") <= 200);
    cJSON_Delete(f);

    /* a capped log on the items: the oldest dropped, a new one appended */
    cJSON *g = cJSON_Duplicate(a, 1);
    cJSON *gi = cJSON_GetObjectItemCaseSensitive(g, "items");
    cJSON_DeleteItemFromArray(gi, 0);
    cJSON_AddItemToArray(gi, cJSON_CreateString("newest"));
    CHECK(diff_size(a, g, "capped log: first out, one in") <= 200);
    cJSON_Delete(g);

    /* the wide map: one member deleted and added again (now last), one new, one gone */
    cJSON *d = cJSON_Duplicate(a, 1);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(d, "users");
    cJSON *m = cJSON_DetachItemFromObjectCaseSensitive(map, "user-000007");
    cJSON_SetNumberValue(m, 1);
    cJSON_AddItemToObject(map, "user-000007", m);
    cJSON_AddNumberToObject(map, "user-new", 5);
    cJSON_DeleteItemFromObjectCaseSensitive(map, "user-002000");
    CHECK(diff_size(a, d, "wide map: moved, added, removed") <= 300);

    /* a state rewritten from scratch: the size check says send the state instead */
    cJSON *e = big_state();
    cJSON_ReplaceItemInObjectCaseSensitive(e, "items", cJSON_CreateString("gone"));
    cJSON_ReplaceItemInObjectCaseSensitive(e, "users", cJSON_CreateArray());
    sync__json_patch p;
    CHECK_EQ_INT(sync__json_diff(e, a, state_len, 0, &p), SYNC_ETOOBIG);
    CHECK(strstr(sync_error_last(), "longer than") != NULL);
    CHECK(p.text == NULL);

    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(c);
    cJSON_Delete(d);
    cJSON_Delete(e);
}

static void test_diff_shapes(void)
{
    struct {
        const char *a, *b;
        size_t ops;
    } cases[] = {
        {"{\"a\":1}", "{\"a\":1}", 0},
        {"{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}", 1}, /* order counts: one move */
        {"[1,2,3]", "[1,2,3,4]", 1},
        {"[1,2,3]", "[0,1,2,3]", 1},
        {"[1,2,3]", "[1,3]", 1},
        {"[1,2,3]", "[1,9,3]", 1},
        {"[1,2,3]", "[]", 3},
        {"{\"a\":[{\"x\":1,\"y\":[1,2]}]}", "{\"a\":[{\"x\":1,\"y\":[1,3]}]}", 1},
        {"{\"a\":1}", "[1]", 1},
        {"1", "\"1\"", 1},
        {"true", "false", 1},
        {"null", "null", 0},
        {"{\"a\":{\"b\":1}}", "{\"a\":{\"b\":1,\"c\":2}}", 1},
        /* a capped log: the first dropped, one appended */
        {"[1,2,3,4,5,6,7,8]", "[2,3,4,5,6,7,8,9]", 2},
        /* inside the middle: one added, one changed, one removed */
        {"[1,2,3,4,5]", "[1,9,2,3,5]", 2},
        {"[1,2,3,4,5,6]", "[1,2,7,4,6]", 2},
        {"[{\"id\":1},{\"id\":2},{\"id\":3},{\"id\":4}]",
         "[{\"id\":2},{\"id\":3,\"x\":1},{\"id\":4},{\"id\":5}]", 3},
        /* nothing in common within reach: pairwise */
        {"[1,2,3]", "[4,5,6,7]", 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *a = parse(cases[i].a), *b = parse(cases[i].b);
        sync__json_patch p;
        REQUIRE(sync__json_diff(a, b, 0, 0, &p) == SYNC_OK);
        if (p.ops != cases[i].ops)
            fprintf(stderr, "  %s -> %s: %s\n", cases[i].a, cases[i].b, p.text);
        CHECK_EQ_INT(p.ops, cases[i].ops);
        CHECK(check_diff_apply(a, b, -1));
        sync__json_patch_clear(&p);
        cJSON_Delete(a);
        cJSON_Delete(b);
    }
    sync__json_patch p;
    CHECK_EQ_INT(sync__json_diff(NULL, NULL, 0, 0, &p), SYNC_EINVAL);
}

int main(void)
{
    RUN(test_rfc6902_appendix_a);
    RUN(test_rfc6901_pointers);
    RUN(test_whole_document);
    RUN(test_move_to_itself_and_dash_members);
    RUN(test_diff_escapes_paths);
    RUN(test_apply_errors);
    RUN(test_apply_is_atomic);
    RUN(test_apply_hostile);
    RUN(test_numbers_exact);
    RUN(test_diff_shapes);
    RUN(test_negative_zero);
    RUN(test_property_diff_apply);
    RUN(test_property_compose);
    RUN(test_compose_errors);
    RUN(test_reverse_member_order);
    RUN(test_large_state_small_patches);
    return check_summary();
}
