/* Rooms on the SQLite room store with SYNC_PERSIST_BEFORE_SEND, over real sockets on a real
 * database file: the rooms that change in one loop turn are saved by one transaction; no client
 * ever receives a state the database does not hold; a batch SQLite refuses (its file locked by
 * someone else, or one row refused) is reported by each room like a failed save, the other rooms'
 * rows are still written, and the server goes on serving. The database is read by a connection of
 * the test's own. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
enum { ROOMS = 32 };
#else
enum { ROOMS = 64 };
#endif

/* Errors the rooms' engines reported, by context. */
static atomic_int sync_errors, other_errors;

static void count_error(sync_engine *engine, int status, const char *message, const char *context,
                        sync_conn *conn, void *userdata)
{
    (void)engine;
    (void)status;
    (void)message;
    (void)conn;
    (void)userdata;
    atomic_fetch_add(strcmp(context, "sync") == 0 ? &sync_errors : &other_errors, 1);
}

/* Holds the service thread: what clients send meanwhile is read in the turn after it. */
static int on_nap(sync_msg *msg, void *userdata)
{
    (void)msg;
    (void)userdata;
    usleep(400 * 1000);
    return SYNC_OK;
}

static int counter_room(sync_room_setup *setup, void *userdata)
{
    (void)userdata;
    sync_engine *engine = sync_room_setup_engine(setup);
    sync_hooks hooks = SYNC_HOOKS_INIT;
    hooks.on_error = count_error;
    if (fixture_add_counter_handlers(engine) != SYNC_OK ||
        sync_engine_on(engine, "nap", on_nap, NULL, NULL) != SYNC_OK ||
        sync_engine_set_hooks(engine, &hooks) != SYNC_OK)
        return SYNC_EINVAL;
    return sync_room_setup_set_initial_state_json(setup, "{\"counter\":0}");
}

typedef struct fixture {
    char *dir;
    char db[512];
    sync_room_store *store;
    sync_server *server;
    sync_rooms *rooms;
    int port;
    sqlite3 *reader; /* the test's own connection to the database */
} fixture;

static int start(fixture *f, const char *tag, int busy_timeout_ms)
{
    memset(f, 0, sizeof *f);
    atomic_store(&sync_errors, 0);
    atomic_store(&other_errors, 0);
    f->dir = check_tmpdir(tag);
    if (!f->dir)
        return -1;
    snprintf(f->db, sizeof f->db, "%s/rooms.sqlite", f->dir);
    sync_sqlite_options so = SYNC_SQLITE_OPTIONS_INIT;
    so.path = f->db;
    so.busy_timeout_ms = busy_timeout_ms;
    if (sync_room_store_sqlite_new(&f->store, &so) != SYNC_OK)
        return -1;
    sync_engine_options eo = SYNC_ENGINE_OPTIONS_INIT;
    eo.persist_mode = SYNC_PERSIST_BEFORE_SEND;
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    opts.room_idle_ms = -1;
    sync_rooms_options ro = SYNC_ROOMS_OPTIONS_INIT;
    ro.setup = counter_room;
    ro.engine_options = &eo;
    ro.store = f->store;
    f->server = fixture_rooms_server(&opts, &ro, &f->rooms);
    if (!f->server)
        return -1;
    f->port = sync_server_port(f->server);
    /* the store makes its database (WAL) first */
    char *names = NULL;
    if (sync_room_store_list(f->store, &names) != SYNC_OK)
        return -1;
    sync_free(names);
    if (sqlite3_open(f->db, &f->reader) != SQLITE_OK)
        return -1;
    sqlite3_busy_timeout(f->reader, 10000);
    /* reads the schema: the connection learns the database is in WAL mode */
    return sqlite3_exec(f->reader, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL) ==
                   SQLITE_OK
               ? 0
               : -1;
}

static void stop(fixture *f)
{
    sync_server_free(f->server);
    sync_room_store_free(f->store);
    sqlite3_close(f->reader);
    static const char *const files[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s%s", f->db, files[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f->dir);
}

/* The counter of room `room`'s row as committed, -1 when it has none. */
static long long stored_counter(sqlite3 *db, const char *room)
{
    sqlite3_stmt *st = NULL;
    long long counter = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT json_extract(state, '$.counter') FROM websocket_rooms "
                           "WHERE name = ?1",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_bind_text(st, 1, room, -1, SQLITE_STATIC) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER)
        counter = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return counter;
}

/* Frames in the WAL since it was last reset (each transaction appends the pages it changed). */
static int wal_frames(sqlite3 *db, int mode)
{
    int log = -1, done = -1;
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, mode, &log, &done);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "  checkpoint: %s (%d %d)\n", sqlite3_errmsg(db), log, done);
        return -1;
    }
    return log;
}

/* Clients of rooms r-0 .. r-(n-1), one each, and each room saved once (its row exists). */
static int join_rooms(fixture *f, ws_client **clients, int n)
{
    for (int i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "/rooms/r-%d", i);
        clients[i] = fixture_join(f->port, path);
        if (!clients[i] || fixture_increment(clients[i], "counter", 1) != 0)
            return -1;
    }
    return 0;
}

/* Holds the service thread (a "nap" in room gate), and meanwhile sends one increment to every
 * client: they are all read in one turn. */
static void burst_in_one_turn(ws_client *gate, ws_client **clients, int n)
{
    CHECK_EQ_INT(ws_send_text(gate, "{\"type\":\"nap\"}"), 0);
    usleep(100 * 1000);
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(ws_send_text(clients[i], "{\"type\":\"increment\"}"), 0);
}

static void rooms_changed_in_one_turn_are_saved_by_one_transaction(void)
{
    fixture f;
    REQUIRE(start(&f, "rooms_commit_one", 5000) == 0);
    ws_client *clients[ROOMS] = {0};
    ws_client *gate = fixture_join(f.port, "/rooms/gate");
    REQUIRE(gate);
    REQUIRE(join_rooms(&f, clients, ROOMS) == 0);
    /* an empty WAL: what the burst writes is all it will hold */
    CHECK_EQ_INT(wal_frames(f.reader, SQLITE_CHECKPOINT_TRUNCATE), 0);

    burst_in_one_turn(gate, clients, ROOMS);
    for (int i = 0; i < ROOMS; i++)
        CHECK_EQ_INT(fixture_read_until(clients[i], "counter", 2, 10000), 0);
    for (int i = 0; i < ROOMS; i++) {
        char room[32];
        snprintf(room, sizeof room, "r-%d", i);
        CHECK_EQ_INT(stored_counter(f.reader, room), 2);
    }
    /* A transaction per room appends at least a frame each (the page of its row): ROOMS frames
     * or more. One transaction appends each page it changed once (a few pages hold every row). */
    int frames = wal_frames(f.reader, SQLITE_CHECKPOINT_PASSIVE);
    fprintf(stderr, "  %d rooms saved in one turn: %d WAL frames\n", ROOMS, frames);
    CHECK(frames > 0);
    CHECK(frames < ROOMS / 4);
    CHECK_EQ_INT(atomic_load(&sync_errors), 0);

    for (int i = 0; i < ROOMS; i++)
        ws_client_free(clients[i]);
    ws_client_free(gate);
    stop(&f);
}

/* Clients that send increments with a window of 4 in many rooms at once; after every frame a
 * client receives, the room's committed row already holds that counter (or a later one). */
static void no_client_receives_a_state_that_is_not_committed(void)
{
    fixture f;
    REQUIRE(start(&f, "rooms_commit_durable", 5000) == 0);
    enum { DURABLE_ROOMS = 16, SENDS = 40, WINDOW = 4 };
    ws_client *senders[DURABLE_ROOMS] = {0}, *watchers[DURABLE_ROOMS] = {0};
    for (int i = 0; i < DURABLE_ROOMS; i++) {
        char path[64];
        snprintf(path, sizeof path, "/rooms/d-%d", i);
        senders[i] = fixture_join(f.port, path);
        watchers[i] = fixture_join(f.port, path);
        REQUIRE(senders[i] && watchers[i]);
    }
    int sent[DURABLE_ROOMS] = {0};
    long long seen[DURABLE_ROOMS] = {0}, watched[DURABLE_ROOMS] = {0};
    int frames = 0, behind = 0;
    for (int i = 0; i < DURABLE_ROOMS; i++)
        for (; sent[i] < WINDOW; sent[i]++)
            CHECK_EQ_INT(ws_send_text(senders[i], "{\"type\":\"increment\"}"), 0);
    /* round robin over the rooms: each sender keeps WINDOW increments in flight */
    for (int round = 0; round < SENDS * 4; round++) {
        int busy = 0;
        for (int i = 0; i < DURABLE_ROOMS; i++) {
            if (seen[i] >= SENDS)
                continue;
            busy = 1;
            char room[32];
            snprintf(room, sizeof room, "d-%d", i);
            char *text = ws_read_text(senders[i], 10000);
            REQUIRE(text);
            long long counter = ws_json_int(text, "counter");
            free(text);
            /* read at once, before anything else is sent: the frame's state is committed */
            long long stored = stored_counter(f.reader, room);
            frames++;
            if (stored < counter) {
                behind++;
                fprintf(stderr, "  room %s: received %lld, committed %lld\n", room, counter,
                        stored);
            }
            if (counter > seen[i]) {
                for (long long k = seen[i]; k < counter && sent[i] < SENDS; k++, sent[i]++)
                    CHECK_EQ_INT(ws_send_text(senders[i], "{\"type\":\"increment\"}"), 0);
                seen[i] = counter;
            }
        }
        if (!busy)
            break;
    }
    for (int i = 0; i < DURABLE_ROOMS; i++) {
        CHECK_EQ_INT(seen[i], SENDS);
        char room[32];
        snprintf(room, sizeof room, "d-%d", i);
        /* the watchers too: every frame they got is committed */
        while (watched[i] < SENDS) {
            char *text = ws_read_text(watchers[i], 10000);
            if (!text)
                break;
            long long counter = ws_json_int(text, "counter");
            free(text);
            behind += stored_counter(f.reader, room) < counter;
            frames++;
            watched[i] = counter;
        }
        CHECK_EQ_INT(watched[i], SENDS);
    }
    fprintf(stderr, "  %d frames checked against the database\n", frames);
    CHECK_EQ_INT(behind, 0);
    CHECK_EQ_INT(atomic_load(&sync_errors), 0);
    for (int i = 0; i < DURABLE_ROOMS; i++) {
        ws_client_free(senders[i]);
        ws_client_free(watchers[i]);
    }
    stop(&f);
}

/* Someone else holds the database's write lock: the turn's transaction cannot begin. Every room
 * reports its failed save (context "sync"), its clients still get the state (a failed save is
 * served, as ever), nothing hangs; once the lock goes, the next changes are committed. */
static void a_batch_that_cannot_commit_is_reported_by_every_room(void)
{
    fixture f;
    REQUIRE(start(&f, "rooms_commit_locked", 50) == 0);
    enum { LOCKED_ROOMS = 8 };
    ws_client *clients[LOCKED_ROOMS] = {0};
    ws_client *gate = fixture_join(f.port, "/rooms/gate");
    REQUIRE(gate);
    REQUIRE(join_rooms(&f, clients, LOCKED_ROOMS) == 0);
    CHECK_EQ_INT(sqlite3_exec(f.reader, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    burst_in_one_turn(gate, clients, LOCKED_ROOMS);
    for (int i = 0; i < LOCKED_ROOMS; i++)
        CHECK_EQ_INT(fixture_read_until(clients[i], "counter", 2, 10000), 0);
    CHECK(atomic_load(&sync_errors) >= LOCKED_ROOMS);
    CHECK_EQ_INT(atomic_load(&other_errors), 0);
    CHECK_EQ_INT(sqlite3_exec(f.reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < LOCKED_ROOMS; i++) {
        char room[32];
        snprintf(room, sizeof room, "r-%d", i);
        CHECK_EQ_INT(stored_counter(f.reader, room), 1); /* the failed saves wrote nothing */
    }

    int before = atomic_load(&sync_errors);
    burst_in_one_turn(gate, clients, LOCKED_ROOMS);
    for (int i = 0; i < LOCKED_ROOMS; i++) {
        CHECK_EQ_INT(fixture_read_until(clients[i], "counter", 3, 10000), 0);
        char room[32];
        snprintf(room, sizeof room, "r-%d", i);
        CHECK_EQ_INT(stored_counter(f.reader, room), 3);
    }
    CHECK_EQ_INT(atomic_load(&sync_errors), before);
    for (int i = 0; i < LOCKED_ROOMS; i++)
        ws_client_free(clients[i]);
    ws_client_free(gate);
    stop(&f);
}

/* SQLite refuses one room's row (a trigger of the test's): that room reports its failed save,
 * and the rooms saved in the same turn are committed all the same. */
static void one_refused_row_does_not_fail_the_others(void)
{
    fixture f;
    REQUIRE(start(&f, "rooms_commit_refused", 5000) == 0);
    enum { REFUSED_ROOMS = 8 };
    ws_client *clients[REFUSED_ROOMS] = {0};
    ws_client *gate = fixture_join(f.port, "/rooms/gate");
    REQUIRE(gate);
    REQUIRE(join_rooms(&f, clients, REFUSED_ROOMS) == 0);
    CHECK_EQ_INT(sqlite3_exec(f.reader,
                              "CREATE TRIGGER refuse BEFORE UPDATE ON websocket_rooms "
                              "WHEN NEW.name = 'r-3' BEGIN SELECT RAISE(ABORT, 'refused'); END",
                              NULL, NULL, NULL),
                 SQLITE_OK);

    burst_in_one_turn(gate, clients, REFUSED_ROOMS);
    for (int i = 0; i < REFUSED_ROOMS; i++)
        CHECK_EQ_INT(fixture_read_until(clients[i], "counter", 2, 10000), 0);
    for (int i = 0; i < REFUSED_ROOMS; i++) {
        char room[32];
        snprintf(room, sizeof room, "r-%d", i);
        CHECK_EQ_INT(stored_counter(f.reader, room), i == 3 ? 1 : 2);
    }
    CHECK_EQ_INT(atomic_load(&sync_errors), 1);
    CHECK_EQ_INT(atomic_load(&other_errors), 0);
    CHECK_EQ_INT(sqlite3_exec(f.reader, "DROP TRIGGER refuse", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < REFUSED_ROOMS; i++)
        ws_client_free(clients[i]);
    ws_client_free(gate);
    stop(&f);
}

/* Many rooms due in one turn while another room floods: the turn saves them all, walks its share,
 * gives way and puts the rooms left back on the due list (in one splice); the turns after it walk
 * them. Every client of every room gets every counter, each room's row holds it. */
static void a_turn_that_gives_way_leaves_no_room_behind(void)
{
    fixture f;
    REQUIRE(start(&f, "rooms_commit_yield", 5000) == 0);
    enum { YIELD_ROOMS = ROOMS / 2, PER_ROOM = 4, YIELD_ROUNDS = 3 };
    ws_client *clients[YIELD_ROOMS][PER_ROOM] = {{NULL}};
    ws_client *gate = fixture_join(f.port, "/rooms/gate");
    REQUIRE(gate);
    for (int r = 0; r < YIELD_ROOMS; r++) {
        char path[64];
        snprintf(path, sizeof path, "/rooms/y-%d", r);
        for (int i = 0; i < PER_ROOM; i++) {
            clients[r][i] = fixture_join(f.port, path);
            REQUIRE(clients[r][i]);
        }
    }
    ws_client *busy = fixture_join(f.port, "/rooms/busy");
    REQUIRE(busy);
    fixture_flood *flood = fixture_flood_start(busy);
    REQUIRE(flood);
    int missed = 0;
    for (int k = 1; k <= YIELD_ROUNDS; k++) {
        ws_client *first[YIELD_ROOMS];
        for (int r = 0; r < YIELD_ROOMS; r++)
            first[r] = clients[r][0];
        burst_in_one_turn(gate, first, YIELD_ROOMS);
        /* (a room left behind fails the first read that waits for it: no need to wait more) */
        for (int r = 0; r < YIELD_ROOMS && !missed; r++)
            for (int i = 0; i < PER_ROOM && !missed; i++)
                missed += fixture_read_until(clients[r][i], "counter", k, 10000) != 0;
    }
    long long flooded = fixture_flood_stop(flood);
    CHECK_EQ_INT(missed, 0);
    CHECK(flooded > 1000);
    for (int r = 0; r < YIELD_ROOMS; r++) {
        char room[32];
        snprintf(room, sizeof room, "y-%d", r);
        CHECK_EQ_INT(stored_counter(f.reader, room), YIELD_ROUNDS);
    }
    CHECK_EQ_INT(atomic_load(&sync_errors), 0);
    for (int r = 0; r < YIELD_ROOMS; r++)
        for (int i = 0; i < PER_ROOM; i++)
            ws_client_free(clients[r][i]);
    ws_client_free(busy);
    ws_client_free(gate);
    stop(&f);
}

int main(void)
{
    RUN(rooms_changed_in_one_turn_are_saved_by_one_transaction);
    RUN(no_client_receives_a_state_that_is_not_committed);
    RUN(a_batch_that_cannot_commit_is_reported_by_every_room);
    RUN(one_refused_row_does_not_fail_the_others);
    RUN(a_turn_that_gives_way_leaves_no_room_behind);
    return check_summary();
}
