/* Four workers repeatedly compute a little, add their result to a shared
 * total under a mutex, signal a condition variable and sleep; main waits on
 * the condition until every worker has reported every round. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define ROUNDS 40

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done = PTHREAD_COND_INITIALIZER;
static long total, reports;

static void *worker(void *arg) {
    long id = (long)arg;
    for (int r = 0; r < ROUNDS; r++) {
        long sum = 0;
        for (long i = 0; i < 2000; i++) sum += (i ^ id) & 7;
        pthread_mutex_lock(&lock);
        total += sum;
        reports++;
        pthread_cond_signal(&done);
        pthread_mutex_unlock(&lock);
        usleep(2000 + 500 * id);
    }
    return 0;
}

int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, worker, (void *)i);
    pthread_mutex_lock(&lock);
    while (reports < 4 * ROUNDS) pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    printf("total %ld\n", total);
    return 0;
}
