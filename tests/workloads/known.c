/* Makes syscalls with known results and prints what it saw, one line each,
 * so a test can check the trace holds exactly those bytes and values. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static void hex(const char *tag, const unsigned char *b, long n) {
    printf("%s ", tag);
    for (long i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    const char *file = argc > 1 ? argv[1] : "/etc/hostname";
    const char *dir = argc > 2 ? argv[2] : "/";
    unsigned char buf[65536];

    int fd = open(file, O_RDONLY);
    long n = read(fd, buf, sizeof buf);
    printf("read_ret %ld\n", n);
    hex("read_hex", buf, n);
    close(fd);

    /* Several buffers, the last one not filled. */
    static unsigned char a[100], b[5000], c[60000];
    struct iovec iov[3] = {{a, sizeof a}, {b, sizeof b}, {c, sizeof c}};
    fd = open(file, O_RDONLY);
    n = readv(fd, iov, 3);
    printf("readv_ret %ld\n", n);
    printf("readv_hex ");
    for (long i = 0; i < n; i++)
        printf("%02x", i < 100 ? a[i] : i < 5100 ? b[i - 100] : c[i - 5100]);
    printf("\n");
    close(fd);

    n = getrandom(buf, 32, 0);
    printf("getrandom_ret %ld\n", n);
    hex("getrandom_hex", buf, n);

    struct timespec ts;
    long r = syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts);
    printf("clock_ret %ld\n", r);
    hex("clock_hex", (unsigned char *)&ts, sizeof ts);

    int p[2];
    pipe(p);
    hex("pipe_fds", (unsigned char *)p, sizeof p);
    write(p[1], "ping-pong-1234", 14);
    n = read(p[0], buf, sizeof buf);
    printf("pipe_ret %ld\n", n);
    hex("pipe_hex", buf, n);

    struct stat st;
    r = stat(file, &st);
    printf("stat_ret %ld\n", r);
    hex("stat_hex", (unsigned char *)&st, sizeof st);

    fd = open(dir, O_RDONLY | O_DIRECTORY);
    n = syscall(SYS_getdents64, fd, buf, sizeof buf);
    printf("getdents_ret %ld\n", n);
    hex("getdents_hex", buf, n);
    close(fd);
    return 0;
}
