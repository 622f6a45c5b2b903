/*
 * libFuzzer target: loading the file adapter's store. The input is the whole content of the JSON
 * file. It is loaded by the adapter directly and by a new engine over the same file. Invariants:
 * a load either succeeds with a state that is JSON, or reports SYNC_ECORRUPT/SYNC_EIO having kept
 * the file aside (never left in place to be overwritten); an engine always starts, serving JSON.
 */
#include "fuzz_support.h"

#include <libsync/libsync.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[] = "/tmp/libsync-fuzz-file-XXXXXX";
static char g_path[sizeof g_dir + 16];

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_store_file invariant broken: %s\n", what);
    abort();
}

/* Removes everything the adapter left (corrupt copies, the store itself). */
static void clean_dir(void)
{
    DIR *d = opendir(g_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[sizeof g_dir + 300];
        snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
}

static void write_store(const uint8_t *data, size_t size)
{
    FILE *f = fopen(g_path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        fail("cannot write the store");
}

static sync_adapter *adapter(void)
{
    sync_file_options fo = SYNC_FILE_OPTIONS_INIT;
    fo.file_path = g_path;
    fo.fsync = 0;
    sync_adapter *a = NULL;
    if (sync_adapter_file_new(&a, &fo) != SYNC_OK)
        fail("cannot create the adapter");
    return a;
}

static void remove_dir(void)
{
    clean_dir();
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_scratch_dir(g_dir, "store.json", g_path, sizeof g_path, fail);
    atexit(remove_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clean_dir();
    write_store(data, size);
    sync_adapter *a = adapter();
    char *json = NULL;
    int64_t version = -7;
    int rc = fuzz_init_and_load(a, &json, &version);
    if (rc == SYNC_OK) {
        if (!json)
            fail("an existing store loaded as never saved");
        cJSON *state = cJSON_Parse(json);
        if (!state)
            fail("a loaded state is not JSON");
        cJSON_Delete(state);
        if (access(g_path, F_OK) != 0)
            fail("a good store was moved away");
    } else if (rc == SYNC_ECORRUPT) {
        if (access(g_path, F_OK) == 0)
            fail("a corrupt store was left where the next save overwrites it");
    } else {
        fail("a readable store failed to load for another reason than corruption");
    }
    sync_adapter_free(a);

    /* The same bytes through an engine: it always starts and serves JSON. */
    clean_dir();
    write_store(data, size);
    fuzz_check_engine_start(adapter(), rc == SYNC_OK ? json : NULL, version, fail);
    sync_free(json);
    return 0;
}
