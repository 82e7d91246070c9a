/* Grows the heap with sbrk in steps, writing each new part, pausing between
 * steps so checkpoints fall in between; then gives some back. Prints a sum
 * of what it wrote. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STEP (256 * 1024)

int main(void) {
    struct timespec ts = {0, 15 * 1000000L};
    unsigned long sum = 0;
    char *base = sbrk(0);
    for (int i = 0; i < 12; i++) {
        char *p = sbrk(STEP);
        if (p == (void *)-1) return 1;
        memset(p, i + 1, STEP);
        for (char *q = base; q < p + STEP; q += 4096) sum += (unsigned char)*q;
        nanosleep(&ts, 0);
    }
    if (sbrk(-4 * STEP) == (void *)-1) return 1;
    nanosleep(&ts, 0);
    printf("%lu\n", sum);
    return 0;
}
