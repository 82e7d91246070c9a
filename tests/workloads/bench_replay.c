/* Benchmark workload for replay: single-threaded CPU work with a moderate
 * syscall rate. argv[1] iterations of argv[2] hash rounds (~20 us when
 * calibrated), each followed by one getppid(2); every 8th iteration also
 * writes a 64-byte line to /dev/null. Prints the final hash. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ITERATIONS ROUNDS\n", argv[0]);
        return 2;
    }
    long iters = atol(argv[1]), rounds = atol(argv[2]);
    int null = open("/dev/null", O_WRONLY);
    if (null < 0) return 1;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (long i = 0; i < iters; i++) {
        for (long r = 0; r < rounds; r++) {
            h = (h ^ (uint64_t)r) * 0x100000001b3ULL;
            h ^= h >> 29;
            h ^= h << 11;
        }
        h ^= (uint64_t)syscall(SYS_getppid);
        if (i % 8 == 0) {
            char line[64];
            int n = snprintf(line, sizeof line, "iteration %ld hash %016llx\n", i,
                             (unsigned long long)h);
            if (write(null, line, (size_t)n) != n) return 1;
        }
    }
    printf("%016llx\n", (unsigned long long)h);
    return 0;
}
