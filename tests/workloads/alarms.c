/* A CPU loop interrupted by SIGALRM every 2 ms (setitimer): the handler
 * counts ticks and the loop copies the count into memory at every
 * iteration, so where each signal landed in the user code shows in the
 * memory and in the output. A getppid(2) at every iteration, so that a
 * signal's place is found after a few hundred passes of the inner loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static volatile long ticks;
static long seen[2048][2];

static void on_alarm(int sig) { (void)sig; ticks++; }

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 50000;
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 2000}, {0, 2000}};
    setitimer(ITIMER_REAL, &it, 0);
    unsigned long h = 1469598103934665603UL, sum = 0;
    for (long i = 0; i < iters; i++) {
        /* Before and after the loop: a signal that lands inside it shows
         * as a difference between the two. */
        seen[i % 2048][0] = ticks;
        for (int r = 0; r < 200; r++) h = (h ^ (unsigned long)r) * 1099511628211UL;
        seen[i % 2048][1] = ticks;
        syscall(SYS_getppid);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);
    for (int i = 0; i < 2048; i++) sum += (unsigned long)(seen[i][0] * 3 + seen[i][1]) * (unsigned long)(i + 1);
    printf("%lu %lu %ld\n", h, sum, ticks);
    return 0;
}
