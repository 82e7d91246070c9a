/* Runs until killed: a syscall every millisecond, so attach has work. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    printf("ready\n");
    fflush(stdout);
    struct timespec ts = {0, 1000000};
    for (;;) {
        getppid();
        nanosleep(&ts, 0);
    }
}
