/* Benchmark workload for checkpoint stop time: allocates argv[1] MiB and
 * writes non-zero data to every page (so it is all resident and must be
 * stored), prints "ready", then for argv[3] ms (default 2000) sleeps 50 ms
 * and rewrites the same first argv[2] MiB (default 10), round after round. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s RESIDENT_MIB [CHANGED_MIB [MS]]\n", argv[0]);
        return 2;
    }
    size_t mib = strtoul(argv[1], NULL, 10);
    size_t changed = argc > 2 ? strtoul(argv[2], NULL, 10) : 10;
    long ms = argc > 3 ? atol(argv[3]) : 2000;
    size_t len = mib << 20, step = changed << 20;
    if (step > len) step = len;
    long page = sysconf(_SC_PAGESIZE);
    uint8_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    /* Every page different, none zero. */
    for (size_t off = 0; off < len; off += (size_t)page) {
        uint64_t v = 0x9e3779b97f4a7c15ULL * (off / (size_t)page + 1);
        memset(buf + off, (int)(v >> 56) | 1, (size_t)page);
        memcpy(buf + off, &v, sizeof v);
    }
    /* Resident: tell the bench, which then attaches the recorder. */
    printf("ready\n");
    fflush(stdout);
    struct timespec nap = {0, 50 * 1000 * 1000};
    uint64_t round = 0;
    double end = now() + ms / 1e3;
    while (now() < end) {
        nanosleep(&nap, NULL);
        round++;
        /* The same first CHANGED_MIB every round, so that each checkpoint
         * finds that much changed; one word per page changes the page. */
        for (size_t pos = 0; pos < step; pos += (size_t)page) {
            uint64_t v = round * 0x100000001b3ULL + pos;
            memcpy(buf + pos + 8, &v, sizeof v);
        }
    }
    /* Keep the buffer live. */
    return buf[len - 1] == 0;
}
