/* Benchmark workload: two threads hand a turn back and forth argv[1] times
 * through a pthread mutex and condition variable (each hand-off wakes the
 * other thread: futex syscalls and context switches). */
#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long turn;  /* number of hand-offs so far; thread (turn % 2) plays next */
static long total;

static void *player(void *arg) {
    long me = (long)arg;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (turn < total && turn % 2 != me) pthread_cond_wait(&cv, &mu);
        if (turn >= total) break;
        turn++;
        pthread_cond_signal(&cv);
    }
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv) {
    total = argc > 1 ? atol(argv[1]) : 100000;
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, player, (void *)i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    return turn == total ? 0 : 1;
}
