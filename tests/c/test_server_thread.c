/* Engines used from other threads while the server runs: clients send increments from their
 * own threads while foreign threads inject messages, set the state and broadcast text. Every
 * client must end on the final state. Run under TSan too (label "threads"). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "server_fixture.h"
#include "ws_client.h"

enum { CLIENTS = 4, PER_CLIENT = 150, INJECTS = 150, BROADCASTS = 50 };

static sync_engine *engine;
static int port;
static atomic_int sender_failures;

static void *sender(void *arg)
{
    (void)arg;
    ws_client *c = ws_connect(port, "/", NULL, NULL);
    if (!c) {
        atomic_fetch_add(&sender_failures, 1);
        return NULL;
    }
    for (int i = 0; i < PER_CLIENT; i++)
        if (ws_send_text(c, "{\"type\":\"increment\"}") != 0)
            atomic_fetch_add(&sender_failures, 1);
    /* read everything (so the server never blocks on us) until the final count shows */
    long long want = CLIENTS * PER_CLIENT + INJECTS;
    int ok = 0;
    for (int i = 0; i < 100000 && !ok; i++) {
        char *text = ws_read_text(c, 5000);
        if (!text)
            break;
        ok = ws_json_int(text, "counter") == want;
        free(text);
    }
    if (!ok)
        atomic_fetch_add(&sender_failures, 1);
    ws_client_free(c);
    return NULL;
}

static void *injector(void *arg)
{
    (void)arg;
    for (int i = 0; i < INJECTS; i++) {
        const char *msg = "{\"type\":\"increment\"}";
        sync_engine_inject(engine, msg, strlen(msg));
        if (i % 3 == 0) {
            const char *note = "{\"type\":\"note\"}";
            sync_engine_broadcast_text(engine, note, strlen(note));
        }
    }
    return NULL;
}

static void test_foreign_threads_while_clients_send(void)
{
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    port = sync_server_port(server);

    pthread_t senders[CLIENTS], inject;
    for (int i = 0; i < CLIENTS; i++)
        REQUIRE(pthread_create(&senders[i], NULL, sender, NULL) == 0);
    REQUIRE(pthread_create(&inject, NULL, injector, NULL) == 0);
    pthread_join(inject, NULL);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(senders[i], NULL);
    CHECK_EQ_INT(atomic_load(&sender_failures), 0);
    CHECK_EQ_INT(sync_engine_get_version(engine), CLIENTS * PER_CLIENT + INJECTS);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void *state_setter(void *arg)
{
    (void)arg;
    char json[64];
    for (int i = 1; i <= 300; i++) {
        snprintf(json, sizeof json, "{\"counter\":%d}", i);
        sync_engine_set_state_json(engine, json, i % 2);
    }
    return NULL;
}

static void test_set_state_from_a_foreign_thread(void)
{
    sync_server *server = fixture_counter_server(0, NULL, "/", &engine);
    REQUIRE(server);
    port = sync_server_port(server);
    ws_client *clients[3];
    for (int i = 0; i < 3; i++) {
        clients[i] = ws_connect(port, "/", NULL, NULL);
        REQUIRE(clients[i]);
    }
    pthread_t setter;
    REQUIRE(pthread_create(&setter, NULL, state_setter, NULL) == 0);
    pthread_join(setter, NULL);
    for (int i = 0; i < 3; i++) {
        long long last = -1, prev = -1;
        int backwards = 0;
        for (int n = 0; n < 2000 && last != 300; n++) {
            char *text = ws_read_text(clients[i], 5000);
            if (!text)
                break;
            last = ws_json_int(text, "counter");
            backwards += last < prev;
            prev = last;
            free(text);
        }
        CHECK_EQ_INT(last, 300);
        CHECK_EQ_INT(backwards, 0);
        ws_client_free(clients[i]);
    }
    /* stop from a foreign thread while nothing is connected */
    CHECK_EQ_INT(sync_server_stop(server), SYNC_OK);
    sync_server_free(server);
    sync_engine_free(engine);
}

int main(void)
{
    RUN(test_foreign_threads_while_clients_send);
    RUN(test_set_state_from_a_foreign_thread);
    return check_summary();
}
