/* Connection handles: references (creator, engine while open, queued messages), free_userdata
 * exactly once with the last one, ids, identity, explicit sends and closes. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"

typedef struct counted {
    int sends;
    int closes;
    int frees;
} counted;

static int c_send(void *userdata, const char *text, size_t len)
{
    (void)text;
    (void)len;
    ((counted *)userdata)->sends++;
    return SYNC_OK;
}

static void c_close(void *userdata, int code, const char *reason)
{
    (void)code;
    (void)reason;
    ((counted *)userdata)->closes++;
}

static void c_free(void *userdata)
{
    ((counted *)userdata)->frees++;
}

static sync_conn *counted_conn(counted *c)
{
    sync_conn_callbacks cb = SYNC_CONN_CALLBACKS_INIT;
    cb.send = c_send;
    cb.close = c_close;
    cb.free_userdata = c_free;
    sync_conn *conn = NULL;
    if (sync_conn_new(&conn, &cb, c) != SYNC_OK)
        abort();
    return conn;
}

static void last_reference_frees_once(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    counted c = {0};
    sync_conn *conn = counted_conn(&c);
    CHECK(sync_conn_userdata(conn) == &c);
    CHECK_EQ_INT(sync_engine_handle_open(e, conn), SYNC_OK);
    CHECK_EQ_INT(c.sends, 1);
    sync_conn_free(conn); /* the creator lets go; the engine still holds it */
    CHECK_EQ_INT(c.frees, 0);
    CHECK_EQ_INT(sync_engine_broadcast_state(e), SYNC_OK);
    CHECK_EQ_INT(c.sends, 2);
    CHECK_EQ_INT(sync_engine_handle_close(e, conn), SYNC_OK);
    CHECK_EQ_INT(c.frees, 1);
    sync_engine_free(e);
    CHECK_EQ_INT(c.frees, 1);
    CHECK_EQ_INT(c.closes, 0);
}

static sync_msg *parked;

static void queued_message_keeps_connection(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    sync_engine_on(e, "slow", fake_park, &parked, NULL);
    counter_register(e, 0);
    counted c = {0};
    sync_conn *conn = counted_conn(&c);
    sync_engine_handle_open(e, conn);
    parked = NULL;
    CHECK_EQ_INT(sync_engine_handle_message(e, conn, "{\"type\":\"slow\"}", 15), SYNC_PENDING);
    CHECK_EQ_INT(counter_send(e, conn, "increment", 1), SYNC_PENDING);
    sync_engine_handle_close(e, conn);
    sync_conn_free(conn);
    CHECK_EQ_INT(c.frees, 0); /* the pending and the queued message still hold it */
    REQUIRE(parked != NULL);
    CHECK(sync_msg_conn(parked) == conn);
    sync_msg_complete(parked, SYNC_OK);
    CHECK_EQ_INT(c.frees, 1);
    CHECK_EQ_INT(counter_value(e), 1); /* a message that arrived before the close still counts */
    sync_engine_free(e);
}

static void ids_identity_send_close(void)
{
    counted a = {0}, b = {0};
    sync_conn *ca = counted_conn(&a);
    sync_conn *cb = counted_conn(&b);
    CHECK(sync_conn_id(ca) != 0);
    CHECK(sync_conn_id(ca) != sync_conn_id(cb));
    CHECK(sync_conn_identity(ca) == NULL);
    CHECK_EQ_INT(sync_conn_set_identity(ca, "{\"user\":\"ann\"}"), SYNC_OK);
    CHECK_EQ_STR(sync_conn_identity(ca), "{\"user\":\"ann\"}");
    CHECK_EQ_INT(sync_conn_set_identity(ca, NULL), SYNC_OK);
    CHECK(sync_conn_identity(ca) == NULL);
    CHECK_EQ_INT(sync_conn_send(ca, "hi", 2), SYNC_OK);
    CHECK_EQ_INT(a.sends, 1);
    CHECK(sync_conn_ref(ca) == ca);
    CHECK_EQ_INT(sync_conn_close(ca, 1000, "bye"), SYNC_OK);
    CHECK_EQ_INT(sync_conn_close(ca, 1000, "bye"), SYNC_OK);
    CHECK_EQ_INT(a.closes, 1);
    CHECK_EQ_INT(sync_conn_send(ca, "hi", 2), SYNC_ECLOSED);
    sync_conn_free(ca);
    CHECK_EQ_INT(a.frees, 0);
    sync_conn_free(ca);
    CHECK_EQ_INT(a.frees, 1);
    sync_conn_free(cb);
    CHECK_EQ_INT(b.frees, 1);
}

static void connection_in_two_engines_refused(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    sync_engine *e1 = NULL, *e2 = NULL;
    REQUIRE(sync_engine_new(&e1, &opts) == SYNC_OK);
    REQUIRE(sync_engine_new(&e2, &opts) == SYNC_OK);
    counted c = {0};
    sync_conn *conn = counted_conn(&c);
    CHECK_EQ_INT(sync_engine_handle_open(e1, conn), SYNC_OK);
    CHECK_EQ_INT(sync_engine_handle_open(e2, conn), SYNC_ESTATE);
    CHECK_EQ_INT(sync_engine_connection_count(e2), 0);
    CHECK_EQ_INT(sync_engine_handle_close(e2, conn), SYNC_OK); /* not its connection: no-op */
    CHECK_EQ_INT(sync_engine_connection_count(e1), 1);
    sync_engine_free(e1);
    sync_engine_free(e2);
    CHECK_EQ_INT(c.closes, 1);
    sync_conn_free(conn);
    CHECK_EQ_INT(c.frees, 1);
}

int main(void)
{
    RUN(last_reference_frees_once);
    RUN(queued_message_keeps_connection);
    RUN(ids_identity_send_close);
    RUN(connection_in_two_engines_refused);
    return check_summary();
}
