#include "check.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int check_failures_in_case;
int check_cases_passed;
int check_cases_failed;

void check_report(const char *file, int line, const char *what)
{
    fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, what);
    check_failures_in_case++;
}

void check_run(const char *name, void (*fn)(void))
{
    check_failures_in_case = 0;
    fprintf(stderr, "- %s\n", name);
    fn();
    if (check_failures_in_case) {
        check_cases_failed++;
        fprintf(stderr, "  -> failed\n");
    } else {
        check_cases_passed++;
    }
}

int check_summary(void)
{
    printf("%d passed, %d failed\n", check_cases_passed, check_cases_failed);
    return check_cases_failed ? 1 : 0;
}

char *check_tmpdir(const char *name)
{
    const char *base = getenv("LIBSYNC_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    char *path = NULL;
    if (asprintf(&path, "%s/%s-%ld-XXXXXX", base, name, (long)getpid()) < 0)
        abort();
    if (!mkdtemp(path))
        abort();
    return path;
}

long long check_elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)(now.tv_sec - since->tv_sec) * 1000 +
           (now.tv_nsec - since->tv_nsec) / 1000000;
}

void check_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
