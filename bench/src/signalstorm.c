/* signalstorm N: send SIGUSR1 to itself N times, the signal ignored.
 *
 * The kernel still generates each signal (signal:signal_generate fires,
 * result "ignored"), so the storm is N kill(2) calls and N tracepoint hits
 * with nothing delivered.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    pid_t self = getpid();

    signal(SIGUSR1, SIG_IGN);
    for (long i = 0; i < n; i++) {
        if (kill(self, SIGUSR1) != 0) {
            perror("kill");
            return 1;
        }
    }
    return 0;
}
