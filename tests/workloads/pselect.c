/* make's pattern (jobserver): SIGCHLD blocked except inside pselect(2),
 * whose temporary mask lets it in. Forks short-lived children and waits
 * for them in pselect; the handler counts them. Where the signal cuts
 * pselect short, the kernel runs the handler with pselect's mask and puts
 * the thread's own mask back after it. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t exited;

static void on_child(int sig) { (void)sig; exited++; }

int main(int argc, char **argv) {
    int children = argc > 1 ? atoi(argv[1]) : 40;
    sigset_t block, open_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &open_mask);
    struct sigaction sa = {0};
    sa.sa_handler = on_child;
    sigaction(SIGCHLD, &sa, 0);
    int interrupted = 0, reaped = 0;
    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            usleep(2000);
            _exit(i & 0x7f);
        }
        while (reaped <= i) {
            if (exited == 0) {
                int r = pselect(0, 0, 0, 0, 0, &open_mask);
                if (r < 0 && errno == EINTR) interrupted++;
            }
            int status;
            while (waitpid(-1, &status, WNOHANG) > 0) reaped++;
            exited = 0;
        }
    }
    sigset_t now;
    sigprocmask(SIG_BLOCK, 0, &now);
    printf("%d children, %d pselect interrupted, SIGCHLD still blocked: %d\n", reaped,
           interrupted, sigismember(&now, SIGCHLD));
    return 0;
}
