/* bench_util.h - small helpers shared by the C benchmarks (timing, stats, /proc readings). */
#ifndef AGENTOS_BENCH_UTIL_H
#define AGENTOS_BENCH_UTIL_H
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline double bench_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Sleeps `us` microseconds: lets background threads finish what the last measured step left
   them before the next one is timed. */
static inline void bench_settle(long us) {
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

static inline int bench_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v and returns the q-quantile (0..1). */
static inline double bench_quantile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp);
    int i = (int)(q * (n - 1) + 0.5);
    return v[i < 0 ? 0 : (i >= n ? n - 1 : i)];
}

static inline long bench_status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, strlen(field)) == 0) kb = strtol(line + strlen(field) + 1, NULL, 10);
    if (f) fclose(f);
    return kb;
}

/* CPU seconds (user + system) used by the whole process so far: a steadier figure than wall
 * time on a small machine where the fake server competes for the same cores. */
static inline double bench_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* CPU seconds (user + system) used so far by the threads whose name starts with `prefix`
 * (from /proc/self/task/<tid>/stat; clock ticks). */
static inline double bench_threads_cpu_s(const char *prefix) {
    double total = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    long hz = sysconf(_SC_CLK_TCK);
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        if (!open || !close || strncmp(open + 1, prefix, strlen(prefix)) != 0) continue;
        /* Fields after ")": state(3) ... utime(14) stime(15). */
        unsigned long ut = 0, st = 0;
        if (sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += (double)(ut + st) / (double)hz;
    }
    if (d) closedir(d);
    return total;
}

static inline int bench_threads(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d))) n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n;
}
#endif
