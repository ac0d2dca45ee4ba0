/* test_runqlat_workload CGROUP_DIR busy|sleep CHILDREN MILLISECONDS CPU
 *
 * Starts CHILDREN processes directly inside CGROUP_DIR (clone3 with
 * CLONE_INTO_CGROUP: they never run anywhere else, so every switch they make
 * belongs to that cgroup), pinned to CPU. "busy" children spin for
 * MILLISECONDS, "sleep" children sleep that long. When all have exited the
 * parent prints their pids, one per line, and keeps them as zombies (their
 * /proc/<pid>/schedstat and status stay readable) until stdin is closed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 16

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void child(int busy, long ms, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        _exit(2);
    if (busy) {
        long long end = now_ns() + ms * 1000000LL;
        volatile unsigned long spins = 0;
        while (now_ns() < end)
            spins++;
    } else {
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    _exit(0);
}

int main(int argc, char **argv)
{
    pid_t pids[MAX_CHILDREN];
    char buf[64];
    int n, cpu, busy, cgroup_fd;
    long ms;

    if (argc != 6) {
        fprintf(stderr, "usage: %s CGROUP_DIR busy|sleep CHILDREN MS CPU\n", argv[0]);
        return 2;
    }
    busy = strcmp(argv[2], "busy") == 0;
    n = atoi(argv[3]);
    ms = atol(argv[4]);
    cpu = atoi(argv[5]);
    if (n < 1 || n > MAX_CHILDREN)
        return 2;
    cgroup_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgroup_fd < 0) {
        perror("open cgroup");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        struct clone_args args;
        memset(&args, 0, sizeof(args));
        args.flags = CLONE_INTO_CGROUP;
        args.exit_signal = SIGCHLD;
        args.cgroup = cgroup_fd;
        pids[i] = syscall(SYS_clone3, &args, sizeof(args));
        if (pids[i] < 0) {
            perror("clone3");
            return 1;
        }
        if (pids[i] == 0)
            child(busy, ms, cpu);
    }
    for (int i = 0; i < n; i++) {
        siginfo_t info;
        if (waitid(P_PID, pids[i], &info, WEXITED | WNOWAIT) != 0 || info.si_status != 0) {
            fprintf(stderr, "child %d failed\n", pids[i]);
            return 1;
        }
    }
    for (int i = 0; i < n; i++)
        printf("%d\n", pids[i]);
    fflush(stdout);
    while (read(0, buf, sizeof(buf)) > 0)
        ;
    for (int i = 0; i < n; i++)
        waitpid(pids[i], NULL, 0);
    return 0;
}
