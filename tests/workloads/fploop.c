/* Bursts of a loop whose only changing state is a floating-point register
 * (the general registers are the same in every iteration), each burst
 * followed by a getppid(2): a checkpoint almost always catches it inside a
 * burst, where only the FPU/SSE state tells the iterations apart. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long bursts = argc > 1 ? atol(argv[1]) : 400;
    double total = 0;
    for (long b = 0; b < bursts; b++) {
        double d = 1.0;
        while (d < 2.0) d *= 1.0001;
        total += d;
        syscall(SYS_getppid);
    }
    printf("%.3f\n", total);
    return 0;
}
