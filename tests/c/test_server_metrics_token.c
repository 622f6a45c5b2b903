/* sync_server_set_metrics_token: GET /metrics needs the token (Bearer header or ?token=) over a
 * real socket, /healthz stays public, and bad calls fail with a clear status. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "server_fixture.h"

static int get(int port, const char *path, const char *headers, char **body)
{
    char *head = NULL;
    *body = NULL;
    int status = http_request(port, "GET", path, headers, body, &head);
    free(head);
    return status;
}

static void metrics_need_the_token(void)
{
    sync_engine *engine = fixture_counter_engine(0);
    REQUIRE(engine);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &opts) == SYNC_OK);
    CHECK_EQ_INT(sync_server_set_metrics_token(server, "first"), SYNC_OK);
    CHECK_EQ_INT(sync_server_set_metrics_token(server, "m3trics"), SYNC_OK); /* the last wins */
    CHECK_EQ_INT(sync_server_mount(server, "/", engine), SYNC_OK);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    int port = sync_server_port(server);

    char *body = NULL;
    CHECK_EQ_INT(get(port, "/metrics", NULL, &body), 401);
    CHECK(body && !strstr(body, "libsync_"));
    free(body);
    CHECK_EQ_INT(get(port, "/metrics?token=first", NULL, &body), 401);
    free(body);
    CHECK_EQ_INT(get(port, "/metrics?token=m3tric", NULL, &body), 401);
    free(body);
    CHECK_EQ_INT(get(port, "/metrics", "Authorization: Bearer m3tricsX\r\n", &body), 401);
    free(body);
    CHECK_EQ_INT(get(port, "/metrics?token=m3trics", NULL, &body), 200);
    CHECK(body && strstr(body, "libsync_connections"));
    free(body);
    CHECK_EQ_INT(get(port, "/metrics?a=1&token=m3trics", NULL, &body), 200);
    free(body);
    CHECK_EQ_INT(get(port, "/metrics", "Authorization: Bearer m3trics\r\n", &body), 200);
    CHECK(body && strstr(body, "libsync_connections"));
    free(body);
    CHECK_EQ_INT(get(port, "/healthz", NULL, &body), 200);
    free(body);

    /* Only before listen. */
    CHECK_EQ_INT(sync_server_set_metrics_token(server, "later"), SYNC_ESTATE);
    CHECK_EQ_INT(get(port, "/metrics?token=m3trics", NULL, &body), 200);
    free(body);
    sync_server_free(server);
    sync_engine_free(engine);
}

static void bad_calls(void)
{
    CHECK_EQ_INT(sync_server_set_metrics_token(NULL, "x"), SYNC_EINVAL);
    sync_server_options opts = SYNC_SERVER_OPTIONS_INIT;
    sync_server *server = NULL;
    REQUIRE(sync_server_new(&server, &opts) == SYNC_OK);
    CHECK_EQ_INT(sync_server_set_metrics_token(server, ""), SYNC_EINVAL);
    CHECK(strstr(sync_error_last(), "empty") != NULL);
    /* NULL makes /metrics public again. */
    CHECK_EQ_INT(sync_server_set_metrics_token(server, "x"), SYNC_OK);
    CHECK_EQ_INT(sync_server_set_metrics_token(server, NULL), SYNC_OK);
    REQUIRE(sync_server_start(server) == SYNC_OK);
    char *body = NULL;
    CHECK_EQ_INT(get(sync_server_port(server), "/metrics", NULL, &body), 200);
    free(body);
    sync_server_free(server);
}

/* The comparison the metrics token and the demo's auth use; its timing is not measured here (a
 * unit test cannot tell a few nanoseconds apart on a shared machine), only its answers. */
static void secret_equal(void)
{
    CHECK(sync_secret_equal("s3cret", 6, "s3cret") == 1);
    CHECK(sync_secret_equal("s3cret-and-more", 6, "s3cret") == 1); /* only given_len bytes count */
    CHECK(sync_secret_equal("s3cre", 5, "s3cret") == 0);
    CHECK(sync_secret_equal("s3cretX", 7, "s3cret") == 0);
    CHECK(sync_secret_equal("S3cret", 6, "s3cret") == 0);
    CHECK(sync_secret_equal("s3cres", 6, "s3cret") == 0);
    CHECK(sync_secret_equal("", 0, "") == 1);
    CHECK(sync_secret_equal("", 0, "x") == 0);
    CHECK(sync_secret_equal(NULL, 0, "x") == 0);
    CHECK(sync_secret_equal("x", 1, NULL) == 0);
}

int main(void)
{
    RUN(secret_equal);
    RUN(metrics_need_the_token);
    RUN(bad_calls);
    return check_summary();
}
