/* What the micro benchmarks (bench_state_check, bench_json_patch) share: the clock they time with
 * and the list-of-records state they measure. */
#ifndef LIBSYNC_BENCH_COMMON_H
#define LIBSYNC_BENCH_COMMON_H

#include <cjson/cJSON.h>

/* Microseconds on the monotonic clock. */
double bench_now_us(void);

/* {"counter":0,"items":[...]}: `count` records {"id","name","price","stock"} of about 80 bytes
 * each, and "tags":["a","b"] in each when `tags`. */
cJSON *bench_records(int count, int tags);

#endif
