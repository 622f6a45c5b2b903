/* What a refusal says: a step that refuses a message without a text of its own is reported with
 * a text that does not name another kind of step (a handler's refusal once read "rejected by
 * validation or middleware"), and the context names the step that refused. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fake_conn.h"

static int refuse(sync_msg *msg, void *userdata)
{
    (void)msg;
    (void)userdata;
    return SYNC_EREJECTED;
}

static void handler_refusal(void)
{
    hook_log log;
    memset(&log, 0, sizeof log);
    sync_hooks hooks = hook_log_hooks(&log);
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":1}";
    opts.hooks = &hooks;
    sync_engine *e = NULL;
    REQUIRE(sync_engine_new(&e, &opts) == SYNC_OK);
    CHECK_EQ_INT(sync_engine_on(e, "increment", refuse, NULL, NULL), SYNC_OK);
    fake_conn *fake = fake_conn_new();
    REQUIRE(fake);
    CHECK_EQ_INT(sync_engine_handle_open(e, fake->conn), SYNC_OK);
    CHECK_EQ_INT(sync_engine_handle_message(e, fake->conn, "{\"type\":\"increment\"}", 20),
                 SYNC_EREJECTED);
    CHECK_EQ_INT(log.errors, 1);
    CHECK_EQ_INT(log.last_error_status, SYNC_EREJECTED);
    CHECK(strcmp(log.last_error_context, "handler:increment") == 0);
    CHECK(strstr(log.last_error_message, "rejected") != NULL);
    CHECK(strstr(log.last_error_message, "validation") == NULL);
    CHECK(strstr(log.last_error_message, "middleware") == NULL);
    CHECK(strstr(sync_strerror(SYNC_EREJECTED), "validation") == NULL);
    sync_engine_handle_close(e, fake->conn);
    fake_conn_release(fake);
    sync_engine_free(e);
}

int main(void)
{
    RUN(handler_refusal);
    return check_summary();
}
