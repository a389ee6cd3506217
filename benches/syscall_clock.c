/*
 * syscall_clock.c - a preloaded library that notes the time of every send() and of every
 * recv() that returns data, for benches/turn_segments.c: the time between those calls is
 * what the client did on its own CPU (building, parsing, deciding), and the time from a
 * send to the next recv is the request in flight (the syscall, the server, the wait).
 *
 * libcurl sends with send() and reads with recv() (MSG_NOSIGNAL, on a connected socket),
 * so wrapping those two is enough for plain HTTP. A send is noted at its start, a receive at
 * its end, each only when it moved data (a send that would block and is retried is not two
 * sends). The bench calls the two clock_* functions below around each turn; they are found
 * with dlsym, so the bench can tell when this library is not preloaded.
 *
 * The marks are plain globals: one turn at a time, its I/O on one thread at a time (the
 * bench's raw loop, or agentos_agent_run's calling thread; returning from the turn orders the
 * writes before the bench reads them).
 *
 *   LD_PRELOAD=./libsyscall_clock.so ./turn_segments URL [TURNS]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

/* Marks kept per turn: the turn's start, each send and data-bearing recv, the turn's end. */
#define CLOCK_MARKS 16

static double marks[CLOCK_MARKS];
static int n_marks = -1; /* -1: not inside a turn */

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void note(void) {
    if (n_marks >= 0 && n_marks < CLOCK_MARKS - 1) marks[n_marks++] = now_us();
}

/* Starts a turn's marks (single-threaded use: the thread that runs the turn). */
void clock_turn_start(void) {
    n_marks = 0;
    note();
}

/* Ends the turn; returns how many marks it has and points *out at them. */
int clock_turn_end(const double **out) {
    if (n_marks < 0) return 0;
    marks[n_marks++] = now_us();
    int n = n_marks;
    n_marks = -1;
    *out = marks;
    return n;
}

ssize_t send(int fd, const void *buf, size_t len, int flags) {
    static ssize_t (*real)(int, const void *, size_t, int);
    if (!real) real = (ssize_t(*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    double t = now_us();
    ssize_t r = real(fd, buf, len, flags);
    if (r > 0 && n_marks >= 0 && n_marks < CLOCK_MARKS - 1) marks[n_marks++] = t;
    return r;
}

ssize_t recv(int fd, void *buf, size_t len, int flags) {
    static ssize_t (*real)(int, void *, size_t, int);
    if (!real) real = (ssize_t(*)(int, void *, size_t, int))dlsym(RTLD_NEXT, "recv");
    ssize_t r = real(fd, buf, len, flags);
    if (r > 0) note();
    return r;
}
