/* Benchmark workload: two threads each compute argv[2] chunks of argv[3]
 * hash rounds (a chunk is ~10 ms when calibrated) and write one line to the
 * file argv[1] after every chunk: CPU-bound with light I/O. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static FILE *out;
static long chunks, rounds;

static void *worker(void *arg) {
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)(uintptr_t)arg;
    for (long c = 0; c < chunks; c++) {
        for (long r = 0; r < rounds; r++) {
            /* FNV-1a over the round counter, then an xorshift mix. */
            h = (h ^ (uint64_t)r) * 0x100000001b3ULL;
            h ^= h >> 29;
            h ^= h << 11;
        }
        char line[96];
        int n = snprintf(line, sizeof line, "thread %ld chunk %ld hash %016llx\n",
                         (long)(uintptr_t)arg, c, (unsigned long long)h);
        /* One write(2) per line: fileno + write, not buffered stdio. */
        if (write(fileno(out), line, (size_t)n) != n) return (void *)1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s FILE CHUNKS ROUNDS\n", argv[0]);
        return 2;
    }
    out = fopen(argv[1], "w");
    if (!out) return 1;
    chunks = atol(argv[2]);
    rounds = atol(argv[3]);
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    void *r0, *r1;
    pthread_join(t[0], &r0);
    pthread_join(t[1], &r1);
    fclose(out);
    return r0 || r1;
}
