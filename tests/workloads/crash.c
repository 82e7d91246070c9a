/* Works for a while, then dies of SIGSEGV. */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long ms = argc > 1 ? atol(argv[1]) : 600;
    struct timespec ts = {0, 10 * 1000000L};
    for (long i = 0; i < ms / 10; i++) {
        getppid();
        nanosleep(&ts, 0);
    }
    *(volatile int *)0 = 1;
    return 0;
}
