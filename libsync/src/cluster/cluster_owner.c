/* The owner thread (cluster_internal.h): for every room attached to this node, on one Redis
 * connection,
 * - loads the room's record into its engine (first load, and again after every resubscription):
 *   the record's epoch, then its version (sync__engine_adopt_state);
 * - every lease_ms / 6, one Lua script per CLUSTER_BATCH rooms renews the leases it holds and
 *   takes those that are free (a new fencing token each time);
 * - takes a room over: fenced load, the record's epoch created when it has none, the loaded
 *   version adopted by the local engine before the first apply, and republished (the last owner
 *   may have died between its save and its publish);
 * - reads the streams of the rooms it owns, one XREAD over all of them, and applies each entry
 *   through the engine (sync__engine_apply_remote: one entry in flight per room, rooms in
 *   parallel), then the fenced save of state + version + applied id, the publish, the local
 *   adoption, and the replies routed to the sender's node;
 * - runs each handler at most once: before it runs an entry the record's `claimed` id covers it
 *   (redis_fenced_claim, or folded into the previous entry's save), and a new owner refuses the
 *   entries after `applied` up to the claim it found instead of running them again.
 * A room whose save is refused (fenced out) or fails is dropped at once: nothing more is
 * applied until the node owns it again and reloaded it. */
#include "cluster/cluster_internal.h"

#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LIBSYNC_HAVE_REDIS

/* KEYS: lease, fence of each room. ARGV: node, ttl, then each room's token ('0': not owned).
 * An owned room's lease is renewed when it still carries the token (else 0: lost); a room not
 * owned is taken when its lease is free (INCR of its fence: a new token) or kept when this node
 * holds it already. Returns each room's token, 0 where another node holds it. */
static const char KEEP_LUA[] =
    "local out = {}\n"
    "for i = 1, #ARGV - 2 do\n"
    "  local lease, tok = KEYS[2 * i - 1], ARGV[2 + i]\n"
    "  local cur = redis.call('GET', lease)\n"
    "  local t, n\n"
    "  if cur then t, n = string.match(cur, '^(%d+) (.*)$') end\n"
    "  if tok ~= '0' then\n"
    "    if t == tok then redis.call('PEXPIRE', lease, ARGV[2]); out[i] = tonumber(tok)\n"
    "    else out[i] = 0 end\n"
    "  elseif cur then\n"
    "    if n == ARGV[1] then redis.call('PEXPIRE', lease, ARGV[2]); out[i] = tonumber(t)\n"
    "    else out[i] = 0 end\n"
    "  else\n"
    "    local nt = redis.call('INCR', KEYS[2 * i])\n"
    "    redis.call('SET', lease, nt .. ' ' .. ARGV[1], 'PX', ARGV[2])\n"
    "    out[i] = nt\n"
    "  end\n"
    "end\n"
    "return out\n";

typedef struct owner {
    sync__cluster *cl;
    redis_conn *c;
    int tick_ms;
    cluster_room **rooms; /* this turn's snapshot */
    size_t count, cap;
    bool draining; /* stopping: the runs in flight are saved, nothing new runs */
} owner;

static void lose(cluster_room *r)
{
    r->token = 0;
    sync_free(r->state);
    r->state = NULL;
    redis_entries_free(r->entries, r->entry_count);
    r->entries = NULL;
    r->entry_count = r->entry_next = 0;
}

static void give_up(owner *o, cluster_room *r)
{
    if (r->token && !atomic_load(&o->cl->killed))
        redis_lease_release(o->c, r->key, r->token);
    lose(r);
}

/* A clean give-up (stop, detach) of a room whose every run was saved: the claim of an entry not
 * started yet is withdrawn, so the next owner runs it instead of refusing it. A room with a run
 * in flight or unsaved keeps its claim. */
static void give_up_clean(owner *o, cluster_room *r)
{
    sync__cluster *cl = o->cl;
    pthread_mutex_lock(&cl->lock);
    bool idle = !r->inflight && !r->has_result;
    pthread_mutex_unlock(&cl->lock);
    if (r->token && idle && !atomic_load(&cl->killed)) {
        redis_lease_release_unclaimed(o->c, r->key, r->token);
        r->token = 0;
    }
    give_up(o, r);
}

/* ---- loads ------------------------------------------------------------------------------- */

/* Whether the room was deleted lately (the tombstone sync__cluster_delete leaves): a record that
 * is missing while this node's engine holds a version or an epoch of the room is then gone on
 * purpose, not lost by Redis, and must not come back from the engine. */
static bool deleted_lately(owner *o, const cluster_room *r)
{
    char *key = NULL;
    if (asprintf(&key, "%sdeleted:%s", o->cl->prefix, r->key) < 0)
        return false;
    const char *argv[] = {"EXISTS", key};
    redisReply *reply = NULL;
    bool yes = false;
    if (redis_conn_command(o->c, &reply, "cannot read the rooms of", 2, argv, NULL) == SYNC_OK) {
        yes = reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
        freeReplyObject(reply);
    }
    free(key);
    return yes;
}

/* The room's epoch on this node ("" none yet). */
static bool has_epoch(const cluster_room *r)
{
    pthread_mutex_lock(&r->cl->lock);
    bool yes = r->epoch[0] != '\0';
    pthread_mutex_unlock(&r->cl->lock);
    return yes;
}

static void room_idle(sync_engine *engine, int status, void *userdata)
{
    (void)engine;
    (void)status;
    cluster_room *r = userdata;
    sync__cluster *cl = r->cl;
    pthread_mutex_lock(&cl->lock);
    r->ready = true;
    sync__cluster_ready_fn fn = r->ready_fn;
    void *ud = r->ready_userdata;
    r->ready_fn = NULL;
    pthread_mutex_unlock(&cl->lock);
    cluster_room_unuse(r); /* the use load() kept for this callback */
    if (fn)
        fn(ud, SYNC_OK);
}

static void load(owner *o, cluster_room *r)
{
    sync__cluster *cl = o->cl;
    sync_engine *e = cluster_room_use(r);
    if (!e)
        return;
    pthread_mutex_lock(&cl->lock);
    r->need_load = false;
    bool link = !r->linked;
    r->linked = true;
    bool first = !r->ready;
    pthread_mutex_unlock(&cl->lock);
    if (link) {
        sync__cluster_link l = {cluster_forward, r};
        int rc = sync__engine_set_cluster_link(e, &l);
        if (rc != SYNC_OK) {
            pthread_mutex_lock(&cl->lock);
            r->linked = false;
            sync__cluster_ready_fn fn = r->ready_fn;
            r->ready_fn = NULL;
            pthread_mutex_unlock(&cl->lock);
            cluster_room_unuse(r);
            if (fn)
                fn(r->ready_userdata, rc);
            return;
        }
    }
    char *state = NULL;
    int64_t version = 0;
    char epoch[SYNC__EPOCH_MAX + 1] = "";
    char applied[REDIS_STREAM_ID_MAX];
    int rc = redis_fenced_load(o->c, r->key, &state, &version, epoch, applied);
    if (rc == SYNC_ECORRUPT)
        rc = SYNC_OK; /* kept aside: the room starts afresh */
    if (rc != SYNC_OK) {
        pthread_mutex_lock(&cl->lock);
        sync__cluster_ready_fn fn = r->ready_fn;
        r->ready_fn = NULL;
        if (!fn)
            r->need_load = true; /* a reload: tried again next turn */
        r->load_retry_ms = sync_now_ms() + o->tick_ms;
        pthread_mutex_unlock(&cl->lock);
        cluster_room_unuse(r);
        if (fn)
            fn(r->ready_userdata, rc);
        return;
    }
    if (state)
        cluster_adopt(r, version, epoch, state, strlen(state));
    sync_free(state);
    if (!first) {
        bool gone = !state && r->ready_userdata &&
                    (sync_engine_get_version(e) > 0 || has_epoch(r)) && deleted_lately(o, r);
        cluster_room_unuse(r);
        if (gone) /* deleted while this node did not listen */
            cluster_room_deleted(r);
        return;
    }
    /* ready once the adoption ran: a client that joins then gets the loaded version */
    if (sync_engine_when_idle(e, room_idle, r) < 0)
        room_idle(e, SYNC_ECLOSED, r); /* the use is its */
}

/* ---- leases and takeover ----------------------------------------------------------------- */

static void takeover(owner *o, cluster_room *r, int64_t token, int64_t now)
{
    sync__cluster *cl = o->cl;
    r->token = token;
    r->renewed_ms = now;
    sync_engine *e = cluster_room_use(r);
    if (!e) {
        give_up(o, r);
        return;
    }
    char *state = NULL;
    int64_t version = 0;
    char epoch[SYNC__EPOCH_MAX + 1] = "";
    char applied[REDIS_STREAM_ID_MAX], claimed[REDIS_STREAM_ID_MAX];
    int rc = redis_fenced_load_claimed(o->c, r->key, &state, &version, epoch, applied, claimed);
    if (rc == SYNC_ECORRUPT)
        rc = SYNC_OK;
    if (rc != SYNC_OK) {
        cluster_room_unuse(r);
        give_up(o, r);
        return;
    }
    /* the last owner may have run the entries after `applied` up to its claim: never again */
    snprintf(r->claimed, sizeof r->claimed, "%s", claimed);
    snprintf(r->refuse_upto, sizeof r->refuse_upto, "%s",
             redis_stream_id_cmp(claimed, applied) > 0 ? claimed : "0-0");
    int64_t local = sync_engine_get_version(e);
    if (!state && r->ready_userdata && (local > 0 || has_epoch(r)) && deleted_lately(o, r)) {
        /* deleted while this node's engine still held the room: it must not come back */
        cluster_room_unuse(r);
        give_up(o, r);
        cluster_room_deleted(r);
        return;
    }
    bool save = !epoch[0];
    /* The engine's version is newer than the record only when Redis lost writes (a restart
     * without persistence): its clients saw that version, so it stays. */
    if (!state || local > version) {
        sync_free(state);
        state = sync_engine_get_state_json(e);
        version = local > 0 ? local : 0;
        save = true;
    }
    if (!epoch[0]) {
        pthread_mutex_lock(&cl->lock);
        snprintf(epoch, sizeof epoch, "%s", r->epoch);
        pthread_mutex_unlock(&cl->lock);
        if (!epoch[0])
            sync__engine_get_epoch(e, epoch);
    }
    if (!state ||
        (save && (rc = redis_fenced_save(o->c, r->key, token, state, strlen(state), version, epoch,
                                         strcmp(applied, "0-0") ? applied : NULL)) != SYNC_OK)) {
        if (rc == SYNC_ESTATE)
            atomic_fetch_add(&cl->fenced_out, 1);
        sync_free(state);
        cluster_room_unuse(r);
        give_up(o, r);
        return;
    }
    r->state = state;
    r->version = version;
    snprintf(r->applied, sizeof r->applied, "%s", applied);
    cluster_room_unuse(r);
    /* before the first apply, which runs against the engine's committed state */
    cluster_adopt(r, version, epoch, state, strlen(state));
    /* Not published: the other nodes would stay behind until the next change. Dropping the room
     * makes the next lease turn take it again (this node still holds the lease) and republish. */
    if (cluster_publish_change(cl, o->c, r, version, epoch, state, strlen(state)) != SYNC_OK)
        lose(r);
    else
        atomic_fetch_add(&cl->takeovers, 1);
}

/* Renews, takes or loses the leases of the rooms in the snapshot. */
static void keep_leases(owner *o)
{
    sync__cluster *cl = o->cl;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", cl->lease_ms);
    size_t want = 0;
    cluster_room **list = malloc((o->count ? o->count : 1) * sizeof *list);
    if (!list)
        return;
    pthread_mutex_lock(&cl->lock);
    for (size_t i = 0; i < o->count; i++)
        if (o->rooms[i]->ready && !o->rooms[i]->detached && !o->rooms[i]->deleted)
            list[want++] = o->rooms[i];
    pthread_mutex_unlock(&cl->lock);
    for (size_t start = 0; start < want; start += CLUSTER_BATCH) {
        size_t n = want - start < CLUSTER_BATCH ? want - start : CLUSTER_BATCH;
        size_t argc = 3 + 2 * n + 2 + n;
        const char **argv = calloc(argc, sizeof *argv);
        char **owned = calloc(3 * n, sizeof *owned);
        if (!argv || !owned) {
            free(argv);
            free(owned);
            break;
        }
        char nkeys[16];
        snprintf(nkeys, sizeof nkeys, "%zu", 2 * n);
        size_t a = 0;
        argv[a++] = "EVAL";
        argv[a++] = KEEP_LUA;
        argv[a++] = nkeys;
        bool oom = false;
        for (size_t i = 0; i < n; i++) {
            cluster_room *r = list[start + i];
            if (asprintf(&owned[3 * i], "%slease:%s", cl->prefix, r->key) < 0 ||
                asprintf(&owned[3 * i + 1], "%sfence:%s", cl->prefix, r->key) < 0)
                oom = true;
            argv[a++] = owned[3 * i];
            argv[a++] = owned[3 * i + 1];
        }
        argv[a++] = cl->node;
        argv[a++] = ttl;
        for (size_t i = 0; i < n; i++) {
            if (asprintf(&owned[3 * i + 2], "%lld", (long long)list[start + i]->token) < 0)
                oom = true;
            argv[a++] = owned[3 * i + 2];
        }
        int64_t now = sync_now_ms();
        redisReply *reply = NULL;
        int rc = oom ? SYNC_ENOMEM
                     : redis_conn_command(o->c, &reply, "cannot keep the leases in", (int)argc,
                                          argv, NULL);
        bool ok = rc == SYNC_OK && reply->type == REDIS_REPLY_ARRAY && reply->elements == n;
        atomic_store(&cl->owner_up, ok);
        for (size_t i = 0; i < n; i++) {
            cluster_room *r = list[start + i];
            if (!ok) {
                /* unknown: still the owner until a whole lease passed without a renewal */
                if (r->token && now - r->renewed_ms >= cl->lease_ms)
                    lose(r);
                continue;
            }
            const redisReply *t = reply->element[i];
            int64_t token = t->type == REDIS_REPLY_INTEGER ? (int64_t)t->integer : 0;
            if (r->token) {
                if (token == r->token)
                    r->renewed_ms = now;
                else
                    lose(r);
            } else if (token > 0) {
                takeover(o, r, token, now);
            }
        }
        if (reply)
            freeReplyObject(reply);
        for (size_t i = 0; i < 3 * n; i++)
            free(owned[i]);
        free(owned);
        free(argv);
    }
    free(list);
}

/* ---- applying ---------------------------------------------------------------------------- */

static void apply_done(void *userdata, sync__remote_result *result)
{
    cluster_room *r = userdata;
    sync__cluster *cl = r->cl;
    pthread_mutex_lock(&cl->lock);
    r->result = *result; /* its contents are ours now; the holder is the engine's */
    r->has_result = true;
    cl->owner_wake = true;
    pthread_cond_broadcast(&cl->cond);
    pthread_mutex_unlock(&cl->lock);
}

/* A frame the owner's run sent to the sender: to its connection here, or to its node. */
static void route_reply(owner *o, cluster_room *r, const redis_entry *ent, const char *frame,
                        size_t len)
{
    sync__cluster *cl = o->cl;
    if (!ent->conn_id)
        return;
    if (strcmp(ent->node, cl->node) == 0) {
        sync_engine *e = cluster_room_use(r);
        if (e) {
            sync__engine_send_to_conn(e, ent->conn_id, frame, len);
            cluster_room_unuse(r);
        }
        return;
    }
    char *channel = NULL;
    if (asprintf(&channel, "%sreply:%s", cl->prefix, ent->node) < 0)
        return;
    char head[64];
    int head_len =
        snprintf(head, sizeof head, "%llu %zu ", (unsigned long long)ent->conn_id, strlen(r->key));
    size_t key_len = strlen(r->key);
    char *payload = malloc((size_t)head_len + key_len + len);
    if (payload) {
        memcpy(payload, head, (size_t)head_len);
        memcpy(payload + head_len, r->key, key_len);
        memcpy(payload + (size_t)head_len + key_len, frame, len);
        const char *argv[] = {"PUBLISH", channel, payload};
        size_t lens[] = {7, strlen(channel), (size_t)head_len + key_len + len};
        redisReply *reply = NULL;
        if (redis_conn_command(o->c, &reply, "cannot route a reply through", 3, argv, lens) ==
            SYNC_OK)
            freeReplyObject(reply);
        free(payload);
    }
    free(channel);
}

/* After the save of the entry in flight (rc): applied, adopted here, replies routed; or, fenced
 * out or unknown, the room dropped (the next owner refuses the entry: it is claimed). */
static void finish(owner *o, cluster_room *r, sync__remote_result *res, int64_t version, int rc)
{
    const redis_entry *ent = &r->entries[r->entry_next - 1];
    if (rc != SYNC_OK) {
        /* fenced out, or unknown whether saved: this node no longer knows the room's state */
        if (rc == SYNC_ESTATE)
            atomic_fetch_add(&o->cl->fenced_out, 1);
        sync__remote_result_clear(res);
        give_up(o, r);
        return;
    }
    snprintf(r->applied, sizeof r->applied, "%s", ent->id);
    atomic_fetch_add(&o->cl->applied, 1);
    if (version != r->version) {
        sync_free(r->state);
        r->state = res->state_json;
        res->state_json = NULL;
        r->version = version;
        char epoch[SYNC__EPOCH_MAX + 1];
        pthread_mutex_lock(&o->cl->lock);
        snprintf(epoch, sizeof epoch, "%s", r->epoch);
        pthread_mutex_unlock(&o->cl->lock);
        cluster_adopt(r, version, epoch, r->state, strlen(r->state));
    }
    for (size_t i = 0; i < res->reply_count; i++)
        route_reply(o, r, ent, res->replies[i], res->reply_lens[i]);
    sync__remote_result_clear(res);
}

/* Takes the result of the room's entry in flight: 1 when there was one. */
static int take_result(cluster_room *r, sync__remote_result *res)
{
    sync__cluster *cl = r->cl;
    pthread_mutex_lock(&cl->lock);
    int got = r->has_result;
    if (got) {
        *res = r->result;
        memset(&r->result, 0, sizeof r->result);
        r->has_result = false;
        r->inflight = false;
        pthread_cond_broadcast(&cl->cond); /* a detach may wait for it */
    }
    pthread_mutex_unlock(&cl->lock);
    return got;
}

/* The error of an entry a failed owner may have run (its sender gets it with reply_errors). */
static const char OWNER_FAILED[] = "not applied: the room's owner failed while running it";

/* The id of the room's next read entry that is to run and is not claimed yet, else NULL. */
static const char *to_claim(const cluster_room *r)
{
    for (size_t i = r->entry_next; i < r->entry_count; i++) {
        const redis_entry *ent = &r->entries[i];
        if (!ent->msg)
            continue;
        if (redis_stream_id_cmp(ent->id, r->refuse_upto) <= 0 ||
            redis_stream_id_cmp(ent->id, r->claimed) <= 0)
            return NULL;
        return ent->id;
    }
    return NULL;
}

/* Claims the next entry of every owned room that has none in flight and whose next entry is not
 * claimed yet (the first of a read; later ones are claimed by the previous entry's save): one
 * pipelined round trip. A room whose claim is refused (fenced out) or unknown is dropped. */
static void claim_next(owner *o)
{
    sync__cluster *cl = o->cl;
    cluster_room **rooms = malloc((o->count ? o->count : 1) * sizeof *rooms);
    redis_claim_req *reqs = malloc((o->count ? o->count : 1) * sizeof *reqs);
    size_t n = 0;
    for (size_t i = 0; rooms && reqs && i < o->count; i++) {
        cluster_room *r = o->rooms[i];
        if (!r->token)
            continue;
        pthread_mutex_lock(&cl->lock);
        bool busy = r->inflight || r->has_result;
        pthread_mutex_unlock(&cl->lock);
        const char *id = busy || o->draining ? NULL : to_claim(r);
        if (!id)
            continue;
        reqs[n] = (redis_claim_req){.room = r->key, .token = r->token, .id = id};
        rooms[n++] = r;
    }
    if (n && !atomic_load(&cl->killed)) {
        redis_fenced_claim_many(o->c, reqs, n);
        for (size_t i = 0; i < n; i++) {
            if (reqs[i].rc == SYNC_OK) {
                snprintf(rooms[i]->claimed, sizeof rooms[i]->claimed, "%s", reqs[i].id);
                continue;
            }
            if (reqs[i].rc == SYNC_ESTATE)
                atomic_fetch_add(&cl->fenced_out, 1);
            give_up(o, rooms[i]);
        }
    }
    free(rooms);
    free(reqs);
}

/* Runs the room's next read entry through its engine unless one is in flight. */
static void submit_next(owner *o, cluster_room *r)
{
    sync__cluster *cl = o->cl;
    pthread_mutex_lock(&cl->lock);
    bool busy = r->inflight || r->has_result || o->draining;
    pthread_mutex_unlock(&cl->lock);
    while (!busy && r->token && r->entry_next < r->entry_count) {
        redis_entry *ent = &r->entries[r->entry_next];
        bool refuse = ent->msg && redis_stream_id_cmp(ent->id, r->refuse_upto) <= 0;
        if (ent->msg && !refuse && redis_stream_id_cmp(ent->id, r->claimed) > 0)
            return; /* run only once claimed (claim_next) */
        r->entry_next++;
        if (!ent->msg) {
            snprintf(r->applied, sizeof r->applied, "%s", ent->id); /* not one a node wrote */
            continue;
        }
        sync_engine *e = cluster_room_use(r);
        if (!e)
            return;
        pthread_mutex_lock(&cl->lock);
        r->inflight = true;
        pthread_mutex_unlock(&cl->lock);
        sync__remote_msg msg = {ent->msg, ent->len, ent->identity, ent->conn_id,
                                refuse ? OWNER_FAILED : NULL};
        int rc = sync__engine_apply_remote(e, &msg, apply_done, r);
        cluster_room_unuse(r);
        if (rc != SYNC_OK) {
            /* not run (the engine is going): nothing is saved; claimed, so the next owner
             * refuses it (at most once) */
            pthread_mutex_lock(&cl->lock);
            r->inflight = false;
            pthread_cond_broadcast(&cl->cond);
            pthread_mutex_unlock(&cl->lock);
            give_up(o, r);
        }
        return;
    }
}

/* Applies the owned rooms' read entries in rounds: each round runs the next entry of every room
 * that has none in flight, then saves every result of the round in one pipelined round trip
 * (each room's save its own fenced script), then adopts them. Handlers that finish at once make
 * a round per entry; a room whose handler pends waits for its result while the others go on. */
static void apply_rooms(owner *o)
{
    sync__cluster *cl = o->cl;
    size_t cap = o->count ? o->count : 1;
    cluster_room **rooms = malloc(cap * sizeof *rooms);
    sync__remote_result *results = malloc(cap * sizeof *results);
    redis_save_req *reqs = malloc(cap * sizeof *reqs);
    if (!rooms || !results || !reqs) {
        free(rooms);
        free(results);
        free(reqs);
        return;
    }
    for (int round = 0; round < CLUSTER_READ_COUNT + 1; round++) {
        claim_next(o);
        size_t n = 0;
        for (size_t i = 0; i < o->count; i++) {
            cluster_room *r = o->rooms[i];
            if (!r->token)
                continue;
            submit_next(o, r);
            if (!take_result(r, &results[n]))
                continue;
            if (!r->token || atomic_load(&cl->killed)) {
                /* lost meanwhile: the next owner refuses it (claimed) */
                sync__remote_result_clear(&results[n]);
                continue;
            }
            bool changed = results[n].status == SYNC_OK && results[n].state_json;
            /* a refused message is saved too (its applied id): no later owner runs it again */
            reqs[n] = (redis_save_req){.room = r->key,
                                       .token = r->token,
                                       .json = changed ? results[n].state_json : r->state,
                                       .version = changed ? r->version + 1 : r->version,
                                       .applied = r->entries[r->entry_next - 1].id,
                                       .publish = changed,
                                       .claim = to_claim(r)}; /* the next one: no round trip */
            reqs[n].len = strlen(reqs[n].json);
            rooms[n++] = r;
        }
        if (!n)
            break;
        redis_fenced_save_publish_many(o->c, reqs, n);
        for (size_t i = 0; i < n; i++) {
            if (reqs[i].rc == SYNC_OK && reqs[i].claim)
                snprintf(rooms[i]->claimed, sizeof rooms[i]->claimed, "%s", reqs[i].claim);
            finish(o, rooms[i], &results[i], reqs[i].version, reqs[i].rc);
        }
    }
    free(rooms);
    free(results);
    free(reqs);
}

/* One XREAD over the streams of the owned rooms that have nothing left to apply: the number of
 * streams read (0: none to read, nothing waited for). */
static size_t read_streams(owner *o, int block_ms)
{
    sync__cluster *cl = o->cl;
    size_t n = 0;
    cluster_room **list = malloc((o->count ? o->count : 1) * sizeof *list);
    if (!list)
        return 0;
    pthread_mutex_lock(&cl->lock);
    for (size_t i = 0; i < o->count; i++) {
        cluster_room *r = o->rooms[i];
        if (r->token && !r->detached && !r->inflight && r->entry_next >= r->entry_count &&
            n < CLUSTER_BATCH * 4)
            list[n++] = r;
    }
    pthread_mutex_unlock(&cl->lock);
    if (!n) {
        free(list);
        return 0;
    }
    size_t argc = 6 + 2 * n;
    const char **argv = malloc(argc * sizeof *argv);
    if (!argv) {
        free(list);
        return 0;
    }
    char count[16], block[16];
    snprintf(count, sizeof count, "%d", CLUSTER_READ_COUNT);
    snprintf(block, sizeof block, "%d", block_ms);
    size_t a = 0;
    argv[a++] = "XREAD";
    argv[a++] = "COUNT";
    argv[a++] = count;
    if (block_ms > 0) {
        argv[a++] = "BLOCK";
        argv[a++] = block;
    }
    argv[a++] = "STREAMS";
    for (size_t i = 0; i < n; i++)
        argv[a++] = list[i]->stream_key;
    for (size_t i = 0; i < n; i++) {
        redis_entries_free(list[i]->entries, list[i]->entry_count);
        list[i]->entries = NULL;
        list[i]->entry_count = list[i]->entry_next = 0;
        argv[a++] = list[i]->applied;
    }
    redisReply *reply = NULL;
    int rc =
        redis_conn_command(o->c, &reply, "cannot read the rooms' streams in", (int)a, argv, NULL);
    free(argv);
    if (rc != SYNC_OK) {
        free(list);
        cluster_sleep_ms(o->tick_ms / 4 > 0 ? o->tick_ms / 4 : 1);
        return n;
    }
    /* [[stream, [[id, [field, value...]], ...]], ...] in the order asked */
    size_t at = 0;
    if (reply->type == REDIS_REPLY_ARRAY)
        for (size_t s = 0; s < reply->elements; s++) {
            const redisReply *st = reply->element[s];
            if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
                st->element[0]->type != REDIS_REPLY_STRING ||
                st->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            size_t k = 0;
            for (; k < n; k++) {
                cluster_room *r = list[(at + k) % n];
                if (strlen(r->stream_key) == st->element[0]->len &&
                    memcmp(r->stream_key, st->element[0]->str, st->element[0]->len) == 0)
                    break;
            }
            if (k == n)
                continue;
            cluster_room *r = list[(at + k) % n];
            at = (at + k + 1) % n;
            const redisReply *es = st->element[1];
            r->entries = es->elements ? sync_malloc(es->elements * sizeof *r->entries) : NULL;
            if (!r->entries)
                continue;
            size_t got = 0;
            for (size_t i = 0; i < es->elements; i++) {
                int p = redis_entry_parse(es->element[i], &r->entries[got]);
                if (p < 0)
                    break;
                if (p == 0) {
                    /* not one a node wrote: skipped, but its id moves the reader on */
                    const redisReply *x = es->element[i];
                    if (x->type == REDIS_REPLY_ARRAY && x->elements == 2 &&
                        x->element[0]->type == REDIS_REPLY_STRING &&
                        x->element[0]->len < REDIS_STREAM_ID_MAX) {
                        memset(&r->entries[got], 0, sizeof r->entries[got]);
                        memcpy(r->entries[got].id, x->element[0]->str, x->element[0]->len);
                        got++;
                    }
                    continue;
                }
                got++;
            }
            r->entry_count = got;
        }
    freeReplyObject(reply);
    free(list);
    return n;
}

/* ---- the loop ---------------------------------------------------------------------------- */

/* Stopping cleanly: the runs in flight finish and are saved (up to half a lease), so that their
 * messages are neither lost nor refused by the next owner; nothing new starts. */
static void drain(owner *o)
{
    sync__cluster *cl = o->cl;
    o->draining = true;
    int64_t until = sync_now_ms() + cl->lease_ms / 2;
    while (!atomic_load(&cl->killed)) {
        apply_rooms(o);
        bool busy = false;
        pthread_mutex_lock(&cl->lock);
        for (size_t i = 0; i < o->count; i++)
            if (o->rooms[i]->token && (o->rooms[i]->inflight || o->rooms[i]->has_result))
                busy = true;
        if (busy && sync_now_ms() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&cl->cond, &cl->lock, &ts);
        }
        pthread_mutex_unlock(&cl->lock);
        if (!busy || sync_now_ms() >= until)
            break;
    }
}

/* This turn's rooms; the detached ones are unlinked from the list, their leases given up and
 * their list reference dropped. */
static void snapshot(owner *o)
{
    sync__cluster *cl = o->cl;
    cluster_room *gone = NULL;
    pthread_mutex_lock(&cl->lock);
    o->count = 0;
    bool reload = cl->reload_all;
    cl->reload_all = false;
    cl->owner_wake = false;
    for (cluster_room *r = cl->rooms, *next; r; r = next) {
        next = r->next;
        if (r->detached && !r->engine) {
            if (r->prev)
                r->prev->next = r->next;
            else
                cl->rooms = r->next;
            if (r->next)
                r->next->prev = r->prev;
            r->prev = NULL;
            r->next = gone;
            gone = r;
            continue;
        }
        if (reload && r->ready && !r->deleted)
            r->need_load = true;
        if (o->count == o->cap) {
            size_t cap = o->cap ? o->cap * 2 : 64;
            cluster_room **grown = realloc(o->rooms, cap * sizeof *grown);
            if (!grown)
                break;
            o->rooms = grown;
            o->cap = cap;
        }
        o->rooms[o->count++] = r;
    }
    pthread_mutex_unlock(&cl->lock);
    /* deleted: the script took the lease away; nothing of the room is kept */
    for (size_t i = 0; i < o->count; i++) {
        cluster_room *r = o->rooms[i];
        pthread_mutex_lock(&cl->lock);
        bool deleted = r->deleted && !r->inflight;
        pthread_mutex_unlock(&cl->lock);
        if (deleted && (r->token || r->state))
            lose(r);
    }
    while (gone) {
        cluster_room *next = gone->next;
        give_up_clean(o, gone);
        cluster_room_unref(gone);
        gone = next;
    }
}

void *cluster_owner_main(void *arg)
{
    sync__cluster *cl = arg;
    owner o = {.cl = cl, .c = &cl->own_conn, .tick_ms = cl->lease_ms / 6};
    if (o.tick_ms < 10)
        o.tick_ms = 10;
    int64_t next_keep = 0;
    while (!atomic_load(&cl->stop) && !atomic_load(&cl->killed)) {
        snapshot(&o);
        int64_t now = sync_now_ms();
        for (size_t i = 0; i < o.count; i++) {
            cluster_room *r = o.rooms[i];
            pthread_mutex_lock(&cl->lock);
            bool need = r->need_load && !r->detached && !r->deleted && now >= r->load_retry_ms;
            pthread_mutex_unlock(&cl->lock);
            if (need)
                load(&o, r);
        }
        if (now >= next_keep) {
            next_keep = now + o.tick_ms;
            keep_leases(&o);
        }
        apply_rooms(&o);
        bool owned = false, waiting = false;
        size_t owned_count = 0;
        for (size_t i = 0; i < o.count; i++) {
            cluster_room *r = o.rooms[i];
            if (!r->token)
                continue;
            owned = true;
            owned_count++;
            pthread_mutex_lock(&cl->lock);
            if (r->inflight || r->has_result || r->entry_next < r->entry_count)
                waiting = true;
            pthread_mutex_unlock(&cl->lock);
        }
        atomic_store(&cl->owned_count, owned_count);
        int64_t until_keep = next_keep - sync_now_ms();
        int wait_ms = (int)(until_keep < 50 ? (until_keep > 1 ? until_keep : 1) : 50);
        /* blocks in XREAD while there is nothing to do, never past the next lease turn; a short
         * block while a room has an apply in flight (its done cannot wake an XREAD) */
        if (owned && read_streams(&o, waiting ? 2 : wait_ms) > 0)
            continue;
        /* nothing to read: wait for a wake-up (an apply's result, a new room, stop) */
        pthread_mutex_lock(&cl->lock);
        if (!cl->owner_wake && !atomic_load(&cl->stop) && until_keep > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long long ns = (long long)ts.tv_nsec + (long long)wait_ms * 1000000LL;
            ts.tv_sec += (time_t)(ns / 1000000000LL);
            ts.tv_nsec = (long)(ns % 1000000000LL);
            pthread_cond_timedwait(&cl->cond, &cl->lock, &ts);
        }
        pthread_mutex_unlock(&cl->lock);
    }
    /* stopping: give up what this node holds, so another node takes over at once */
    atomic_store(&cl->owned_count, 0);
    snapshot(&o);
    drain(&o);
    for (size_t i = 0; i < o.count; i++)
        if (o.rooms[i]->token)
            give_up_clean(&o, o.rooms[i]);
    free(o.rooms);
    return NULL;
}

#endif
