/* sync__json_parse checks a text in one pass and lets cJSON read it in place; this compares it
 * with the checks it replaced, run one after another as they used to be (NUL, then UTF-8, then
 * nesting and \u0000, then cJSON on a NUL-terminated copy): the same status and the same error
 * text for hand-picked texts with several faults and for many generated ones, each in a buffer
 * of exactly its length (so a read past the end shows under ASan). With `utf8_valid` (a text
 * the server already checked) the result is the same for every well-formed UTF-8 text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libsync/libsync.h>

#include "check.h"
#include "engine/json_check.h"

typedef struct outcome {
    int rc;
    char error[300];
    cJSON *value;
} outcome;

/* The checks as they ran before, in their order. */
static outcome reference(const char *text, size_t len, int max_depth)
{
    outcome o = {0};
    o.rc = sync__json_check_utf8(text, len);
    if (o.rc == SYNC_OK)
        o.rc = sync__json_check_depth(text, len, max_depth);
    if (o.rc != SYNC_OK) {
        snprintf(o.error, sizeof o.error, "%s", sync_error_last());
        return o;
    }
    char *copy = malloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    const char *end = NULL;
    o.value = cJSON_ParseWithLengthOpts(copy, len + 1, &end, 1);
    if (!o.value) {
        o.rc = SYNC_EPARSE;
        snprintf(o.error, sizeof o.error, "invalid JSON at offset %zu",
                 end && end >= copy ? (size_t)(end - copy) : 0);
    } else if (sync__json_check_tree(o.value) != SYNC_OK) {
        o.rc = SYNC_EPARSE; /* worded for a handler's tree there: only the status is compared */
        cJSON_Delete(o.value);
        o.value = NULL;
    }
    free(copy);
    return o;
}

static outcome current(const char *text, size_t len, int max_depth, int utf8_valid)
{
    outcome o = {0};
    char *exact = malloc(len ? len : 1); /* nothing after the text to read by mistake */
    memcpy(exact, text, len);
    o.rc = sync__json_parse_text(exact, len, max_depth, utf8_valid, &o.value);
    if (o.rc != SYNC_OK)
        snprintf(o.error, sizeof o.error, "%s", sync_error_last());
    free(exact);
    return o;
}

static int same(const outcome *a, const outcome *b, int compare_text)
{
    if (a->rc != b->rc)
        return 0;
    if (a->rc == SYNC_OK)
        return cJSON_Compare(a->value, b->value, 1);
    return !compare_text || strcmp(a->error, b->error) == 0;
}

static int well_formed_utf8(const char *text, size_t len)
{
    uint32_t state = 0;
    return sync__utf8_accept(&state, text, len) == len && state == 0;
}

/* Compares every way of reading `text`; returns 0 (and says so) when one differs. */
static int compare(const char *text, size_t len, int max_depth)
{
    outcome want = reference(text, len, max_depth);
    int tree_error = want.rc == SYNC_EPARSE && want.error[0] == '\0';
    outcome got = current(text, len, max_depth, 0);
    int ok = same(&want, &got, !tree_error);
    if (ok && well_formed_utf8(text, len)) {
        outcome trusted = current(text, len, max_depth, 1);
        ok = same(&want, &trusted, !tree_error);
        cJSON_Delete(trusted.value);
    }
    if (!ok) {
        fprintf(stderr, "  differs (max_depth %d): \"", max_depth);
        for (size_t i = 0; i < len; i++)
            fprintf(stderr,
                    (unsigned char)text[i] < 0x20 || (unsigned char)text[i] >= 0x7f ? "\\x%02x"
                                                                                    : "%c",
                    (unsigned char)text[i]);
        fprintf(stderr, "\": %d \"%s\" against %d \"%s\"\n", got.rc, got.error, want.rc,
                want.error);
    }
    cJSON_Delete(want.value);
    cJSON_Delete(got.value);
    return ok;
}

static const char *error_of(const char *text, size_t len, int max_depth, int *rc)
{
    static outcome o;
    cJSON_Delete(o.value);
    o = current(text, len, max_depth, 0);
    *rc = o.rc;
    return o.error;
}

/* Texts with more than one fault report the one the separate checks found first. */
static void test_precedence_and_tails(void)
{
    int rc;
    const char *garbage = "{\"type\":\"increment\",\"amount\":1} x";
    CHECK_EQ_STR(error_of(garbage, strlen(garbage), 0, &rc), "invalid JSON at offset 32");
    CHECK_EQ_INT(rc, SYNC_EPARSE);
    const char *blank = "{\"type\":\"increment\",\"amount\":1} \t\r\n ";
    CHECK_EQ_STR(error_of(blank, strlen(blank), 0, &rc), "");
    CHECK_EQ_INT(rc, SYNC_OK);
    /* too deep at 2, and then a byte that is no UTF-8, or a NUL */
    CHECK_EQ_STR(error_of("[[[1]],\"\xff\"]", 11, 2, &rc), "invalid UTF-8 at offset 8");
    CHECK_EQ_INT(rc, SYNC_EPARSE);
    CHECK_EQ_STR(error_of("[[[1]],\"\0\"]", 11, 2, &rc), "NUL byte at offset 8");
    CHECK_EQ_STR(error_of("[[[1]],\"\xe2\x82", 10, 2, &rc),
                 "truncated UTF-8 sequence at the end (offset 10)");
    CHECK_EQ_STR(error_of("[[[1]]]", 7, 2, &rc), "JSON nests deeper than 2 levels (offset 2)");
    CHECK_EQ_INT(rc, SYNC_ETOODEEP);
    /* a UTF-8 fault before a NUL: the NUL */
    CHECK_EQ_STR(error_of("[\"\xff\",\"\0\"]", 9, 0, &rc), "NUL byte at offset 6");
    /* \u0000 before the nesting goes too deep, and after */
    const char *nul_first = "[\"\\u0000\",[[[1]]]]";
    CHECK(strstr(error_of(nul_first, strlen(nul_first), 2, &rc), "at offset 2:") != NULL);
    CHECK_EQ_INT(rc, SYNC_EPARSE);
    const char *deep_first = "[[[\"\\u0000\"]]]";
    CHECK_EQ_STR(error_of(deep_first, strlen(deep_first), 2, &rc),
                 "JSON nests deeper than 2 levels (offset 2)");
    /* a text that ends in a comma inside an object (cJSON would look one byte further) */
    CHECK_EQ_STR(error_of("{\"a\":1,", 7, 0, &rc), "invalid JSON at offset 7");
    CHECK_EQ_INT(rc, SYNC_EPARSE);
    const char *hand[] = {
        "",
        " ",
        "{}",
        "{\"a\":1,",
        "{\"a\":1, ",
        "[1,",
        "\xef\xbb\xbf"
        "1",
        "\xef\xbb\xbf"
        "{}",
        "1 \x01\x1f",
        "{\"a\":\"\\\"]\"}",
        "\"\\",
        "\"\\\xc3\xa9\"",
        "\"\\\xc3\"",
        "[\"\\u0000\"",
        "[\"\\u000\"]",
        "{\"a\":[1,2,{\"b\":null}],\"c\":\"\xf4\x8f\xbf\xbf\"}",
        "{\"a\":1,\"a\":2}",
        "[1e999]",
    };
    for (size_t i = 0; i < sizeof hand / sizeof hand[0]; i++)
        for (int depth = 0; depth <= 3; depth++)
            CHECK(compare(hand[i], strlen(hand[i]), depth));
    cJSON_Delete(current("", 0, 0, 0).value);
}

static uint64_t rng = 0x9e3779b97f4a7c15u;

static unsigned next(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

/* Texts made of pieces of JSON, faults and characters; valid JSON cut or with a byte changed. */
static void test_generated_texts(void)
{
    static const char *const pieces[] = {
        "{",
        "}",
        "[",
        "]",
        "\"",
        "\\",
        "u0000",
        "\\u0000",
        "\\\\",
        ":",
        ",",
        "1",
        "-2.5e3",
        "true",
        "null",
        "\"a\"",
        "\"type\"",
        " ",
        "\t",
        "\r\n",
        "\x01",
        "\xc3\xa9",
        "\xe2\x82\xac",
        "\xf0\x9f\x98\x80",
        "\xe2\x82",
        "\xff",
        "\xc0\xaf",
        "\xed\xa0\x80",
        "\xf4\x90\x80\x80",
        "\xef\xbb\xbf",
        "1e999",
        "x",
        "\\\"",
        "{\"a\":",
        "\"b\":[",
        "]}",
        "\"k\":1,",
    };
    static const char *const valid[] = {
        "{\"type\":\"increment\",\"amount\":1}",
        "{\"a\":[1,{\"b\":\"\xc3\xa9\\n\"},[[]],null,true],\"c\":{\"d\":\"\\u00e9\\\\\"}} ",
        "[\"x\\\"y\",{\"\xe2\x82\xac\":-0.5e-3},[[[\"\xf0\x9f\x98\x80\"]]]]",
    };
    const size_t npieces = sizeof pieces / sizeof pieces[0];
    int failed = 0;
    char text[256];
    for (int n = 0; n < 60000 && failed < 5; n++) {
        size_t len = 0;
        if (n % 2) {
            const char *base = valid[next(3)];
            len = strlen(base);
            memcpy(text, base, len);
            if (next(2))
                len = next((unsigned)len + 1); /* cut */
            if (len && next(2))
                text[next((unsigned)len)] = pieces[next((unsigned)npieces)][0];
            if (next(4) == 0 && len < sizeof text - 8)
                len += (size_t)sprintf(text + len, "%s", pieces[next((unsigned)npieces)]);
        } else {
            for (unsigned k = next(12); k > 0; k--) {
                const char *p = next(30) == 0 ? "\0" : pieces[next((unsigned)npieces)];
                size_t plen = p[0] ? strlen(p) : 1;
                if (len + plen > sizeof text)
                    break;
                memcpy(text + len, p, plen);
                len += plen;
            }
        }
        if (!compare(text, len, (int)next(4)))
            failed++;
    }
    CHECK_EQ_INT(failed, 0);
}

int main(void)
{
    RUN(test_precedence_and_tails);
    RUN(test_generated_texts);
    return check_summary();
}
