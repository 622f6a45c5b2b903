/* libsync-loadgen: drives a state-sync WebSocket server (the seed's protocol) with N clients from
 * one epoll loop and reports one JSON line. All N clients receive; S of them send
 * {"type":"increment","amount":1}, each keeping at most W increments unacknowledged, M in total.
 * Send number k (1-based, across all senders) is acknowledged once any client has seen the counter
 * reach base + k, so a server may coalesce states freely: only the highest counter each client has
 * seen matters. It fails (exit 1) when the clients do not all reach base + M in time, when any
 * client sees a counter above base + M, or when a client's counter goes backwards.
 * With --rooms R the clients are spread over R rooms (client i joins PATH + "r" + i % R, sender i
 * sends to room i % R) and each room is counted as above on its own: a send is acknowledged by
 * the clients of its room, and every room must converge on its own final counter.
 * With --idle it instead opens N connections and reports the server's RSS per connection; with
 * --unload-wait-ms it then closes them, samples the RSS of the rooms left idle, waits, and samples
 * it again once the server had time to unload them.
 * With --v2 the clients offer the subprotocol libsync.v2 and follow its frames: initial_state and
 * state_update carry the state and its version, a patch carries RFC 6902 operations from the
 * version the client has (its base, checked: a wrong one is a gap) to the next. A client follows
 * its counter through the operations on /counter and never parses the state.
 * With --resume-storm, N clients connect and converge, are all dropped at once, one more client
 * sends M increments over --storm-ms, and the N reconnect together, with ?since=V&epoch=E under
 * --v2 (unless --storm-full): it reports the bytes they received and the time until every one of
 * them saw the final counter.
 * With --port P1,P2,... (several servers of one cluster, issue 18) client i connects to the
 * (i mod count)-th port: the clients of every room, and the senders, are spread over the servers.
 */
#include "wsproto.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum conn_state { CS_IDLE, CS_CONNECTING, CS_HANDSHAKE, CS_WAIT_INITIAL, CS_READY, CS_CLOSED };

struct conn {
    int fd;
    int index;
    enum conn_state state;
    bool epollout;
    uint8_t *in;
    size_t in_len, in_cap;
    /* A fragmented data message being reassembled (only when the server fragments). */
    uint8_t *msg;
    size_t msg_len, msg_cap;
    bool in_message;
    uint8_t *out;
    size_t out_off, out_len, out_cap;
    bool seen_any;
    int64_t max_seen;
    /* v2: the version and epoch of the state the client holds, and its counter (what the
     * patches it applied left there). */
    bool has_version, resuming, storm_done;
    int64_t version, counter;
    char epoch[128];
    /* Bytes read from the socket, and of them the HTTP response head, since the last connect. */
    uint64_t bytes_in, head_bytes;
    char key[WS_KEY_LEN + 1];
    /* Sender bookkeeping (only the first S connections send). */
    long quota, sent, inflight;
    struct room *room;
};

/* One state being counted: the whole server, or one room of it. Send number k (0-based, in the
 * order the room's sends left) is acknowledged once a client of the room saw base + k + 1. */
struct room {
    long clients, quota;
    int64_t base, target, max_seen_any;
    long total_sent, total_acked, converged_clients;
    uint64_t *send_ns;
    int *send_by;
    /* How many of the room's clients have seen send k: the last one times the staleness every
     * client is guaranteed, which coalescing must not buy speed with. */
    uint32_t *seen_by;
};

#define MAX_PORTS 16

struct options {
    long clients, senders, window, messages, rooms;
    const char *host, *port, *path;
    long server_pid;
    long connect_timeout_ms, timeout_ms, linger_ms, idle_wait_ms, unload_wait_ms, connect_parallel;
    size_t max_frame;
    bool idle, v2, storm, storm_full;
    long storm_ms;
};

struct stats {
    uint64_t state_frames, state_bytes, bytes_received, other_frames, app_pings;
    /* v2: patches (and their operations) and whole states (initial_state, state_update). */
    uint64_t patch_frames, patch_bytes, patch_ops, full_frames;
    uint64_t regressions;
    int64_t overshoot_value;
};

static struct {
    struct options opt;
    struct conn *conns;
    int epfd;
    /* --port: one address per server; client i uses addrs[i % nports]. */
    struct addrinfo *addrs[MAX_PORTS];
    char *ports[MAX_PORTS];
    int nports;
    uint64_t rng;
    struct room *rooms;
    /* Phase flags: running = increments are being counted against each room's base/target. */
    bool running;
    long ready, converged_clients;
    /* Over every room: first-ack latency of each acknowledged send, and the time until the last
     * client of its room saw it. */
    long total_sent, total_acked;
    uint32_t *latency_us;
    uint32_t *all_latency_us;
    long all_seen;
    struct stats st;
    /* Connections: the N clients, and with --resume-storm the sender after them. */
    long nconns;
    /* --resume-storm: in its reconnect phase, how many of the N saw the final counter, and how
     * many resumed with a patch (the rest got a whole state). */
    bool storm_reconnecting;
    long storm_converged, storm_resumed_patch;
    /* The counted run: bytes read and state frames received from its first send until every
     * client converged (initial states and handshakes are before it). */
    uint64_t run_bytes, run_frames;
    /* Longest epoll wait: short while the storm's sender paces its increments. */
    int max_wait_ms;
    char error[256];
} lg;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(const char *fmt, ...)
{
    if (lg.error[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lg.error, sizeof lg.error, fmt, ap);
    va_end(ap);
}

static uint64_t rng_next(void)
{
    uint64_t x = lg.rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    lg.rng = x;
    return x;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(3);
    }
    return q;
}

static void reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (*cap >= need)
        return;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    *buf = xrealloc(*buf, n);
    *cap = n;
}

static void set_epollout(struct conn *c, bool on)
{
    if (c->epollout == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(lg.epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->epollout = on;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(lg.epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = CS_CLOSED;
}

static void conn_lost(struct conn *c, const char *why)
{
    fail("client %d: %s", c->index, why);
    conn_close(c);
}

static void flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_epollout(c, true);
            return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            conn_lost(c, n < 0 ? strerror(errno) : "send failed");
            return;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->state != CS_CONNECTING)
        set_epollout(c, false);
}

static void queue_frame(struct conn *c, int opcode, const void *payload, size_t len)
{
    reserve(&c->out, &c->out_cap, c->out_len + WS_MAX_CLIENT_HEADER + len);
    uint64_t r = rng_next();
    uint8_t mask[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
    c->out_len += ws_write_client_frame(c->out + c->out_len, opcode, payload, len, mask);
}

static const struct addrinfo *conn_addr(const struct conn *c)
{
    return lg.addrs[c->index % lg.nports];
}

static void start_connect(struct conn *c)
{
    int fd = socket(conn_addr(c)->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail("socket: %s", strerror(errno));
        c->state = CS_CLOSED;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Closing with RST leaves no TIME_WAIT behind, so back-to-back runs of 10,000 connections
     * do not run out of loopback ports. */
    struct linger lin = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
    c->fd = fd;
    c->state = CS_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(lg.epfd, EPOLL_CTL_ADD, fd, &ev);
    c->epollout = true;
    if (connect(fd, conn_addr(c)->ai_addr, conn_addr(c)->ai_addrlen) < 0 && errno != EINPROGRESS)
        conn_lost(c, strerror(errno));
}

/* The path a client joins: --path itself, or with --rooms, --path + "r" + its room's index. */
static const char *conn_path(const struct conn *c)
{
    static char path[512];
    if (lg.opt.rooms <= 1)
        return lg.opt.path;
    snprintf(path, sizeof path, "%sr%ld", lg.opt.path, (long)(c->room - lg.rooms));
    return path;
}

/* The epoch goes back to the server in a query string: everything but RFC 3986's unreserved
 * characters is percent-encoded. */
static void percent_encode(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < cap; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
}

static void send_handshake(struct conn *c)
{
    uint8_t nonce[16];
    uint64_t a = rng_next(), b = rng_next();
    memcpy(nonce, &a, 8);
    memcpy(nonce + 8, &b, 8);
    ws_make_key(nonce, c->key);
    char host[512], target[1024], req[2048];
    bool v6 = strchr(lg.opt.host, ':') != NULL; /* an IPv6 literal goes in brackets */
    int hn = snprintf(host, sizeof host, "%s%s%s:%s", v6 ? "[" : "", lg.opt.host, v6 ? "]" : "",
                      lg.ports[c->index % lg.nports]);
    const char *path = conn_path(c);
    if (c->resuming) {
        char epoch[3 * sizeof c->epoch + 1];
        percent_encode(c->epoch, epoch, sizeof epoch);
        int tn = snprintf(target, sizeof target, "%s%csince=%" PRId64 "&epoch=%s", path,
                          strchr(path, '?') ? '&' : '?', c->version, epoch);
        if (tn < 0 || (size_t)tn >= sizeof target) {
            conn_lost(c, "request too long");
            return;
        }
        path = target;
    }
    const char *extra = lg.opt.v2 ? "Sec-WebSocket-Protocol: libsync.v2\r\n" : NULL;
    int n = hn < 0 || (size_t)hn >= sizeof host
                ? -1
                : ws_write_request(req, sizeof req, host, path, c->key, extra);
    if (n < 0) {
        conn_lost(c, "request too long");
        return;
    }
    reserve(&c->out, &c->out_cap, c->out_len + (size_t)n);
    memcpy(c->out + c->out_len, req, (size_t)n);
    c->out_len += (size_t)n;
    c->state = CS_HANDSHAKE;
    flush_out(c);
}

static bool parse_counter_at(const uint8_t *q, const uint8_t *end, int64_t *out)
{
    while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
        q++;
    bool neg = q < end && *q == '-';
    if (neg)
        q++;
    if (q >= end || *q < '0' || *q > '9')
        return false;
    int64_t v = 0;
    while (q < end && *q >= '0' && *q <= '9' && v < INT64_MAX / 10)
        v = v * 10 + (*q++ - '0');
    *out = neg ? -v : v;
    return true;
}

/* Finds "counter":N without parsing the JSON: state frames can be 64 KiB and arrive by the
 * million. A server lays out every state frame alike, so the offset where the key was last found
 * is tried first; otherwise memmem scans (a match inside a string would follow a backslash). */
static bool find_counter(const uint8_t *p, size_t len, int64_t *out)
{
    static const char key[] = "\"counter\":";
    static size_t last_offset;
    const size_t klen = sizeof key - 1;
    const uint8_t *end = p + len;
    size_t off = last_offset;
    if (off + klen < len && memcmp(p + off, key, klen) == 0 && (off == 0 || p[off - 1] != '\\'))
        return parse_counter_at(p + off + klen, end, out);
    for (const uint8_t *at = p; at < end; at++) {
        at = memmem(at, (size_t)(end - at), key, klen);
        if (!at)
            return false;
        if (at > p && at[-1] == '\\')
            continue;
        last_offset = (size_t)(at - p);
        return parse_counter_at(at + klen, end, out);
    }
    return false;
}

static void pump_senders(void);

static uint32_t micros_since(uint64_t then, uint64_t now)
{
    uint64_t d = (now - then) / 1000u;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static void acknowledge_up_to(struct room *r, int64_t value, uint64_t now)
{
    while (r->total_acked < r->total_sent && r->base + r->total_acked + 1 <= value) {
        long k = r->total_acked++;
        lg.latency_us[lg.total_acked++] = micros_since(r->send_ns[k], now);
        lg.conns[r->send_by[k]].inflight--;
    }
}

/* One client's counter moved from `from` to `to`: each increment in between has one more
 * observer in its room. */
static void count_seen(struct room *r, int64_t from, int64_t to)
{
    int64_t lo = from > r->base ? from : r->base;
    int64_t hi = to < r->target ? to : r->target;
    if (hi > r->base + r->total_sent)
        hi = r->base + r->total_sent; /* not sent by us: nothing to time */
    uint64_t now = 0;
    for (int64_t v = lo + 1; v <= hi; v++) {
        long k = (long)(v - r->base - 1);
        if (++r->seen_by[k] != (uint32_t)r->clients)
            continue;
        if (!now)
            now = now_ns();
        lg.all_latency_us[lg.all_seen++] = micros_since(r->send_ns[k], now);
    }
}

static void on_state(struct conn *c, int64_t value)
{
    struct room *r = c->room;
    if (c->state == CS_WAIT_INITIAL) {
        c->state = CS_READY;
        lg.ready++;
    }
    if (c->seen_any && value < c->max_seen)
        lg.st.regressions++;
    c->counter = value;
    if (lg.storm_reconnecting && c->index < lg.opt.clients) {
        if (value > r->target) {
            if (value > lg.st.overshoot_value)
                lg.st.overshoot_value = value;
            fail("client %d saw counter %" PRId64 " above the final %" PRId64, c->index, value,
                 r->target);
        }
        if (value == r->target && !c->storm_done) {
            c->storm_done = true;
            lg.storm_converged++;
        }
    }
    if (!lg.running) {
        if (!c->seen_any || value > c->max_seen)
            c->max_seen = value;
        c->seen_any = true;
        return;
    }
    if (value > r->target) {
        if (value > lg.st.overshoot_value)
            lg.st.overshoot_value = value;
        fail("client %d saw counter %" PRId64 " above the final %" PRId64, c->index, value,
             r->target);
    }
    if (value > c->max_seen) {
        if (value >= r->target && c->max_seen < r->target) {
            lg.converged_clients++;
            r->converged_clients++;
        }
        count_seen(r, c->max_seen, value);
        c->max_seen = value;
    }
    if (value > r->max_seen_any) {
        r->max_seen_any = value;
        acknowledge_up_to(r, value, now_ns());
    }
}

/* ---- v2 frames ----
 * A frame is a JSON object; the few members needed are found by walking its top level and
 * skipping each value (strings with memchr), so a 1 MiB state in an initial_state costs a scan,
 * and a patch costs its own few bytes. */
struct span {
    const uint8_t *p; /* NULL: absent */
    size_t len;
};

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at the opening quote; returns just past the closing one, NULL when unterminated. */
static const uint8_t *skip_string(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *from = ++p;
    for (;;) {
        const uint8_t *q = memchr(p, '"', (size_t)(end - p));
        if (!q)
            return NULL;
        size_t backslashes = 0;
        for (const uint8_t *b = q; b > from && b[-1] == '\\'; b--)
            backslashes++;
        if (backslashes % 2 == 0)
            return q + 1;
        p = q + 1;
    }
}

/* p at a value; returns just past it, NULL when it is malformed or cut short. */
static const uint8_t *skip_value(const uint8_t *p, const uint8_t *end)
{
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            switch (*p) {
            case '"':
                p = skip_string(p, end);
                if (!p)
                    return NULL;
                continue;
            case '{':
            case '[':
                depth++;
                break;
            case '}':
            case ']':
                if (--depth == 0)
                    return p + 1;
                break;
            default:
                break;
            }
            p++;
        }
        return NULL;
    }
    const uint8_t *start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++;
    return p > start ? p : NULL;
}

typedef bool (*member_fn)(void *ctx, struct span key, struct span value);

/* Calls fn with each member of the object in v (key without its quotes). False when v is not a
 * well-formed object or fn returned false. */
static bool each_member(struct span v, member_fn fn, void *ctx)
{
    const uint8_t *end = v.p + v.len, *p = skip_ws(v.p, end);
    if (p >= end || *p != '{')
        return false;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return true;
    for (;;) {
        if (p >= end || *p != '"')
            return false;
        const uint8_t *kend = skip_string(p, end);
        if (!kend)
            return false;
        struct span key = {p + 1, (size_t)(kend - p - 2)};
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            return false;
        const uint8_t *val = skip_ws(p + 1, end);
        const uint8_t *vend = skip_value(val, end);
        if (!vend || !fn(ctx, key, (struct span){val, (size_t)(vend - val)}))
            return false;
        p = skip_ws(vend, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        return p < end && *p == '}';
    }
}

/* Calls fn with each element of the array in v. */
static bool each_element(struct span v, bool (*fn)(void *ctx, struct span elem), void *ctx)
{
    const uint8_t *end = v.p + v.len, *p = skip_ws(v.p, end);
    if (p >= end || *p != '[')
        return false;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']')
        return true;
    for (;;) {
        const uint8_t *eend = skip_value(p, end);
        if (!eend || !fn(ctx, (struct span){p, (size_t)(eend - p)}))
            return false;
        p = skip_ws(eend, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        return p < end && *p == ']';
    }
}

static bool span_is(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.p && s.len == n && memcmp(s.p, lit, n) == 0;
}

/* A string value (quotes included in s) equal to lit, compared without unescaping. */
static bool string_is(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.p && s.len == n + 2 && s.p[0] == '"' && memcmp(s.p + 1, lit, n) == 0;
}

/* An integer value and nothing else. */
static bool span_int(struct span s, int64_t *out)
{
    if (!s.p || !s.len)
        return false;
    int64_t v;
    if (!parse_counter_at(s.p, s.p + s.len, &v))
        return false;
    const uint8_t *q = s.p + (s.p[0] == '-');
    while (q < s.p + s.len && *q >= '0' && *q <= '9')
        q++;
    if (q != s.p + s.len)
        return false;
    *out = v;
    return true;
}

/* How much of a frame an error message quotes: frames are not NUL-terminated. */
static int shown(size_t len, int most)
{
    return len < (size_t)most ? (int)len : most;
}

struct v2frame {
    struct span type, data, version, base, epoch, ops;
};

static bool v2_member(void *ctx, struct span key, struct span value)
{
    struct v2frame *f = ctx;
    if (span_is(key, "type"))
        f->type = value;
    else if (span_is(key, "data"))
        f->data = value;
    else if (span_is(key, "version"))
        f->version = value;
    else if (span_is(key, "base"))
        f->base = value;
    else if (span_is(key, "epoch"))
        f->epoch = value;
    else if (span_is(key, "ops"))
        f->ops = value;
    return true;
}

struct v2op {
    struct span op, path, value, from;
};

static bool op_member(void *ctx, struct span key, struct span value)
{
    struct v2op *o = ctx;
    if (span_is(key, "op"))
        o->op = value;
    else if (span_is(key, "path"))
        o->path = value;
    else if (span_is(key, "value"))
        o->value = value;
    else if (span_is(key, "from"))
        o->from = value;
    return true;
}

/* One operation of a patch, applied to what the client follows: its counter at /counter. An
 * operation elsewhere leaves the counter as it was; one that takes /counter away, or moves or
 * copies something onto it, is not what a counter increment can produce and fails the run. */
static bool apply_op(void *ctx, struct span elem)
{
    struct conn *c = ctx;
    struct v2op o = {0};
    lg.st.patch_ops++;
    if (!each_member(elem, op_member, &o) || !o.op.p || !o.path.p || o.path.p[0] != '"') {
        fail("client %d: a patch operation that is not {\"op\",\"path\",...}: %.*s", c->index,
             shown(elem.len, 60), (const char *)elem.p);
        return false;
    }
    bool sets = string_is(o.op, "replace") || string_is(o.op, "add");
    if (string_is(o.path, "/counter")) {
        int64_t v;
        if (sets && span_int(o.value, &v)) {
            c->counter = v;
            return true;
        }
        fail("client %d: a patch operation on /counter that does not set it to an integer: "
             "%.*s",
             c->index, shown(elem.len, 80), (const char *)elem.p);
        return false;
    }
    if (string_is(o.path, "")) {
        int64_t v;
        if (sets && o.value.p && find_counter(o.value.p, o.value.len, &v)) {
            c->counter = v;
            return true;
        }
        fail("client %d: a patch replaced the whole state with one without a counter", c->index);
        return false;
    }
    if (string_is(o.from, "/counter") && string_is(o.op, "move")) {
        fail("client %d: a patch moved /counter away", c->index);
        return false;
    }
    return true;
}

static bool v2_version(struct conn *c, struct span s, const char *what, int64_t *out)
{
    if (span_int(s, out))
        return true;
    fail("client %d: %s without an integer version", c->index, what);
    return false;
}

static void on_message_v2(struct conn *c, const uint8_t *p, size_t len)
{
    struct v2frame f = {0};
    if (!each_member((struct span){p, len}, v2_member, &f) || !f.type.p) {
        fail("client %d: a v2 frame that is not a JSON object with a type: %.*s", c->index,
             shown(len, 60), (const char *)p);
        return;
    }
    bool initial = string_is(f.type, "initial_state");
    if (initial || string_is(f.type, "state_update")) {
        const char *what = initial ? "initial_state" : "state_update";
        int64_t version, value;
        if (!v2_version(c, f.version, what, &version))
            return;
        if (!f.data.p || !find_counter(f.data.p, f.data.len, &value)) {
            fail("client %d: %s without a counter in its data", c->index, what);
            return;
        }
        if (initial) {
            if (!f.epoch.p || f.epoch.p[0] != '"' || f.epoch.len - 2 >= sizeof c->epoch ||
                memchr(f.epoch.p + 1, '\\', f.epoch.len - 2)) {
                fail("client %d: initial_state without a plain string epoch of under %zu "
                     "bytes",
                     c->index, sizeof c->epoch);
                return;
            }
            memcpy(c->epoch, f.epoch.p + 1, f.epoch.len - 2);
            c->epoch[f.epoch.len - 2] = '\0';
        } else if (!c->has_version) {
            fail("client %d: state_update before initial_state", c->index);
            return;
        } else if (version < c->version) {
            fail("client %d: state_update to version %" PRId64 " after version %" PRId64, c->index,
                 version, c->version);
            return;
        }
        c->version = version;
        c->has_version = true;
        c->resuming = false;
        lg.st.state_frames++;
        lg.st.state_bytes += len;
        lg.st.full_frames++;
        on_state(c, value);
        return;
    }
    if (string_is(f.type, "patch")) {
        int64_t base, version;
        if (!span_int(f.base, &base) || !span_int(f.version, &version) || !f.ops.p) {
            fail("client %d: a patch without integer base and version and ops", c->index);
            return;
        }
        if (!c->has_version) {
            fail("client %d: a patch before initial_state", c->index);
            return;
        }
        if (base != c->version) {
            fail("client %d: a patch from base %" PRId64 " but the client is at version %" PRId64
                 " (a gap)",
                 c->index, base, c->version);
            return;
        }
        if (version < base) {
            fail("client %d: a patch from version %" PRId64 " back to %" PRId64, c->index, base,
                 version);
            return;
        }
        if (c->state == CS_WAIT_INITIAL && c->resuming)
            lg.storm_resumed_patch++;
        c->resuming = false;
        if (!each_element(f.ops, apply_op, c)) {
            if (!lg.error[0])
                fail("client %d: a patch whose ops are not an array of operations", c->index);
            return;
        }
        c->version = version;
        lg.st.state_frames++;
        lg.st.state_bytes += len;
        lg.st.patch_frames++;
        lg.st.patch_bytes += len;
        on_state(c, c->counter);
        return;
    }
    if (string_is(f.type, "ping")) {
        lg.st.app_pings++;
        queue_frame(c, WS_OP_TEXT, "pong", 4);
        return;
    }
    lg.st.other_frames++;
}

static void on_message(struct conn *c, int opcode, const uint8_t *p, size_t len)
{
    if (opcode != WS_OP_TEXT) {
        lg.st.other_frames++;
        return;
    }
    if (lg.opt.v2) {
        on_message_v2(c, p, len);
        return;
    }
    int64_t value;
    if (find_counter(p, len, &value)) {
        lg.st.state_frames++;
        lg.st.state_bytes += len;
        on_state(c, value);
        return;
    }
    static const char ping[] = "\"type\":\"ping\"";
    if (memmem(p, len, ping, sizeof ping - 1)) {
        lg.st.app_pings++;
        queue_frame(c, WS_OP_TEXT, "pong", 4);
        return;
    }
    lg.st.other_frames++;
}

static void on_frame(struct conn *c, const struct ws_frame_header *h, uint8_t *payload)
{
    size_t len = (size_t)h->payload_len;
    if (h->masked)
        ws_unmask(payload, len, h->mask);
    switch (h->opcode) {
    case WS_OP_PING:
        queue_frame(c, WS_OP_PONG, payload, len);
        return;
    case WS_OP_PONG:
        return;
    case WS_OP_CLOSE:
        queue_frame(c, WS_OP_CLOSE, payload, len < 2 ? len : 2);
        flush_out(c);
        conn_lost(c, "server closed the connection");
        return;
    case WS_OP_CONTINUATION:
        if (!c->in_message) {
            conn_lost(c, "continuation frame without a message");
            return;
        }
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (c->in_message) {
            conn_lost(c, "new message inside a fragmented one");
            return;
        }
        if (h->fin) {
            on_message(c, h->opcode, payload, len);
            return;
        }
        c->in_message = true;
        c->msg_len = 0;
        /* The opcode of a fragmented message is kept in the first byte of the buffer. */
        reserve(&c->msg, &c->msg_cap, 1);
        c->msg[0] = (uint8_t)h->opcode;
        c->msg_len = 1;
        break;
    default:
        conn_lost(c, "unknown opcode");
        return;
    }
    if (c->msg_len + len > lg.opt.max_frame) {
        conn_lost(c, "message larger than --max-frame");
        return;
    }
    reserve(&c->msg, &c->msg_cap, c->msg_len + len);
    memcpy(c->msg + c->msg_len, payload, len);
    c->msg_len += len;
    if (h->fin) {
        c->in_message = false;
        on_message(c, c->msg[0], c->msg + 1, c->msg_len - 1);
    }
}

/* Consumes every complete frame in c->in; returns the bytes needed for the next one (0 = any). */
static size_t parse_frames(struct conn *c)
{
    size_t pos = 0, need = 0;
    while (c->state != CS_CLOSED) {
        struct ws_frame_header h;
        int r = ws_parse_header(c->in + pos, c->in_len - pos, &h);
        if (r < 0) {
            conn_lost(c, "invalid frame header");
            break;
        }
        if (r == 0)
            break;
        if (h.payload_len > lg.opt.max_frame) {
            conn_lost(c, "frame larger than --max-frame");
            break;
        }
        size_t total = h.header_len + (size_t)h.payload_len;
        if (c->in_len - pos < total) {
            need = total;
            break;
        }
        on_frame(c, &h, c->in + pos + h.header_len);
        pos += total;
    }
    if (c->state == CS_CLOSED)
        return 0;
    if (pos) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return need;
}

/* The value of header `name` (lower case, without the colon) in an HTTP response head, after
 * its leading blanks; NULL when absent. */
static const char *header_value(const char *head, size_t len, const char *name)
{
    size_t nlen = strlen(name);
    const char *end = head + len;
    for (const char *line = head; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            return v;
        }
        line = eol + 1;
    }
    return NULL;
}

static void on_handshake_bytes(struct conn *c)
{
    uint8_t *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->in_len > 16384)
            conn_lost(c, "handshake response too long");
        return;
    }
    size_t head = (size_t)(end - c->in) + 4;
    const char *bad = ws_check_response((const char *)c->in, head, c->key);
    if (bad) {
        if (lg.opt.v2 && strstr(bad, "101")) {
            /* lws refuses an upgrade that offers only subprotocols it does not know. bench/run
             * reads the "no v2:" prefix as "this server has no v2" (n/a, not a failure). */
            char why[200];
            const uint8_t *eol = memchr(c->in, '\r', head);
            snprintf(why, sizeof why,
                     "no v2: the server refused the handshake offering subprotocol libsync.v2 "
                     "(%.*s)",
                     (int)(eol ? eol - c->in : 40), (const char *)c->in);
            conn_lost(c, why);
        } else {
            conn_lost(c, bad);
        }
        return;
    }
    if (lg.opt.v2) {
        const char *proto = header_value((const char *)c->in, head, "sec-websocket-protocol");
        size_t plen = proto ? strcspn(proto, "\r\n") : 0;
        while (plen && (proto[plen - 1] == ' ' || proto[plen - 1] == '\t'))
            plen--;
        if (!proto) {
            conn_lost(c, "no v2: the server did not select the subprotocol libsync.v2 (it answers "
                         "v1)");
            return;
        }
        if (plen != 10 || memcmp(proto, "libsync.v2", 10) != 0) {
            char why[200];
            snprintf(why, sizeof why, "the server selected subprotocol '%.*s', not libsync.v2",
                     (int)(plen < 60 ? plen : 60), proto);
            conn_lost(c, why);
            return;
        }
    }
    c->head_bytes += head;
    memmove(c->in, c->in + head, c->in_len - head);
    c->in_len -= head;
    c->state = CS_WAIT_INITIAL;
}

static void on_readable(struct conn *c)
{
    size_t need = 0;
    for (int rounds = 0; rounds < 16 && c->state != CS_CLOSED; rounds++) {
        size_t want = c->in_len + 16384;
        if (need > want)
            want = need;
        reserve(&c->in, &c->in_cap, want);
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n == 0) {
            conn_lost(c, "connection closed by the server");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_lost(c, strerror(errno));
            break;
        }
        lg.st.bytes_received += (uint64_t)n;
        c->bytes_in += (uint64_t)n;
        c->in_len += (size_t)n;
        if (c->state == CS_HANDSHAKE)
            on_handshake_bytes(c);
        if (c->state == CS_WAIT_INITIAL || c->state == CS_READY)
            need = parse_frames(c);
    }
    if (c->state != CS_CLOSED && c->out_len > c->out_off)
        flush_out(c);
}

static void on_event(struct conn *c, uint32_t events)
{
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            conn_lost(c, strerror(err));
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        send_handshake(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(c);
    if (c->state != CS_CLOSED && (events & EPOLLOUT))
        flush_out(c);
}

static const char inc[] = "{\"type\":\"increment\",\"amount\":1}";

static void pump_senders(void)
{
    for (long i = 0; i < lg.opt.senders; i++) {
        struct conn *c = &lg.conns[i];
        if (c->state != CS_READY)
            continue;
        struct room *r = c->room;
        bool queued = false;
        while (c->inflight < lg.opt.window && c->sent < c->quota) {
            queue_frame(c, WS_OP_TEXT, inc, sizeof inc - 1);
            r->send_ns[r->total_sent] = 0;
            r->send_by[r->total_sent] = (int)i;
            r->total_sent++;
            lg.total_sent++;
            c->sent++;
            c->inflight++;
            queued = true;
        }
        if (!queued)
            continue;
        /* Stamp just before the bytes leave, so latency excludes the time spent queueing. */
        uint64_t t = now_ns();
        for (long k = r->total_sent - 1; k >= 0 && r->send_ns[k] == 0; k--)
            r->send_ns[k] = t;
        flush_out(c);
    }
}

/* Runs the loop until done() or the deadline, calling pump (when not NULL) after each turn;
 * returns false on timeout. */
static bool loop_until(bool (*done)(void), uint64_t deadline, void (*pump)(void))
{
    struct epoll_event evs[256];
    while (!done()) {
        if (lg.error[0])
            return true;
        uint64_t now = now_ns();
        if (now >= deadline)
            return false;
        int wait_ms = (int)((deadline - now) / 1000000u) + 1;
        if (wait_ms > lg.max_wait_ms)
            wait_ms = lg.max_wait_ms;
        int n = epoll_wait(lg.epfd, evs, 256, wait_ms);
        if (n < 0 && errno != EINTR) {
            fail("epoll_wait: %s", strerror(errno));
            return true;
        }
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events);
        if (pump)
            pump();
    }
    return true;
}

static long next_to_connect;

static bool all_ready(void)
{
    /* Keep at most connect_parallel handshakes in flight so the server's accept backlog never
     * overflows (an overflow costs a one-second SYN retransmit). */
    while (next_to_connect < lg.nconns && next_to_connect - lg.ready < lg.opt.connect_parallel &&
           !lg.error[0])
        start_connect(&lg.conns[next_to_connect++]);
    return lg.ready == lg.nconns;
}

static bool all_converged(void)
{
    return lg.converged_clients == lg.opt.clients;
}

static bool never(void)
{
    return false;
}

static long proc_status_kb(long pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* utime + stime of the whole process (all threads), in seconds. */
static double proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, stt = 0;
    /* After ") " come state (field 3) ... utime is field 14, stime field 15. */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) != 2)
        return -1;
    return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t percentile(const uint32_t *sorted, long n, double p)
{
    if (n <= 0)
        return 0;
    long i = (long)(p * (double)(n - 1) + 0.5);
    return sorted[i];
}

static void print_error_field(void)
{
    fputs(",\"error\":", stdout);
    if (!lg.error[0]) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (const char *s = lg.error; *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        if ((unsigned char)*s >= 0x20)
            putchar(*s);
    }
    putchar('"');
}

static void raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t need = (rlim_t)want;
    if (rl.rlim_cur >= need)
        return;
    if (rl.rlim_max < need) {
        rl.rlim_max = need;
        if (setrlimit(RLIMIT_NOFILE, &(struct rlimit){need, need}) == 0)
            return;
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

static void usage(FILE *to)
{
    fputs(
        "usage: libsync-loadgen [options]\n"
        "  -n, --clients N          connections, all of which receive (default 100)\n"
        "  -s, --senders S          how many of them send increments (default 1)\n"
        "  -w, --window W           unacknowledged increments per sender (default 1)\n"
        "  -m, --messages M         increments in total (default 1000)\n"
        "  -H, --host HOST          server host (default 127.0.0.1)\n"
        "  -p, --port PORT[,PORT..] server port (required); several: client i uses the\n"
        "                           (i mod count)-th (servers of one cluster)\n"
        "      --path PATH          WebSocket path (default /); with --rooms, the rooms' prefix\n"
        "      --rooms R            spread clients and senders over R rooms (default 1)\n"
        "      --server-pid PID     sample this process's RSS and CPU\n"
        "      --connect-timeout-ms connecting every client (default 30000)\n"
        "      --timeout-ms MS      converging after the first send (default 60000)\n"
        "      --linger-ms MS       keep watching for overshoot after converging (default 50)\n"
        "      --connect-parallel K handshakes in flight at once (default 256)\n"
        "      --max-frame BYTES    largest accepted message (default 67108864)\n"
        "      --idle               only connect, wait, and report server RSS per connection\n"
        "      --idle-wait-ms MS    wait before sampling in --idle mode (default 2000)\n"
        "      --unload-wait-ms MS  --idle: then disconnect, sample, wait MS, sample again\n"
        "      --v2                 offer subprotocol libsync.v2 and follow its patches (fails,\n"
        "                           its error starting \"no v2:\", when the server lacks it)\n"
        "      --resume-storm       N clients converge, drop together; one more client sends M\n"
        "                           increments over --storm-ms; the N reconnect at once (with\n"
        "                           ?since=V&epoch=E under --v2) and must all see the final "
        "counter\n"
        "      --storm-ms MS        how long the changes go on while they are away (default 1000)\n"
        "      --storm-full         reconnect without since/epoch: whole states, to compare\n"
        "Prints one JSON line; exits 0 when every client converged on the exact final\n"
        "counter, 1 when not (timeout, overshoot, regression, gap, lost connection), 2 on bad\n"
        "usage.\n",
        to);
}

static long parse_long(const char *s, const char *name, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min) {
        fprintf(stderr, "loadgen: bad value for %s: %s\n", name, s);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    struct options *o = &lg.opt;
    *o = (struct options){.clients = 100,
                          .senders = 1,
                          .window = 1,
                          .messages = 1000,
                          .rooms = 1,
                          .host = "127.0.0.1",
                          .path = "/",
                          .connect_timeout_ms = 30000,
                          .timeout_ms = 60000,
                          .linger_ms = 50,
                          .idle_wait_ms = 2000,
                          .connect_parallel = 256,
                          .storm_ms = 1000,
                          .max_frame = 64u << 20};
    enum {
        O_PATH = 256,
        O_PID,
        O_CTO,
        O_TO,
        O_LINGER,
        O_PAR,
        O_MAXF,
        O_IDLE,
        O_IDLEW,
        O_ROOMS,
        O_UNLOADW,
        O_V2,
        O_STORM,
        O_STORM_MS,
        O_STORM_FULL
    };
    static const struct option longs[] = {
        {"clients", required_argument, 0, 'n'},
        {"senders", required_argument, 0, 's'},
        {"window", required_argument, 0, 'w'},
        {"messages", required_argument, 0, 'm'},
        {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'},
        {"path", required_argument, 0, O_PATH},
        {"server-pid", required_argument, 0, O_PID},
        {"connect-timeout-ms", required_argument, 0, O_CTO},
        {"timeout-ms", required_argument, 0, O_TO},
        {"linger-ms", required_argument, 0, O_LINGER},
        {"connect-parallel", required_argument, 0, O_PAR},
        {"max-frame", required_argument, 0, O_MAXF},
        {"idle", no_argument, 0, O_IDLE},
        {"idle-wait-ms", required_argument, 0, O_IDLEW},
        {"rooms", required_argument, 0, O_ROOMS},
        {"unload-wait-ms", required_argument, 0, O_UNLOADW},
        {"v2", no_argument, 0, O_V2},
        {"resume-storm", no_argument, 0, O_STORM},
        {"storm-ms", required_argument, 0, O_STORM_MS},
        {"storm-full", no_argument, 0, O_STORM_FULL},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "n:s:w:m:H:p:h", longs, NULL)) != -1) {
        switch (ch) {
        case 'n':
            o->clients = parse_long(optarg, "--clients", 1);
            break;
        case 's':
            o->senders = parse_long(optarg, "--senders", 0);
            break;
        case 'w':
            o->window = parse_long(optarg, "--window", 1);
            break;
        case 'm':
            o->messages = parse_long(optarg, "--messages", 0);
            break;
        case 'H':
            o->host = optarg;
            break;
        case 'p':
            o->port = optarg;
            break;
        case O_PATH:
            o->path = optarg;
            break;
        case O_PID:
            o->server_pid = parse_long(optarg, "--server-pid", 1);
            break;
        case O_CTO:
            o->connect_timeout_ms = parse_long(optarg, "--connect-timeout-ms", 1);
            break;
        case O_TO:
            o->timeout_ms = parse_long(optarg, "--timeout-ms", 1);
            break;
        case O_LINGER:
            o->linger_ms = parse_long(optarg, "--linger-ms", 0);
            break;
        case O_PAR:
            o->connect_parallel = parse_long(optarg, "--connect-parallel", 1);
            break;
        case O_MAXF:
            o->max_frame = (size_t)parse_long(optarg, "--max-frame", 1024);
            break;
        case O_IDLE:
            o->idle = true;
            break;
        case O_IDLEW:
            o->idle_wait_ms = parse_long(optarg, "--idle-wait-ms", 0);
            break;
        case O_ROOMS:
            o->rooms = parse_long(optarg, "--rooms", 1);
            break;
        case O_UNLOADW:
            o->unload_wait_ms = parse_long(optarg, "--unload-wait-ms", 0);
            break;
        case O_V2:
            o->v2 = true;
            break;
        case O_STORM:
            o->storm = true;
            break;
        case O_STORM_MS:
            o->storm_ms = parse_long(optarg, "--storm-ms", 0);
            break;
        case O_STORM_FULL:
            o->storm_full = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc || !o->port) {
        usage(stderr);
        exit(2);
    }
    if (o->storm) {
        /* The storm's sender is a client of its own, after the N that are dropped. */
        if (o->idle || o->rooms > 1) {
            fprintf(stderr, "loadgen: --resume-storm works on one room, not with --idle\n");
            exit(2);
        }
        o->senders = 0;
        return;
    }
    if (o->storm_full) {
        fprintf(stderr, "loadgen: --storm-full goes with --resume-storm\n");
        exit(2);
    }
    if (o->senders > o->clients || (o->senders == 0 && o->messages > 0 && !o->idle)) {
        fprintf(stderr, "loadgen: need 1 <= senders <= clients when messages > 0\n");
        exit(2);
    }
    if (o->rooms > o->clients || (!o->idle && o->senders < o->rooms && o->messages > 0)) {
        fprintf(stderr, "loadgen: need rooms <= clients, and a sender per room\n");
        exit(2);
    }
}

/* RSS samples of --idle: before connecting, with every client connected, and with --unload-wait-ms
 * once they left (rooms still loaded) and after the wait (rooms unloaded). -1 = not sampled. */
struct idle_rss {
    long before, connected, left, unloaded;
};

static int report_idle(double connect_ms, struct idle_rss rss)
{
    bool sampled = rss.before >= 0 && rss.connected >= 0;
    long per_conn = sampled ? (rss.connected - rss.before) * 1024 / lg.opt.clients : -1;
    long per_room =
        rss.before >= 0 && rss.left >= 0 ? (rss.left - rss.before) * 1024 / lg.opt.rooms : -1;
    printf("{\"ok\":%s,\"mode\":\"idle\",\"clients\":%ld,\"rooms\":%ld,\"connected\":%ld,"
           "\"connect_ms\":%.3f,\"server_rss_before_kb\":%ld,\"server_rss_after_kb\":%ld,"
           "\"rss_per_conn_bytes\":%ld,\"server_rss_left_kb\":%ld,\"rss_per_idle_room_bytes\":%ld,"
           "\"server_rss_unloaded_kb\":%ld,\"rss_unloaded_pct_of_before\":%.1f,"
           "\"loadgen_cpu_s\":%.3f",
           lg.error[0] ? "false" : "true", lg.opt.clients, lg.opt.rooms, lg.ready, connect_ms,
           rss.before, rss.connected, per_conn, rss.left, per_room, rss.unloaded,
           rss.before > 0 && rss.unloaded >= 0 ? 100.0 * (double)rss.unloaded / (double)rss.before
                                               : -1.0,
           self_cpu_s());
    print_error_field();
    puts("}");
    return lg.error[0] ? 1 : 0;
}

static void print_wire_fields(void)
{
    printf(",\"v2\":%s,\"patch_frames\":%" PRIu64 ",\"patch_bytes\":%" PRIu64
           ",\"patch_ops\":%" PRIu64 ",\"full_frames\":%" PRIu64,
           lg.opt.v2 ? "true" : "false", lg.st.patch_frames, lg.st.patch_bytes, lg.st.patch_ops,
           lg.st.full_frames);
}

static int report_run(double connect_ms, double converge_ms, double cpu_s, double srv_cpu_s)
{
    long n = lg.total_acked;
    qsort(lg.latency_us, (size_t)n, sizeof *lg.latency_us, cmp_u32);
    long na = lg.all_seen;
    qsort(lg.all_latency_us, (size_t)na, sizeof *lg.all_latency_us, cmp_u32);
    bool ok = !lg.error[0];
    double secs = converge_ms / 1000.0;
    /* base, final and max_seen are room 0's: the whole server's without --rooms. */
    const struct room *r0 = lg.rooms;
    printf("{\"ok\":%s,\"mode\":\"run\",\"clients\":%ld,\"rooms\":%ld,\"senders\":%ld,"
           "\"window\":%ld,\"messages\":%ld,\"base\":%" PRId64 ",\"final\":%" PRId64
           ",\"connect_ms\":%.3f,"
           "\"converge_ms\":%.3f,\"msgs_per_s\":%.1f,\"sent\":%ld,\"acked\":%ld,"
           "\"converged_clients\":%ld,\"state_frames\":%" PRIu64 ",\"state_bytes\":%" PRIu64
           ",\"bytes_received\":%" PRIu64 ",\"frames_per_client\":%.1f,\"other_frames\":%" PRIu64
           ",\"app_pings\":%" PRIu64 ",\"regressions\":%" PRIu64 ",\"max_seen\":%" PRId64
           ",\"latency_us\":{\"p50\":%u,\"p90\":%u,\"p99\":%u,\"max\":%u},"
           "\"all_clients_latency_us\":{\"p50\":%u,\"p90\":%u,\"p99\":%u,\"max\":%u},"
           "\"loadgen_cpu_s\":%.3f,\"loadgen_cpu_pct\":%.1f",
           ok ? "true" : "false", lg.opt.clients, lg.opt.rooms, lg.opt.senders, lg.opt.window,
           lg.opt.messages, r0->base, r0->target, connect_ms, converge_ms,
           ok && secs > 0 ? (double)lg.opt.messages / secs : 0.0, lg.total_sent, lg.total_acked,
           lg.converged_clients, lg.st.state_frames, lg.st.state_bytes, lg.st.bytes_received,
           (double)lg.st.state_frames / (double)lg.opt.clients, lg.st.other_frames, lg.st.app_pings,
           lg.st.regressions, r0->max_seen_any, percentile(lg.latency_us, n, 0.50),
           percentile(lg.latency_us, n, 0.90), percentile(lg.latency_us, n, 0.99),
           n ? lg.latency_us[n - 1] : 0, percentile(lg.all_latency_us, na, 0.50),
           percentile(lg.all_latency_us, na, 0.90), percentile(lg.all_latency_us, na, 0.99),
           na ? lg.all_latency_us[na - 1] : 0, cpu_s, secs > 0 ? 100.0 * cpu_s / secs : 0.0);
    print_wire_fields();
    /* What reaching each client costs on the wire: per state frame it received (an update,
     * whole or patch), and per increment sent. */
    printf(",\"run_bytes_received\":%" PRIu64 ",\"run_state_frames\":%" PRIu64
           ",\"wire_bytes_per_update\":%.1f,\"wire_bytes_per_client_per_increment\":%.1f",
           lg.run_bytes, lg.run_frames,
           lg.run_frames ? (double)lg.run_bytes / (double)lg.run_frames : -1.0,
           lg.opt.messages ? (double)lg.run_bytes / (double)lg.opt.clients / (double)lg.opt.messages
                           : -1.0);
    if (lg.opt.server_pid)
        printf(",\"server_pid\":%ld,\"server_rss_kb\":%ld,\"server_hwm_kb\":%ld,"
               "\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f",
               lg.opt.server_pid, proc_status_kb(lg.opt.server_pid, "VmRSS"),
               proc_status_kb(lg.opt.server_pid, "VmHWM"), srv_cpu_s,
               secs > 0 ? 100.0 * srv_cpu_s / secs : 0.0);
    print_error_field();
    puts("}");
    return ok ? 0 : 1;
}

static int run_counted(double connect_ms);
static int run_storm(double connect_ms);

/* ---- --resume-storm ----
 * Clients 0..N-1 are dropped and come back; client N is the sender that changes the state while
 * they are away. */
static uint64_t storm_t0;
static long storm_next;

static struct conn *storm_sender(void)
{
    return &lg.conns[lg.opt.clients];
}

/* Spreads the sender's M increments evenly over --storm-ms. */
static void storm_pump(void)
{
    struct conn *s = storm_sender();
    if (s->state != CS_READY || s->sent >= s->quota)
        return;
    uint64_t span = (uint64_t)lg.opt.storm_ms * 1000000u, elapsed = now_ns() - storm_t0;
    long due =
        elapsed >= span ? s->quota : (long)((double)s->quota * (double)elapsed / (double)span) + 1;
    if (due > s->quota)
        due = s->quota;
    if (s->sent >= due)
        return;
    while (s->sent < due) {
        queue_frame(s, WS_OP_TEXT, inc, sizeof inc - 1);
        s->sent++;
    }
    flush_out(s);
}

/* Every increment sent and seen applied by the sender, and --storm-ms gone by. */
static bool storm_changes_done(void)
{
    struct conn *s = storm_sender();
    return s->sent == s->quota && s->seen_any && s->max_seen >= s->room->target &&
           now_ns() - storm_t0 >= (uint64_t)lg.opt.storm_ms * 1000000u;
}

static bool storm_all_back(void)
{
    while (storm_next < lg.opt.clients && storm_next - lg.ready < lg.opt.connect_parallel &&
           !lg.error[0])
        start_connect(&lg.conns[storm_next++]);
    return lg.storm_converged == lg.opt.clients;
}

static void conn_forget_socket(struct conn *c)
{
    conn_close(c);
    c->state = CS_IDLE;
    c->in_len = c->msg_len = 0;
    c->in_message = false;
    c->out_off = c->out_len = 0;
    c->epollout = false;
    c->bytes_in = c->head_bytes = 0;
}

static int run_storm(double connect_ms)
{
    const struct options *o = &lg.opt;
    struct conn *snd = storm_sender();
    struct room *r = lg.rooms;
    int64_t min_version = INT64_MAX, max_version = INT64_MIN;
    for (long i = 0; i < o->clients; i++) {
        const struct conn *c = &lg.conns[i];
        if (c->version < min_version)
            min_version = c->version;
        if (c->version > max_version)
            max_version = c->version;
    }
    double changes_ms = 0, converge_ms = 0, cpu_s = 0, srv_cpu_s = 0;
    uint64_t bytes = 0, heads = 0, frames0 = 0, frames = 0;
    if (!lg.error[0]) {
        /* All N go at once, with RST: to the server, a network that dropped them. */
        for (long i = 0; i < o->clients; i++)
            conn_forget_socket(&lg.conns[i]);
        storm_t0 = now_ns();
        lg.max_wait_ms = 1;
        storm_pump();
        bool done =
            loop_until(storm_changes_done,
                       storm_t0 + (uint64_t)(o->storm_ms + o->timeout_ms) * 1000000u, storm_pump);
        lg.max_wait_ms = 100;
        changes_ms = (double)(now_ns() - storm_t0) / 1e6;
        if (!done)
            fail("the sender saw %" PRId64 " of %ld increments applied within %ld ms",
                 snd->max_seen - r->base, snd->quota, o->storm_ms + o->timeout_ms);
    }
    if (!lg.error[0]) {
        for (long i = 0; i < o->clients; i++) {
            struct conn *c = &lg.conns[i];
            c->resuming = o->v2 && !o->storm_full && c->has_version;
            if (!c->resuming)
                c->has_version = false;
        }
        lg.ready = 0;
        storm_next = 0;
        lg.storm_reconnecting = true;
        frames0 = lg.st.state_frames;
        double cpu0 = self_cpu_s();
        double srv0 = o->server_pid ? proc_cpu_s(o->server_pid) : 0;
        uint64_t t0 = now_ns();
        bool in_time = loop_until(storm_all_back, t0 + (uint64_t)o->timeout_ms * 1000000u, NULL);
        converge_ms = (double)(now_ns() - t0) / 1e6;
        cpu_s = self_cpu_s() - cpu0;
        srv_cpu_s = o->server_pid ? proc_cpu_s(o->server_pid) - srv0 : 0;
        for (long i = 0; i < o->clients; i++) {
            bytes += lg.conns[i].bytes_in;
            heads += lg.conns[i].head_bytes;
        }
        frames = lg.st.state_frames - frames0;
        if (!in_time)
            fail("%ld of %ld clients saw the final counter %" PRId64 " within %ld ms of "
                 "reconnecting (%ld had a state again)",
                 lg.storm_converged, o->clients, r->target, o->timeout_ms, lg.ready);
    }
    if (!lg.error[0] && o->linger_ms > 0)
        loop_until(never, now_ns() + (uint64_t)o->linger_ms * 1000000u, NULL);
    if (!lg.error[0] && lg.st.regressions)
        fail("%" PRIu64 " state frames went backwards", lg.st.regressions);
    bool ok = !lg.error[0];
    printf("{\"ok\":%s,\"mode\":\"storm\",\"clients\":%ld,\"messages\":%ld,\"storm_ms\":%ld,"
           "\"resume\":%s,\"base\":%" PRId64 ",\"final\":%" PRId64 ",\"versions_at_drop\":[%" PRId64
           ",%" PRId64 "],\"connect_ms\":%.3f,\"changes_ms\":%.3f,\"reconnect_converge_ms\":%.3f,"
           "\"converged_clients\":%ld,\"storm_bytes\":%" PRIu64 ",\"storm_bytes_per_client\":%.1f,"
           "\"storm_frame_bytes\":%" PRIu64 ",\"storm_state_frames\":%" PRIu64
           ",\"resumed_by_patch\":%ld,\"resumed_by_full\":%ld,\"state_frames\":%" PRIu64
           ",\"bytes_received\":%" PRIu64 ",\"regressions\":%" PRIu64 ",\"loadgen_cpu_s\":%.3f",
           ok ? "true" : "false", o->clients, o->messages, o->storm_ms,
           o->v2 && !o->storm_full ? "true" : "false", r->base, r->target,
           min_version == INT64_MAX ? 0 : min_version, max_version == INT64_MIN ? 0 : max_version,
           connect_ms, changes_ms, converge_ms, lg.storm_converged, bytes,
           (double)bytes / (double)o->clients, bytes - heads, frames, lg.storm_resumed_patch,
           lg.ready - lg.storm_resumed_patch, lg.st.state_frames, lg.st.bytes_received,
           lg.st.regressions, cpu_s);
    print_wire_fields();
    if (o->server_pid)
        printf(",\"server_pid\":%ld,\"server_rss_kb\":%ld,\"server_hwm_kb\":%ld,"
               "\"server_cpu_s\":%.3f",
               o->server_pid, proc_status_kb(o->server_pid, "VmRSS"),
               proc_status_kb(o->server_pid, "VmHWM"), srv_cpu_s);
    print_error_field();
    puts("}");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    const struct options *o = &lg.opt;
    lg.nconns = o->clients + (o->storm ? 1 : 0);
    lg.max_wait_ms = 100;
    raise_nofile(lg.nconns + 64);
    if (getrandom(&lg.rng, sizeof lg.rng, 0) != sizeof lg.rng || lg.rng == 0)
        lg.rng = now_ns() | 1;

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    char *port_list = strdup(o->port), *save = NULL;
    for (char *port = strtok_r(port_list, ",", &save); port; port = strtok_r(NULL, ",", &save)) {
        if (lg.nports == MAX_PORTS) {
            fprintf(stderr, "loadgen: at most %d ports\n", MAX_PORTS);
            return 2;
        }
        int gai = getaddrinfo(o->host, port, &hints, &lg.addrs[lg.nports]);
        if (gai != 0) {
            fprintf(stderr, "loadgen: %s:%s: %s\n", o->host, port, gai_strerror(gai));
            return 2;
        }
        lg.ports[lg.nports++] = strdup(port);
    }
    free(port_list);
    if (lg.nports == 0) {
        fprintf(stderr, "loadgen: no port in '%s'\n", o->port);
        return 2;
    }
    lg.epfd = epoll_create1(EPOLL_CLOEXEC);
    lg.conns = calloc((size_t)lg.nconns, sizeof *lg.conns);
    lg.rooms = calloc((size_t)o->rooms, sizeof *lg.rooms);
    lg.latency_us = calloc((size_t)o->messages + 1, sizeof *lg.latency_us);
    lg.all_latency_us = calloc((size_t)o->messages + 1, sizeof *lg.all_latency_us);
    if (lg.epfd < 0 || !lg.conns || !lg.rooms || !lg.latency_us || !lg.all_latency_us) {
        fprintf(stderr, "loadgen: setup failed\n");
        return 3;
    }
    for (long i = 0; i < lg.nconns; i++) {
        struct conn *c = &lg.conns[i];
        c->fd = -1;
        c->index = (int)i;
        c->room = &lg.rooms[i % o->rooms];
        c->room->clients++;
        if (i < o->senders)
            c->quota = o->messages / o->senders + (i < o->messages % o->senders);
        if (o->storm && i == o->clients)
            c->quota = o->messages;
        c->room->quota += c->quota;
    }
    for (long i = 0; i < o->rooms; i++) {
        struct room *r = &lg.rooms[i];
        r->send_ns = calloc((size_t)r->quota + 1, sizeof *r->send_ns);
        r->send_by = calloc((size_t)r->quota + 1, sizeof *r->send_by);
        r->seen_by = calloc((size_t)r->quota + 1, sizeof *r->seen_by);
        if (!r->send_ns || !r->send_by || !r->seen_by) {
            fprintf(stderr, "loadgen: setup failed\n");
            return 3;
        }
    }

    struct idle_rss rss = {-1, -1, -1, -1};
    rss.before = o->server_pid ? proc_status_kb(o->server_pid, "VmRSS") : -1;
    uint64_t t_start = now_ns();
    if (!loop_until(all_ready, t_start + (uint64_t)o->connect_timeout_ms * 1000000u, NULL))
        fail("only %ld of %ld clients connected within %ld ms", lg.ready, lg.nconns,
             o->connect_timeout_ms);
    double connect_ms = (double)(now_ns() - t_start) / 1e6;

    if (o->idle) {
        if (!lg.error[0])
            loop_until(never, now_ns() + (uint64_t)o->idle_wait_ms * 1000000u, NULL);
        rss.connected = o->server_pid ? proc_status_kb(o->server_pid, "VmRSS") : -1;
        if (o->unload_wait_ms > 0 && o->server_pid && !lg.error[0]) {
            for (long i = 0; i < o->clients; i++)
                conn_close(&lg.conns[i]);
            /* The server notices the closes within a loop turn or two. */
            struct timespec settle = {0, 500 * 1000000L};
            nanosleep(&settle, NULL);
            rss.left = proc_status_kb(o->server_pid, "VmRSS");
            struct timespec wait = {o->unload_wait_ms / 1000,
                                    (o->unload_wait_ms % 1000) * 1000000L};
            nanosleep(&wait, NULL);
            rss.unloaded = proc_status_kb(o->server_pid, "VmRSS");
        }
        return report_idle(connect_ms, rss);
    }

    /* Every client of a room names the same counter in its initial state when nobody has sent
     * yet. */
    for (long i = 0; i < o->rooms; i++)
        lg.rooms[i].base = INT64_MIN;
    for (long i = 0; i < lg.nconns; i++) {
        struct conn *c = &lg.conns[i];
        if (c->seen_any && c->max_seen > c->room->base)
            c->room->base = c->max_seen;
    }
    for (long i = 0; i < o->rooms; i++) {
        struct room *r = &lg.rooms[i];
        if (r->base == INT64_MIN)
            r->base = 0;
        r->target = r->base + r->quota;
        r->max_seen_any = r->base;
    }
    int rc = o->storm ? run_storm(connect_ms) : run_counted(connect_ms);
    for (long i = 0; i < lg.nconns; i++) {
        conn_close(&lg.conns[i]);
        free(lg.conns[i].in);
        free(lg.conns[i].msg);
        free(lg.conns[i].out);
    }
    free(lg.conns);
    for (long i = 0; i < o->rooms; i++) {
        free(lg.rooms[i].send_ns);
        free(lg.rooms[i].send_by);
        free(lg.rooms[i].seen_by);
    }
    free(lg.rooms);
    free(lg.latency_us);
    free(lg.all_latency_us);
    for (int i = 0; i < lg.nports; i++) {
        freeaddrinfo(lg.addrs[i]);
        free(lg.ports[i]);
    }
    close(lg.epfd);
    return rc;
}

/* The counted run: senders keep their windows full until every client saw the final counter. */
static int run_counted(double connect_ms)
{
    const struct options *o = &lg.opt;
    for (long i = 0; i < o->clients; i++) {
        struct conn *c = &lg.conns[i];
        if (c->max_seen >= c->room->target) {
            lg.converged_clients++;
            c->room->converged_clients++;
        }
    }

    double cpu0 = self_cpu_s();
    double srv0 = o->server_pid ? proc_cpu_s(o->server_pid) : 0;
    uint64_t bytes0 = lg.st.bytes_received, frames0 = lg.st.state_frames;
    uint64_t t0 = now_ns();
    lg.running = true;
    double converge_ms = 0;
    if (!lg.error[0]) {
        pump_senders();
        bool in_time =
            loop_until(all_converged, t0 + (uint64_t)o->timeout_ms * 1000000u, pump_senders);
        converge_ms = (double)(now_ns() - t0) / 1e6;
        lg.run_bytes = lg.st.bytes_received - bytes0;
        lg.run_frames = lg.st.state_frames - frames0;
        if (!in_time) {
            const struct room *r = lg.rooms;
            for (long i = 0; i < o->rooms; i++)
                if (lg.rooms[i].converged_clients < lg.rooms[i].clients) {
                    r = &lg.rooms[i];
                    break;
                }
            fail("%ld of %ld clients converged within %ld ms; in room %ld, %ld of %ld reached "
                 "%" PRId64 " (highest seen %" PRId64 ", %ld of %ld increments sent)",
                 lg.converged_clients, o->clients, o->timeout_ms, (long)(r - lg.rooms),
                 r->converged_clients, r->clients, r->target, r->max_seen_any, r->total_sent,
                 r->quota);
        }
    }
    double cpu_s = self_cpu_s() - cpu0;
    double srv_cpu_s = o->server_pid ? proc_cpu_s(o->server_pid) - srv0 : 0;
    if (!lg.error[0] && o->linger_ms > 0)
        loop_until(never, now_ns() + (uint64_t)o->linger_ms * 1000000u, NULL);
    if (!lg.error[0] && lg.st.regressions)
        fail("%" PRIu64 " state frames went backwards", lg.st.regressions);
    return report_run(connect_ms, converge_ms, cpu_s, srv_cpu_s);
}
