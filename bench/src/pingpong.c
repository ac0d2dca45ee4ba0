/* pingpong N [CPU]: two processes bounce a byte over a pair of pipes N times.
 *
 * Every round trip blocks each side once, so the storm is 2N context switches
 * (all of them between the two when both are pinned to CPU, the default 0;
 * pass -1 to let them float). Prints the switches the two made, from
 * getrusage, as "switches=<voluntary>+<involuntary>".
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void must(int ok, const char *what)
{
    if (!ok) {
        perror(what);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int cpu = argc > 2 ? atoi(argv[2]) : 0;
    int there[2], back[2];
    struct rusage self, child;
    char byte = 0;
    pid_t pid;

    if (cpu >= 0) { /* before fork: the child inherits it */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        must(sched_setaffinity(0, sizeof(set), &set) == 0, "sched_setaffinity");
    }
    must(pipe(there) == 0 && pipe(back) == 0, "pipe");
    pid = fork();
    must(pid >= 0, "fork");
    if (pid == 0) {
        for (long i = 0; i < n; i++) {
            must(read(there[0], &byte, 1) == 1, "child read");
            must(write(back[1], &byte, 1) == 1, "child write");
        }
        _exit(0);
    }
    for (long i = 0; i < n; i++) {
        must(write(there[1], &byte, 1) == 1, "write");
        must(read(back[0], &byte, 1) == 1, "read");
    }
    must(waitpid(pid, NULL, 0) == pid, "waitpid");
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &child);
    printf("switches=%ld+%ld\n", self.ru_nvcsw + child.ru_nvcsw, self.ru_nivcsw + child.ru_nivcsw);
    return 0;
}
