/* Writes known byte patterns into heap, stack, an anonymous shared
 * mapping and a private one, phase by phase, pausing between phases so
 * checkpoints fall between them; in phase 2 the private one is then
 * dropped (MADV_DONTNEED: it reads as zeros). Prints the addresses; marks
 * each phase with a write(2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SIZE (64 * 1024)

int main(int argc, char **argv) {
    int phases = argc > 1 ? atoi(argv[1]) : 3;
    long pause_ms = argc > 2 ? atol(argv[2]) : 400;
    volatile unsigned char stack[SIZE];
    unsigned char *heap = malloc(SIZE);
    unsigned char *shared = mmap(0, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    unsigned char *zap = mmap(0, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("heap %p stack %p shared %p size %d zap %p\n", (void *)heap, (void *)stack, (void *)shared, SIZE,
           (void *)zap);
    fflush(stdout);
    struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
    for (int p = 1; p <= phases; p++) {
        memset(heap, p, SIZE);
        memset((void *)stack, p, SIZE);
        memset(shared, p, SIZE);
        memset(zap, p, SIZE);
        if (p == 2)
            madvise(zap, SIZE, MADV_DONTNEED);
        char mark[32];
        int n = snprintf(mark, sizeof mark, "phase %d\n", p);
        write(2, mark, n);
        nanosleep(&ts, 0);
    }
    return stack[0] + heap[0] + shared[0] == 3 * phases ? 0 : 1;
}
