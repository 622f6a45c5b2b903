/*
 * libFuzzer target: JSON Patch (src/engine/patch.c). The input is two texts split at the first
 * '\n': a document A and a second text B. Invariants checked on every run:
 *   - B as a patch (raw bytes, then parsed) applied to A never crashes; when it fails, A is byte
 *     for byte as it was; when it succeeds, diff(A, result) rebuilds the result (below);
 *   - B as a state: apply(diff(A, B), A) serialises exactly like B, the reverse patch takes B
 *     back to a state equal to A (member order included when A is small), and the size check
 *     refuses the patch one byte short.
 */
#include <libsync/libsync.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/json_check.h"
#include "engine/patch.h"

static void fail(const char *what, const char *a, const char *b)
{
    fprintf(stderr, "fuzz_json_patch invariant broken: %s\n  A: %.300s\n  B: %.300s\n", what,
            a ? a : "", b ? b : "");
    abort();
}

/* apply(diff(a, b), a) prints like b; reverse(b) equals a; the size check is exact. */
static void check_diff(const cJSON *a, const cJSON *b)
{
    sync__json_patch p;
    int rc = sync__json_diff(a, b, 0, SYNC__JSON_DIFF_REVERSE, &p);
    if (rc == SYNC_ENOMEM)
        return;
    if (rc != SYNC_OK)
        fail("diff failed", NULL, sync_error_last());
    char *ta = cJSON_PrintUnformatted(a), *tb = cJSON_PrintUnformatted(b);
    cJSON *got = cJSON_Duplicate(a, 1);
    if (!ta || !tb || !got)
        abort();
    if (sync__json_patch_apply_text(&got, p.text, p.len) != SYNC_OK)
        fail("the diff does not apply", ta, p.text);
    char *tg = cJSON_PrintUnformatted(got);
    if (!tg || strcmp(tg, tb) != 0)
        fail("apply(diff(a, b), a) does not print like b", ta, tb);
    cJSON *back = cJSON_Duplicate(b, 1);
    if (sync__json_patch_apply_text(&back, p.reverse, p.reverse_len) != SYNC_OK ||
        !sync__json_equal(back, a, 0))
        fail("the reverse patch does not take b back to a", p.reverse, tb);
    /* small objects come back with their member order (SYNC__JSON_PATCH_EXACT_REVERSE_BYTES) */
    if (strlen(ta) < 400 && !sync__json_equal(back, a, 1))
        fail("the reverse patch lost the member order of a small state", p.reverse, ta);
    sync__json_patch small = {0};
    if (p.len > 2 && sync__json_diff(a, b, p.len - 1, 0, &small) != SYNC_ETOOBIG)
        fail("the size check let a longer patch through", ta, tb);
    sync__json_patch_clear(&small);
    cJSON_Delete(back);
    cJSON_free(tg);
    cJSON_Delete(got);
    cJSON_free(ta);
    cJSON_free(tb);
    sync__json_patch_clear(&p);
}

/* `ops` applied to a copy of `doc`: unchanged on failure, consistent with diff on success. */
static void check_apply(const cJSON *doc, const char *ops, size_t len, const cJSON *parsed_ops)
{
    cJSON *d = cJSON_Duplicate(doc, 1);
    char *before = cJSON_PrintUnformatted(d);
    if (!d || !before)
        abort();
    int rc = parsed_ops ? sync__json_patch_apply(&d, parsed_ops)
                        : sync__json_patch_apply_text(&d, ops, len);
    if (rc != SYNC_OK) {
        if (!*sync_error_last())
            fail("an error without a message", before, NULL);
        char *after = cJSON_PrintUnformatted(d);
        if (!after || strcmp(after, before) != 0)
            fail("a failed patch changed the document", before, after);
        cJSON_free(after);
    } else {
        check_diff(doc, d);
    }
    cJSON_free(before);
    cJSON_Delete(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nl = memchr(text, '\n', size);
    size_t alen = nl ? (size_t)(nl - text) : size;
    const char *b = nl ? nl + 1 : text + size;
    size_t blen = nl ? size - alen - 1 : 0;

    cJSON *a = NULL, *bv = NULL;
    if (sync__json_parse(text, alen, 64, &a) != SYNC_OK)
        return 0;
    check_apply(a, b, blen, NULL);
    if (sync__json_parse(b, blen, 64, &bv) == SYNC_OK) {
        check_apply(a, NULL, 0, bv);
        check_diff(a, bv);
        check_diff(bv, a);
        cJSON_Delete(bv);
    }
    check_diff(a, a);
    cJSON_Delete(a);
    return 0;
}
