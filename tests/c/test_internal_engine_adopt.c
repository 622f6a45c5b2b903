/* A replica engine adopts another node's versions (sync__engine_adopt_state, docs/SCALING.md):
 * over a real socket its client gets each adopted version as sent, a version not newer than the
 * engine's is dropped (a late or repeated change), a jump over versions reaches the client as
 * the whole state, and a handler-made change goes on from the adopted version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libsync/libsync.h>

#include "check.h"
#include "engine/engine_internal.h"
#include "server_fixture.h"

static cJSON *parse(const char *text)
{
    cJSON *v = cJSON_Parse(text);
    if (!v)
        abort();
    return v;
}

/* The next frame of `c`: its version and counter. */
static void expect_frame(ws_client *c, long long version, long long counter)
{
    char *text = ws_read_text(c, 5000);
    CHECK(text != NULL);
    if (!text)
        return;
    CHECK_EQ_INT(ws_json_int(text, "version"), version);
    CHECK_EQ_INT(ws_json_int(text, "counter"), counter);
    free(text);
}

static void replica_adopts_versions(void)
{
    sync_engine *engine = NULL;
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server != NULL);
    int port = sync_server_port(server);
    ws_client *c = fixture_join(port, "/");
    REQUIRE(c != NULL);

    CHECK_EQ_INT(sync__engine_adopt_state(engine, parse("{\"counter\":1}"), 1), SYNC_OK);
    expect_frame(c, 1, 1);
    /* A jump: versions 2 to 4 were applied elsewhere and missed here. */
    CHECK_EQ_INT(sync__engine_adopt_state(engine, parse("{\"counter\":5}"), 5), SYNC_OK);
    expect_frame(c, 5, 5);
    CHECK_EQ_INT(sync_engine_get_version(engine), 5);
    /* Late and repeated changes change nothing and send nothing. */
    CHECK_EQ_INT(sync__engine_adopt_state(engine, parse("{\"counter\":3}"), 3), SYNC_OK);
    CHECK_EQ_INT(sync__engine_adopt_state(engine, parse("{\"counter\":55}"), 5), SYNC_OK);
    CHECK_EQ_INT(sync__engine_adopt_state(engine, parse("{\"counter\":6}"), 6), SYNC_OK);
    expect_frame(c, 6, 6);
    CHECK_EQ_INT(sync_engine_get_version(engine), 6);
    CHECK_EQ_INT(fixture_counter_value(engine), 6);
    /* The engine's own changes go on from there. */
    CHECK_EQ_INT(ws_send_text(c, "{\"type\":\"increment\",\"amount\":2}"), 0);
    expect_frame(c, 7, 8);
    /* Bad input. */
    CHECK_EQ_INT(sync__engine_adopt_state(engine, parse("{}"), 0), SYNC_EINVAL);
    CHECK_EQ_INT(sync_engine_get_version(engine), 7);

    ws_client_free(c);
    sync_server_stop(server);
    sync_server_free(server);
    sync_engine_free(engine);
}

int main(void)
{
    RUN(replica_adopts_versions);
    return check_summary();
}
