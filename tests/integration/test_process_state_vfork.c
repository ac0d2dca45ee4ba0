/* test_process_state_vfork: a process in uninterruptible sleep on demand.
 *
 * vfork(): the parent sleeps in D state (TASK_KILLABLE, shown as D) until
 * its child execs or exits. The child prints its pid, then waits for a byte
 * (or EOF) on stdin before exiting, so the test decides when the parent
 * wakes. Only async-signal-safe calls run in the vfork child.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    char byte;
    int status = 0;
    pid_t pid = vfork();

    if (pid == 0) {
        char line[16];
        int len = 0;
        pid_t self = getpid();
        char digits[16];
        int n = 0;
        do {
            digits[n++] = '0' + self % 10;
            self /= 10;
        } while (self);
        while (n)
            line[len++] = digits[--n];
        line[len++] = '\n';
        (void)!write(1, line, len);
        (void)!read(0, &byte, 1);
        _exit(0);
    }
    if (pid < 0) {
        perror("vfork");
        return 1;
    }
    if (waitpid(pid, &status, 0) != pid || status != 0)
        return 1;
    return 0;
}
