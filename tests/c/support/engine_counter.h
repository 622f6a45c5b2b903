/* The original test suite's fixture: increment/decrement handlers, a validator that requires a
 * numeric "amount", and a middleware that doubles increments. */
#ifndef LIBSYNC_TEST_ENGINE_COUNTER_H
#define LIBSYNC_TEST_ENGINE_COUNTER_H

#include <libsync/libsync.h>

#include "fake_conn.h"

int counter_increment(sync_msg *msg, void *userdata);
int counter_decrement(sync_msg *msg, void *userdata);
int counter_require_amount(sync_msg *msg, void *userdata);
int counter_double_increments(sync_msg *msg, void *userdata);
/* Registers increment and decrement (and the validator when `validate`). */
void counter_register(sync_engine *engine, int validate);
/* hooked_engine(opts, log) with counter_register(validate): NULL when sync_engine_new failed. */
sync_engine *counter_engine(const sync_engine_options *opts, hook_log *log, int validate);
/* data.counter of the engine's state, or -999999. */
double counter_value(sync_engine *engine);
/* Sends {"type":TYPE,"amount":AMOUNT} through handle_message (conn) or inject (NULL). */
int counter_send(sync_engine *engine, sync_conn *conn, const char *type, double amount);

#endif
