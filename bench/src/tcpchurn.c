/* tcpchurn N: N loopback TCP connections, one after the other, with known byte counts.
 *
 * A forked server accepts on 127.0.0.1 (with accept(2)). On connection i
 * (0-based) the client sends request_bytes(i), the server reads them all,
 * answers response_bytes(i) and closes; the client reads until EOF and
 * closes. bench/tcp.py computes the same sizes to check what the agent saw.
 * Prints "client <pid> server <pid>" once done.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_BYTES 16384

static long request_bytes(long i) { return 1 + (i * 7919) % 4096; }
static long response_bytes(long i) { return 1 + (i * 104729) % MAX_BYTES; }

static char buffer[MAX_BYTES];

static void fail(const char *what)
{
    perror(what);
    exit(1);
}

static void send_all(int fd, long n)
{
    while (n > 0) {
        ssize_t sent = write(fd, buffer, n);
        if (sent <= 0)
            fail("write");
        n -= sent;
    }
}

/* Read until `n` bytes arrived (n >= 0) or until EOF (n < 0); returns the count. */
static long receive(int fd, long n)
{
    long total = 0;
    for (;;) {
        long want = n < 0 ? MAX_BYTES : n - total;
        if (want == 0)
            return total;
        ssize_t got = read(fd, buffer, want > MAX_BYTES ? MAX_BYTES : want);
        if (got < 0)
            fail("read");
        if (got == 0)
            return total;
        total += got;
    }
}

static void serve(int listener, long n)
{
    for (long i = 0; i < n; i++) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0)
            fail("accept");
        if (receive(conn, request_bytes(i)) != request_bytes(i))
            fail("short request");
        send_all(conn, response_bytes(i));
        close(conn);
    }
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int listener = socket(AF_INET, SOCK_STREAM, 0), status;
    pid_t server;

    memset(buffer, 'x', sizeof(buffer));
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(listener, 128) < 0 || getsockname(listener, (struct sockaddr *)&addr, &len) < 0)
        fail("listen");
    server = fork();
    if (server < 0)
        fail("fork");
    if (server == 0) {
        serve(listener, n);
        _exit(0);
    }
    close(listener);

    for (long i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
            fail("connect");
        send_all(fd, request_bytes(i));
        if (receive(fd, -1) != response_bytes(i))
            fail("short response");
        close(fd);
    }
    if (waitpid(server, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "tcpchurn: server failed\n");
        return 1;
    }
    printf("client %d server %d\n", (int)getpid(), (int)server);
    return 0;
}
