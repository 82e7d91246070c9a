/* A thread makes syscalls without pause while the main thread execs
 * /bin/true with a megabyte of arguments: the kernel copies them while
 * the thread runs on, and kills it only then, so the log has the
 * thread's syscalls after the exec's entry and before its return. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define ARGS 256
#define ARG_BYTES 4096

static char text[ARGS][ARG_BYTES];

static void *busy(void *arg) {
    (void)arg;
    for (;;) getppid();
    return 0;
}

int main(void) {
    char *argv[ARGS + 2];
    argv[0] = "true";
    for (int i = 0; i < ARGS; i++) {
        memset(text[i], 'a' + i % 26, ARG_BYTES - 1);
        argv[i + 1] = text[i];
    }
    argv[ARGS + 1] = 0;
    pthread_t t;
    pthread_create(&t, 0, busy, 0);
    usleep(20000);
    execv("/bin/true", argv);
    return 1;
}
