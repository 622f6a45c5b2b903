/*
 * A tiny test harness for the C suite: CHECK() records a failure and goes on, REQUIRE() stops the
 * test case, RUN() runs one case, and check_summary() prints "N passed, N failed" and gives the
 * exit status. Each tests/c/test_*.c is one executable registered with ctest.
 */
#ifndef LIBSYNC_TEST_CHECK_H
#define LIBSYNC_TEST_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

extern int check_failures_in_case;
extern int check_cases_passed;
extern int check_cases_failed;

void check_report(const char *file, int line, const char *what);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            check_report(__FILE__, __LINE__, #cond);                                               \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            check_report(__FILE__, __LINE__, #cond);                                               \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                            \
        if (check_a_ != check_b_) {                                                                \
            char check_msg_[256];                                                                  \
            snprintf(check_msg_, sizeof check_msg_, "%s == %s (%lld != %lld)", #a, #b, check_a_,   \
                     check_b_);                                                                    \
            check_report(__FILE__, __LINE__, check_msg_);                                          \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                                               \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                           \
            char check_msg_[512];                                                                  \
            snprintf(check_msg_, sizeof check_msg_, "%s == %s (\"%s\" != \"%s\")", #a, #b,         \
                     check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)");              \
            check_report(__FILE__, __LINE__, check_msg_);                                          \
        }                                                                                          \
    } while (0)

void check_run(const char *name, void (*fn)(void));
#define RUN(fn) check_run(#fn, fn)

/* Prints the summary line and returns the process exit status (0 when nothing failed). */
int check_summary(void);

/* Milliseconds on the monotonic clock since `since` (taken with clock_gettime(CLOCK_MONOTONIC)). */
long long check_elapsed_ms(const struct timespec *since);

/* Sleeps `ms` milliseconds. */
void check_sleep_ms(int ms);

/* A fresh empty directory for this test under $LIBSYNC_TEST_TMP (or /tmp); caller frees. */
char *check_tmpdir(const char *name);

#endif
