/*
 * A program built outside the libsync tree, against the installed library only: it finds the
 * headers and the library through pkg-config (Makefile) or CMake's find_package (CMakeLists.txt).
 * It applies a few messages to an engine and checks the result, so a broken install fails loudly.
 */
#include <libsync/libsync.h>

#include <stdio.h>
#include <string.h>

static int on_add(sync_msg *msg, void *userdata)
{
    (void)userdata;
    const cJSON *amount = cJSON_GetObjectItemCaseSensitive(sync_msg_message(msg), "amount");
    cJSON *total = cJSON_GetObjectItemCaseSensitive(sync_msg_state_mut(msg), "total");
    if (!cJSON_IsNumber(amount) || !cJSON_IsNumber(total)) {
        sync_msg_set_error(msg, "amount must be a number");
        return SYNC_EINVAL;
    }
    cJSON_SetNumberValue(total, total->valuedouble + amount->valuedouble);
    return SYNC_OK;
}

int main(void)
{
    /* The headers this program was compiled with must match the library it runs with. */
    if (sync_version_number() != SYNC_VERSION_NUMBER) {
        fprintf(stderr, "headers %s, library %s\n", SYNC_VERSION_STRING, sync_version_string());
        return 1;
    }
    sync_engine_options opts = SYNC_ENGINE_OPTIONS_INIT;
    opts.initial_state_json = "{\"total\":0}";
    sync_engine *engine = NULL;
    if (sync_engine_new(&engine, &opts) != SYNC_OK ||
        sync_engine_on(engine, "add", on_add, NULL, NULL) != SYNC_OK) {
        fprintf(stderr, "engine: %s\n", sync_error_last());
        sync_engine_free(engine);
        return 1;
    }
    const char *messages[] = {"{\"type\":\"add\",\"amount\":40}", "{\"type\":\"add\",\"amount\":2}",
                              "{\"type\":\"add\",\"amount\":\"x\"}"};
    for (size_t i = 0; i < sizeof messages / sizeof messages[0]; i++)
        sync_engine_inject(engine, messages[i], strlen(messages[i]));

    char *state = sync_engine_get_state_json(engine);
    int64_t version = sync_engine_get_version(engine);
    int ok = state != NULL && strcmp(state, "{\"total\":42}") == 0 && version == 2;
    printf("libsync %s: state %s, version %lld: %s\n", sync_version_string(),
           state ? state : "(null)", (long long)version, ok ? "ok" : "WRONG");
    sync_free(state);
    sync_engine_free(engine);
    return ok ? 0 : 1;
}
