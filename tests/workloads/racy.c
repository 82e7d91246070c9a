/* Two threads increment a shared counter with no synchronisation at all:
 * the final value depends on how their increments interleaved. */
#include <pthread.h>
#include <stdio.h>

static volatile long counter;

static void *worker(void *arg) {
    (void)arg;
    for (long i = 0; i < 50000000; i++) counter++;
    return 0;
}

int main(void) {
    pthread_t a, b;
    pthread_create(&a, 0, worker, 0);
    pthread_create(&b, 0, worker, 0);
    pthread_join(a, 0);
    pthread_join(b, 0);
    printf("counter %ld\n", counter);
    return 0;
}
