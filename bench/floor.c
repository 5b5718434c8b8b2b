/* The floor: the least a client can do per call on this machine, against the same Kitex server.
 *
 *   floor HOST PORT FRAMEFILE
 *
 * FRAMEFILE holds one complete request frame, the exact bytes kitex_fast sends (framing prefix,
 * TTHeader if any, message with a fixed seq id). The program connects once (TCP_NODELAY, blocking
 * I/O) and then reads commands from stdin, one per line: "N" makes N calls and prints N lines,
 * each the latency of one call in nanoseconds (CLOCK_MONOTONIC around write + read of the whole
 * reply), then "END C U" where C is the CPU time (user + system, ns) the batch cost this process
 * and U its user-space share (getrusage ru_utime, ns): the kernel's part of the syscalls is C - U.
 * EOF on stdin exits. Staying alive between batches lets the bench interleave
 * this client with the others in rounds without paying a connect per round.
 *
 * No codec: the reply is read by its 4-byte big-endian length prefix (Framed and TTHeader both
 * start with one) and thrown away. Any I/O error or short read is fatal (exit 1).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPLY (64u * 1024u * 1024u) /* kitex_fast's default maxFrameSize */

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        p += w;
        n -= (size_t)w;
    }
}

static void read_all(int fd, char *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("read");
        }
        if (r == 0) {
            errno = 0;
            die("server closed the connection");
        }
        p += r;
        n -= (size_t)r;
    }
}

static int64_t user_ns(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0) die("getrusage");
    return (int64_t)ru.ru_utime.tv_sec * 1000000000 + (int64_t)ru.ru_utime.tv_usec * 1000;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: floor HOST PORT FRAMEFILE (then \"N\" lines on stdin)\n");
        return 2;
    }
    FILE *f = fopen(argv[3], "rb");
    if (!f) die(argv[3]);
    fseek(f, 0, SEEK_END);
    long frame_len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (frame_len <= 0) die("empty frame file");
    char *frame = malloc((size_t)frame_len);
    if (!frame || fread(frame, 1, (size_t)frame_len, f) != (size_t)frame_len) die("read frame file");
    fclose(f);

    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(argv[1], argv[2], &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "floor: getaddrinfo: %s\n", gai_strerror(gai));
        return 1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) die("connect");
    freeaddrinfo(ai);
    int one = 1;
    /* As every real client here does: no Nagle delay on the small request. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");

    size_t cap = 1 << 16;
    char *reply = malloc(cap);
    if (!reply) die("malloc");
    int64_t *lat = NULL;
    size_t lat_cap = 0;
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        long n = strtol(line, NULL, 10);
        if (n <= 0) continue;
        if ((size_t)n > lat_cap) {
            lat = realloc(lat, (size_t)n * sizeof *lat);
            if (!lat) die("malloc");
            lat_cap = (size_t)n;
        }
        struct timespec c0, c1;
        int64_t u0 = user_ns();
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        for (long i = 0; i < n; i++) {
            int64_t t0 = now_ns();
            write_all(fd, frame, (size_t)frame_len);
            unsigned char prefix[4];
            read_all(fd, (char *)prefix, 4);
            uint32_t len = ((uint32_t)prefix[0] << 24) | ((uint32_t)prefix[1] << 16) |
                           ((uint32_t)prefix[2] << 8) | prefix[3];
            if (len > MAX_REPLY) {
                errno = 0;
                die("reply length prefix too large");
            }
            if (len > cap) {
                cap = len;
                reply = realloc(reply, cap);
                if (!reply) die("malloc");
            }
            read_all(fd, reply, len);
            lat[i] = now_ns() - t0;
        }
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        int64_t u1 = user_ns();
        /* Printed after the batch so formatting never lands inside a timed call. */
        for (long i = 0; i < n; i++) printf("%lld\n", (long long)lat[i]);
        printf("END %lld %lld\n", (long long)(c1.tv_sec - c0.tv_sec) * 1000000000 + (c1.tv_nsec - c0.tv_nsec),
               (long long)(u1 - u0));
        fflush(stdout);
    }
    close(fd);
    return 0;
}
