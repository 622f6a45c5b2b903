/* sync_engine_stats_json: the JSON object carries every field of sync_engine_stats under its C
 * name with the value sync_engine_get_stats gives, and NULL arguments are refused with a reason. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_counter.h"
#include "fake_conn.h"

static double number(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(item) ? item->valuedouble : -1;
}

/* After traffic (applied, dropped, frames out) every counter matches the struct's. */
static void fields_match_the_struct(void)
{
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"counter\":0}";
    opts.auto_broadcast = 1;
    sync_engine *engine = counter_engine(&opts, NULL, 1);
    REQUIRE(engine);
    fake_conn *client = fake_conn_new();
    CHECK_EQ_INT(sync_engine_handle_open(engine, client->conn), SYNC_OK);
    CHECK_EQ_INT(counter_send(engine, client->conn, "increment", 2), SYNC_OK);
    CHECK_EQ_INT(counter_send(engine, client->conn, "increment", 3), SYNC_OK);
    CHECK(counter_send(engine, client->conn, "nosuchtype", 1) < 0);

    sync_engine_stats s = {0};
    s.version = SYNC_ENGINE_STATS_VERSION;
    REQUIRE(sync_engine_get_stats(engine, &s) == SYNC_OK);
    char *text = sync_engine_stats_json(engine);
    REQUIRE(text != NULL);
    cJSON *obj = cJSON_Parse(text);
    REQUIRE(cJSON_IsObject(obj));
    CHECK_EQ_INT(cJSON_GetArraySize(obj), 15); /* every field but `version` */
    CHECK_EQ_INT(number(obj, "state_version"), 2);
    CHECK_EQ_INT(number(obj, "state_version"), s.state_version);
    CHECK_EQ_INT(number(obj, "connections"), 1);
    CHECK_EQ_INT(number(obj, "messages_in"), s.messages_in);
    CHECK_EQ_INT(number(obj, "messages_applied"), 2);
    CHECK_EQ_INT(number(obj, "messages_dropped"), 1);
    CHECK_EQ_INT(number(obj, "handler_errors"), s.handler_errors);
    CHECK(s.frames_out > 0);
    CHECK_EQ_INT(number(obj, "frames_out"), s.frames_out);
    CHECK_EQ_INT(number(obj, "bytes_out"), s.bytes_out);
    CHECK_EQ_INT(number(obj, "serialisations"), s.serialisations);
    CHECK_EQ_INT(number(obj, "saves"), s.saves);
    CHECK_EQ_INT(number(obj, "save_errors"), s.save_errors);
    CHECK_EQ_INT(number(obj, "last_save_us"), s.last_save_us);
    CHECK_EQ_INT(number(obj, "total_save_us"), s.total_save_us);
    CHECK_EQ_INT(number(obj, "state_bytes"), s.state_bytes);
    CHECK_EQ_INT(number(obj, "steps_timed_out"), 0);
    cJSON_Delete(obj);
    sync_free(text);

    sync_engine_handle_close(engine, client->conn);
    fake_conn_release(client);
    sync_engine_free(engine);
}

static void null_engine_is_refused(void)
{
    CHECK(sync_engine_stats_json(NULL) == NULL);
    CHECK(strstr(sync_error_last(), "engine") != NULL);
}

int main(void)
{
    RUN(fields_match_the_struct);
    RUN(null_engine_is_refused);
    return check_summary();
}
