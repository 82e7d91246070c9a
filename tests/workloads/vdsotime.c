/* Reads the clock through libc (normally the vDSO, no syscall) and prints
 * what it got, so a test can find the same values in the trace. */
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

int main(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("monotonic %ld %ld\n", (long)ts.tv_sec, ts.tv_nsec);
    struct timeval tv;
    gettimeofday(&tv, 0);
    printf("timeofday %ld %ld\n", (long)tv.tv_sec, (long)tv.tv_usec);
    printf("time %ld\n", (long)time(0));
    return 0;
}
