/* Room names and the built-in room stores (SQLite, file): the name rule, the file-name encoding
 * (no name leaves the directory, none collides with another on a case-insensitive filesystem),
 * save/load/list/remove over many rooms, reopening, corrupt records kept aside, and engines of
 * several rooms of one store. Threads and stores that finish later: test_room_store_thread.c. */
#include <ctype.h>
#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter_engine.h"
#include "adapter_fs.h"
#include "check.h"
#include "room_stores.h"

/* ---- the stores, described once ---------------------------------------------------------------
 */

typedef struct kind {
    const char *name;
    /* The store kept under `dir` (the same dir opens the same store again). */
    sync_room_store *(*open)(const char *dir);
} kind;

static const kind kinds[] = {{"sqlite", rs_open_sqlite}, {"file", rs_open_file}};
#define KINDS (sizeof kinds / sizeof kinds[0])

static char *load_text(sync_room_store *store, const char *room, int64_t *version)
{
    char *json = NULL;
    int64_t v = -7;
    int rc = sync_room_store_load(store, room, &json, &v);
    if (rc != SYNC_OK)
        return NULL;
    if (version)
        *version = v;
    return json;
}

/* ---- names ------------------------------------------------------------------------------------
 */

static void name_rule(void)
{
    static const char *const good[] = {
        "a",    "room-1", "Room", "r o o m", "...", ".hidden", "a.b", "%2F",
        "café", "日本語", "🙂", "CON",     "x:y", "a?b#c",   "'\"", "~",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int rc = sync_room_name_check(good[i]);
        if (rc != SYNC_OK)
            printf("  refused good name \"%s\": %s\n", good[i], sync_error_last());
        CHECK_EQ_INT(rc, SYNC_OK);
    }
    static const char *const bad[] = {
        "",
        ".",
        "..",
        "a/b",
        "/",
        "../etc",
        "a\\b",
        "\\",
        "a\nb",
        "\t",
        "a\x7f",
        "\x1b[31m",
        "\xff",
        "\xc3",
        "\xc0\xaf",
        "\xed\xa0\x80",
        "\xf4\x90\x80\x80",
        "caf\xe9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = sync_room_name_check(bad[i]);
        CHECK_EQ_INT(rc, SYNC_EINVAL);
        CHECK(strlen(sync_error_last()) > 0);
    }
    CHECK_EQ_INT(sync_room_name_check(NULL), SYNC_EINVAL);

    char name[SYNC_ROOM_NAME_MAX + 2];
    memset(name, 'a', sizeof name);
    name[SYNC_ROOM_NAME_MAX] = '\0';
    CHECK_EQ_INT(SYNC_ROOM_NAME_MAX, 80);
    CHECK_EQ_INT(sync_room_name_check(name), SYNC_OK);
    name[SYNC_ROOM_NAME_MAX] = 'a';
    name[SYNC_ROOM_NAME_MAX + 1] = '\0';
    CHECK_EQ_INT(sync_room_name_check(name), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "80") != NULL);
    /* 80 bytes of two-byte characters is fine; one more byte is not. */
    char wide[SYNC_ROOM_NAME_MAX + 3] = "";
    for (int i = 0; i < SYNC_ROOM_NAME_MAX / 2; i++)
        strcat(wide, "\xc3\xa9");
    CHECK_EQ_INT(sync_room_name_check(wide), SYNC_OK);
    strcat(wide, "a");
    CHECK_EQ_INT(sync_room_name_check(wide), SYNC_EINVAL);

    char *huge = malloc(10 * 1024 + 1);
    REQUIRE(huge);
    memset(huge, 'x', 10 * 1024);
    huge[10 * 1024] = '\0';
    CHECK_EQ_INT(sync_room_name_check(huge), SYNC_EINVAL);
    free(huge);
}

/* Every entry point refuses a bad name before the store sees it. */
static void bad_names_never_reach_a_store(void)
{
    for (size_t k = 0; k < KINDS; k++) {
        char *dir = check_tmpdir(kinds[k].name);
        sync_room_store *store = kinds[k].open(dir);
        REQUIRE(store);
        static const char *const bad[] = {"..", ".", "a/b", "../../escape", "a\\b", "", "\x01"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char *json = (char *)"sentinel";
            int64_t v = 0;
            CHECK_EQ_INT(sync_room_store_save(store, bad[i], "{}", 1), SYNC_EINVAL);
            CHECK_EQ_INT(sync_room_store_load(store, bad[i], &json, &v), SYNC_EINVAL);
            CHECK(json == NULL);
            CHECK_EQ_INT(sync_room_store_remove(store, bad[i]), SYNC_EINVAL);
            sync_adapter *adapter = (sync_adapter *)1;
            CHECK_EQ_INT(sync_room_store_adapter(&adapter, store, bad[i]), SYNC_EINVAL);
            CHECK(adapter == NULL);
        }
        char *list = NULL;
        CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
        CHECK_EQ_STR(list, "[]");
        sync_free(list);
        sync_room_store_free(store);
        /* Nothing was written outside the store: the test directory holds the store only. */
        DIR *d = opendir(dir);
        REQUIRE(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' && (!e->d_name[1] || strcmp(e->d_name, "..") == 0))
                continue;
            CHECK(strncmp(e->d_name, "rooms", 5) == 0);
        }
        closedir(d);
        free(dir);
    }
}

/* The file names the file store made: all inside the directory, of the documented shape, and
 * distinct even when case is ignored (no upper-case letter outside a %XX escape). */
static void file_names_are_safe(void)
{
    static const char *const names[] = {
        "Room",
        "room",
        "ROOM",
        "rOOm",
        "...",
        ".hidden",
        "a b",
        "%41",
        "A",
        "a",
        "%",
        "CON",
        "café",
        "CAFÉ",
        "日本語",
        "-",
        "_",
        "a.json",
        "x.json.tmp-1-1",
        "zz",
    };
    const size_t count = sizeof names / sizeof names[0];
    char *dir = check_tmpdir("file-names");
    sync_room_store *store = rs_open_file(dir);
    REQUIRE(store);
    for (size_t i = 0; i < count; i++) {
        char state[64];
        snprintf(state, sizeof state, "{\"i\":%zu}", i);
        CHECK_EQ_INT(sync_room_store_save(store, names[i], state, (int64_t)i + 1), SYNC_OK);
    }
    char long_name[SYNC_ROOM_NAME_MAX + 1];
    memset(long_name, 'Z', SYNC_ROOM_NAME_MAX);
    long_name[SYNC_ROOM_NAME_MAX] = '\0';
    CHECK_EQ_INT(sync_room_store_save(store, long_name, "{\"long\":1}", 1), SYNC_OK);

    char *rooms_dir = afs_join(dir, "rooms");
    DIR *d = opendir(rooms_dir);
    REQUIRE(d);
    struct dirent *e;
    size_t files = 0;
    char folded[64][256];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t len = strlen(e->d_name);
        CHECK(len > 5 && strcmp(e->d_name + len - 5, ".json") == 0);
        CHECK(e->d_name[0] != '.');
        CHECK(len <= 255);
        for (size_t i = 0; i + 5 < len; i++) {
            char c = e->d_name[i];
            if (c == '%') {
                CHECK(i + 2 < len - 5 && isxdigit((unsigned char)e->d_name[i + 1]) &&
                      isxdigit((unsigned char)e->d_name[i + 2]));
                i += 2;
                continue;
            }
            if (isupper((unsigned char)c))
                printf("  upper-case letter in %s\n", e->d_name);
            CHECK(!isupper((unsigned char)c));
            CHECK(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '_' || c == '-');
        }
        if (files < 64) {
            snprintf(folded[files], sizeof folded[files], "%s", e->d_name);
            for (char *p = folded[files]; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            for (size_t j = 0; j < files; j++)
                CHECK(strcmp(folded[j], folded[files]) != 0);
        }
        files++;
    }
    closedir(d);
    CHECK_EQ_INT(files, count + 1);
    CHECK(afs_exists(rooms_dir));
    char *room_file = afs_join(rooms_dir, "%52oom.json");
    CHECK(afs_exists(room_file)); /* "Room": 'R' is 0x52 */
    free(room_file);
    room_file = afs_join(rooms_dir, "room.json");
    CHECK(afs_exists(room_file));
    free(room_file);

    /* Each name reads back its own record, and the list gives the names back. */
    for (size_t i = 0; i < count; i++) {
        char want[64];
        snprintf(want, sizeof want, "{\"i\":%zu}", i);
        int64_t v = 0;
        char *got = load_text(store, names[i], &v);
        CHECK_EQ_STR(got, want);
        CHECK_EQ_INT(v, (int64_t)i + 1);
        sync_free(got);
    }
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    cJSON *array = cJSON_Parse(list);
    CHECK_EQ_INT(cJSON_GetArraySize(array), (int)count + 1);
    for (size_t i = 0; i < count; i++) {
        int found = 0;
        for (cJSON *it = array ? array->child : NULL; it; it = it->next)
            found += strcmp(it->valuestring, names[i]) == 0;
        CHECK_EQ_INT(found, 1);
    }
    /* sorted by byte value */
    for (cJSON *it = array ? array->child : NULL; it && it->next; it = it->next)
        CHECK(strcmp(it->valuestring, it->next->valuestring) < 0);
    cJSON_Delete(array);
    sync_free(list);
    sync_room_store_free(store);
    free(rooms_dir);
    free(dir);
}

/* "Room" and "room" are two rows in SQLite too. */
static void sqlite_names_are_case_sensitive(void)
{
    char *dir = check_tmpdir("sqlite-case");
    sync_room_store *store = rs_open_sqlite(dir);
    REQUIRE(store);
    CHECK_EQ_INT(sync_room_store_save(store, "Room", "{\"who\":\"Room\"}", 1), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "room", "{\"who\":\"room\"}", 2), SYNC_OK);
    char *a = load_text(store, "Room", NULL), *b = load_text(store, "room", NULL);
    CHECK_EQ_STR(a, "{\"who\":\"Room\"}");
    CHECK_EQ_STR(b, "{\"who\":\"room\"}");
    sync_free(a);
    sync_free(b);
    sync_room_store_free(store);

    char *path = afs_join(dir, "rooms.sqlite");
    sqlite3 *db = NULL;
    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT name FROM websocket_rooms ORDER BY name", -1, &st,
                               NULL) == SQLITE_OK);
    CHECK_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 0), "Room");
    CHECK_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 0), "room");
    CHECK_EQ_INT(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    /* keyed: the name is the primary key */
    REQUIRE(sqlite3_prepare_v2(db,
                               "SELECT pk FROM pragma_table_info('websocket_rooms') "
                               "WHERE name = 'name'",
                               -1, &st, NULL) == SQLITE_OK);
    CHECK_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK_EQ_INT(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    REQUIRE(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK);
    CHECK_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(path);
    free(dir);
}

/* ---- many rooms --------------------------------------------------------------------------------
 */

static void many_rooms(const kind *k, int rooms)
{
    char *dir = check_tmpdir(k->name);
    sync_room_store *store = k->open(dir);
    REQUIRE(store);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char name[32], state[64];
    for (int i = 0; i < rooms; i++) {
        snprintf(name, sizeof name, "room-%05d", i);
        snprintf(state, sizeof state, "{\"n\":%d}", i);
        int rc = sync_room_store_save(store, name, state, i + 1);
        if (rc != SYNC_OK) {
            printf("  save %s: %s\n", name, sync_error_last());
            CHECK_EQ_INT(rc, SYNC_OK);
            break;
        }
    }
    long long save_ms = check_elapsed_ms(&t0);
    printf("  %s: %d saves in %lld ms\n", k->name, rooms, save_ms);
    /* saved twice: the second save replaces, it does not add */
    CHECK_EQ_INT(sync_room_store_save(store, "room-00007", "{\"n\":\"again\"}", 99), SYNC_OK);

    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    cJSON *array = cJSON_Parse(list);
    CHECK_EQ_INT(cJSON_GetArraySize(array), rooms);
    int i = 0;
    for (cJSON *it = array ? array->child : NULL; it; it = it->next, i++) {
        snprintf(name, sizeof name, "room-%05d", i);
        if (strcmp(it->valuestring, name) != 0) {
            CHECK_EQ_STR(it->valuestring, name);
            break;
        }
    }
    cJSON_Delete(array);
    sync_free(list);
    sync_room_store_free(store);

    /* A store opened again reads what was saved. */
    store = k->open(dir);
    REQUIRE(store);
    for (int j = 0; j < rooms; j += rooms / 100) {
        snprintf(name, sizeof name, "room-%05d", j);
        snprintf(state, sizeof state, "{\"n\":%d}", j);
        int64_t v = 0;
        char *got = load_text(store, name, &v);
        CHECK_EQ_STR(got, state);
        CHECK_EQ_INT(v, j + 1);
        sync_free(got);
    }
    int64_t v = 0;
    char *got = load_text(store, "room-00007", &v);
    CHECK_EQ_STR(got, "{\"n\":\"again\"}");
    CHECK_EQ_INT(v, 99);
    sync_free(got);
    /* never saved: NULL state, version 0 */
    char *none = (char *)"x";
    v = 5;
    CHECK_EQ_INT(sync_room_store_load(store, "never-saved", &none, &v), SYNC_OK);
    CHECK(none == NULL);
    CHECK_EQ_INT(v, 0);

    /* remove: gone from load and list; removing again (or a room never saved) is fine */
    for (int j = 0; j < rooms; j += 2) {
        snprintf(name, sizeof name, "room-%05d", j);
        CHECK_EQ_INT(sync_room_store_remove(store, name), SYNC_OK);
    }
    CHECK_EQ_INT(sync_room_store_remove(store, "room-00000"), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_remove(store, "never-saved"), SYNC_OK);
    none = (char *)"x";
    CHECK_EQ_INT(sync_room_store_load(store, "room-00000", &none, &v), SYNC_OK);
    CHECK(none == NULL);
    got = load_text(store, "room-00001", NULL);
    CHECK_EQ_STR(got, "{\"n\":1}");
    sync_free(got);
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    array = cJSON_Parse(list);
    CHECK_EQ_INT(cJSON_GetArraySize(array), rooms / 2);
    CHECK_EQ_STR(array && array->child ? array->child->valuestring : NULL, "room-00001");
    cJSON_Delete(array);
    sync_free(list);
    sync_room_store_free(store);
    free(dir);
}

static void sqlite_10000_rooms(void)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    many_rooms(&kinds[0], 10000);
    /* generous for a loaded machine; a save per fsync'd transaction would take minutes */
    CHECK(check_elapsed_ms(&t0) < 60000);
}

static void file_2000_rooms(void)
{
    many_rooms(&kinds[1], 2000);
}

/* ---- engines -----------------------------------------------------------------------------------
 */

static sync_engine *room_engine(sync_room_store *store, const char *room, aeng_errors *errors)
{
    sync_adapter *adapter = NULL;
    if (sync_room_store_adapter(&adapter, store, room) != SYNC_OK)
        return NULL;
    return aeng_new(adapter, "{\"fresh\":true}", errors);
}

static void engines_keep_their_rooms(void)
{
    static const char *const rooms[] = {"alpha", "Alpha", "β", "a b c"};
    enum { ROOMS = sizeof rooms / sizeof rooms[0] };
    for (size_t k = 0; k < KINDS; k++) {
        char *dir = check_tmpdir(kinds[k].name);
        sync_room_store *store = kinds[k].open(dir);
        REQUIRE(store);
        sync_engine *engines[ROOMS];
        aeng_errors errors[ROOMS];
        for (int i = 0; i < ROOMS; i++) {
            engines[i] = room_engine(store, rooms[i], &errors[i]);
            REQUIRE(engines[i]);
            char *state = aeng_state(engines[i]);
            CHECK_EQ_STR(state, "{\"fresh\":true}");
            sync_free(state);
        }
        for (int round = 1; round <= 3; round++)
            for (int i = 0; i < ROOMS; i++) {
                char json[64];
                snprintf(json, sizeof json, "{\"room\":%d,\"round\":%d}", i, round);
                CHECK_EQ_INT(sync_engine_set_state_json(engines[i], json, 0), SYNC_OK);
            }
        /* The engines hold the store; the caller's reference can go first. */
        sync_room_store_free(store);
        for (int i = 0; i < ROOMS; i++) {
            CHECK_EQ_INT(errors[i].count, 0);
            sync_engine_free(engines[i]);
        }

        store = kinds[k].open(dir);
        REQUIRE(store);
        for (int i = ROOMS - 1; i >= 0; i--) {
            engines[i] = room_engine(store, rooms[i], &errors[i]);
            REQUIRE(engines[i]);
            char want[64];
            snprintf(want, sizeof want, "{\"room\":%d,\"round\":3}", i);
            char *state = aeng_state(engines[i]);
            CHECK_EQ_STR(state, want);
            sync_free(state);
            CHECK_EQ_INT(sync_engine_get_version(engines[i]), 3);
            CHECK_EQ_INT(errors[i].count, 0);
        }
        /* a room adapter has no backup */
        CHECK_EQ_INT(sync_engine_create_backup(engines[0]), SYNC_EUNSUPPORTED);
        for (int i = 0; i < ROOMS; i++)
            sync_engine_free(engines[i]);
        char *list = NULL;
        CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
        CHECK_EQ_STR(list, "[\"Alpha\",\"a b c\",\"alpha\",\"β\"]");
        sync_free(list);
        sync_room_store_free(store);
        free(dir);
    }
}

/* ---- corrupt records ---------------------------------------------------------------------------
 */

static void file_corrupt_room_is_kept_aside(void)
{
    char *dir = check_tmpdir("file-corrupt");
    sync_room_store *store = rs_open_file(dir);
    REQUIRE(store);
    CHECK_EQ_INT(sync_room_store_save(store, "good", "{\"ok\":1}", 1), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "bad", "{\"ok\":2}", 1), SYNC_OK);
    char *rooms_dir = afs_join(dir, "rooms");
    char *bad = afs_join(rooms_dir, "bad.json");
    REQUIRE(afs_write(bad, "{\"state\":{\"ok\":2},\"vers") == 0);
    /* litter a killed save and an operator could leave: not rooms */
    char *tmp = afs_join(rooms_dir, "good.json.tmp-999999-1");
    char *other = afs_join(rooms_dir, "notes.txt");
    char *upper = afs_join(rooms_dir, "GOOD.json");
    afs_write(tmp, "half");
    afs_write(other, "x");
    afs_write(upper, "{\"state\":{},\"version\":1}\n");

    char *json = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_room_store_load(store, "bad", &json, &v), SYNC_ECORRUPT);
    CHECK(strstr(sync_error_last(), "kept aside") != NULL);
    CHECK(json == NULL);
    CHECK(!afs_exists(bad));
    CHECK_EQ_INT(afs_count(rooms_dir, "bad.json.corrupt-"), 1);
    /* now absent: a new save starts a new file, the kept copy stays */
    CHECK_EQ_INT(sync_room_store_load(store, "bad", &json, &v), SYNC_OK);
    CHECK(json == NULL);
    CHECK_EQ_INT(sync_room_store_save(store, "bad", "{\"ok\":3}", 2), SYNC_OK);
    CHECK_EQ_INT(afs_count(rooms_dir, "bad.json.corrupt-"), 1);

    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[\"bad\",\"good\"]");
    sync_free(list);

    /* The longest name: its file name is 245 bytes, and neither its temp files nor its kept copy
     * may pass NAME_MAX. */
    char long_name[SYNC_ROOM_NAME_MAX + 1];
    memset(long_name, 'Q', SYNC_ROOM_NAME_MAX);
    long_name[SYNC_ROOM_NAME_MAX] = '\0';
    CHECK_EQ_INT(sync_room_store_save(store, long_name, "{\"long\":1}", 1), SYNC_OK);
    char long_file[300] = "";
    for (int i = 0; i < SYNC_ROOM_NAME_MAX; i++)
        strcat(long_file, "%51");
    strcat(long_file, ".json");
    char *long_path = afs_join(rooms_dir, long_file);
    CHECK(afs_exists(long_path));
    REQUIRE(afs_write(long_path, "not json") == 0);
    CHECK_EQ_INT(sync_room_store_load(store, long_name, &json, &v), SYNC_ECORRUPT);
    CHECK(!afs_exists(long_path));
    CHECK_EQ_INT(afs_count(rooms_dir, "%51%51%51"), 1); /* the kept copy, name cut, marked ~ */
    char *kept = afs_find(rooms_dir, "%51%51%51");
    CHECK(kept && strstr(kept, "~.json.corrupt-") != NULL);
    free(kept);
    free(long_path);
    sync_room_store_free(store);

    /* A temp file of a killed save (a pid that is gone) is removed when the store starts; one of
     * a live process (this one) is left alone. */
    char *stale = afs_join(rooms_dir, ".tmp-999999-1");
    char mine_name[64];
    snprintf(mine_name, sizeof mine_name, ".tmp-%ld-77", (long)getpid());
    char *mine = afs_join(rooms_dir, mine_name);
    afs_write(stale, "half");
    afs_write(mine, "half");
    store = rs_open_file(dir);
    REQUIRE(store);
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[\"bad\",\"good\"]");
    sync_free(list);
    CHECK(!afs_exists(stale));
    CHECK(afs_exists(mine));
    unlink(mine);
    free(stale);
    free(mine);
    sync_room_store_free(store);
    free(tmp);
    free(other);
    free(upper);
    free(bad);
    free(rooms_dir);
    free(dir);
}

static void sqlite_corrupt_row_is_kept_aside(void)
{
    char *dir = check_tmpdir("sqlite-corrupt");
    sync_room_store *store = rs_open_sqlite(dir);
    REQUIRE(store);
    CHECK_EQ_INT(sync_room_store_save(store, "good", "{\"ok\":1}", 1), SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "bad", "{\"ok\":2}", 1), SYNC_OK);
    char *path = afs_join(dir, "rooms.sqlite");
    sqlite3 *db = NULL;
    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "UPDATE websocket_rooms SET state = '{\"ok\":' WHERE name = 'bad';"
                         "INSERT INTO websocket_rooms (name, state, version) "
                         "VALUES ('a/b', '{}', 1)",
                         NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);

    char *json = NULL;
    int64_t v = 0;
    CHECK_EQ_INT(sync_room_store_load(store, "bad", &json, &v), SYNC_ECORRUPT);
    CHECK(strstr(sync_error_last(), "websocket_rooms_corrupt") != NULL);
    CHECK(json == NULL);
    CHECK_EQ_INT(sync_room_store_load(store, "bad", &json, &v), SYNC_OK);
    CHECK(json == NULL);
    char *good = load_text(store, "good", NULL);
    CHECK_EQ_STR(good, "{\"ok\":1}");
    sync_free(good);
    /* a row under a name no room can have is not listed */
    char *list = NULL;
    CHECK_EQ_INT(sync_room_store_list(store, &list), SYNC_OK);
    CHECK_EQ_STR(list, "[\"good\"]");
    sync_free(list);
    sync_room_store_free(store);

    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT name, state FROM websocket_rooms_corrupt", -1, &st,
                               NULL) == SQLITE_OK);
    CHECK_EQ_INT(sqlite3_step(st), SQLITE_ROW);
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 0), "bad");
    CHECK_EQ_STR((const char *)sqlite3_column_text(st, 1), "{\"ok\":");
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(path);
    free(dir);
}

/* ---- options -----------------------------------------------------------------------------------
 */

static void options(void)
{
    sync_room_store *store = (sync_room_store *)1;
    sync_sqlite_options sq = SYNC_SQLITE_OPTIONS_INIT;
    CHECK_EQ_INT(sync_room_store_sqlite_new(&store, &sq), SYNC_EINVAL); /* no path */
    CHECK(store == NULL);
    sq.path = "/tmp/x.sqlite";
    sq.table_name = "rooms\"; DROP TABLE x; --";
    CHECK_EQ_INT(sync_room_store_sqlite_new(&store, &sq), SYNC_EINVAL);
    sq.table_name = NULL;
    sq.version = 99;
    CHECK_EQ_INT(sync_room_store_sqlite_new(&store, &sq), SYNC_EINVAL);
    CHECK_EQ_INT(sync_room_store_sqlite_new(&store, NULL), SYNC_EINVAL);
    CHECK_EQ_INT(sync_room_store_sqlite_new(NULL, &sq), SYNC_EINVAL);

    sync_file_rooms_options fo;
    CHECK_EQ_INT(sync_file_rooms_options_init(&fo, SYNC_FILE_ROOMS_OPTIONS_VERSION), SYNC_OK);
    CHECK_EQ_INT(fo.fsync, 1);
    CHECK(fo.dir == NULL);
    CHECK_EQ_INT(sync_file_rooms_options_init(&fo, 2), SYNC_EINVAL);
    CHECK_EQ_INT(sync_room_store_file_new(&store, &fo), SYNC_EINVAL); /* no dir */
    fo.dir = "";
    CHECK_EQ_INT(sync_room_store_file_new(&store, &fo), SYNC_EINVAL);
    CHECK_EQ_INT(sync_room_store_file_new(&store, NULL), SYNC_EINVAL);

    /* a custom table name */
    char *dir = check_tmpdir("sqlite-table");
    char *path = afs_join(dir, "db.sqlite");
    sq = (sync_sqlite_options)SYNC_SQLITE_OPTIONS_INIT;
    sq.path = path;
    sq.table_name = "my_rooms";
    REQUIRE(sync_room_store_sqlite_new(&store, &sq) == SYNC_OK);
    CHECK_EQ_INT(sync_room_store_save(store, "r", "{}", 1), SYNC_OK);
    sync_room_store_free(store);
    sqlite3 *db = NULL;
    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK_EQ_INT(sqlite3_exec(db, "SELECT * FROM my_rooms", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    free(path);
    free(dir);

    /* not JSON: refused before the store */
    dir = check_tmpdir("file-json");
    store = rs_open_file(dir);
    REQUIRE(store);
    CHECK_EQ_INT(sync_room_store_save(store, "r", "{nope", 1), SYNC_EPARSE);
    CHECK_EQ_INT(sync_room_store_save(store, "r", NULL, 1), SYNC_EINVAL);
    CHECK_EQ_INT(sync_room_store_list(store, NULL), SYNC_EINVAL);
    sync_room_store_free(store);
    sync_room_store_free(NULL);
    free(dir);
}

int main(void)
{
    RUN(name_rule);
    RUN(bad_names_never_reach_a_store);
    RUN(file_names_are_safe);
    RUN(sqlite_names_are_case_sensitive);
    RUN(sqlite_10000_rooms);
    RUN(file_2000_rooms);
    RUN(engines_keep_their_rooms);
    RUN(file_corrupt_room_is_kept_aside);
    RUN(sqlite_corrupt_row_is_kept_aside);
    RUN(options);
    return check_summary();
}
