/* Forks a child that execs argv[1..]; waits and exits with its status. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    printf("child %d status %d\n", pid, WEXITSTATUS(status));
    return WEXITSTATUS(status);
}
