/* The clocks beside the public sync_now_ms() and sync_wall_ms(). */
#ifndef LIBSYNC_SRC_CLOCK_H
#define LIBSYNC_SRC_CLOCK_H

#include <stdint.h>

/* The sync_now_ms() clock in microseconds (durations of saves, the broadcast's yield). */
int64_t sync__now_us(void);

#endif
