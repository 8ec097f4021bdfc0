/*
 * Native workloads for `cargo xtask bench` (C, libc only).
 *
 * Every unit of work runs through a chain of 30 distinct non-inlined
 * functions (f30 -> ... -> f1 -> leaf), so a frame-pointer unwinder sees
 * stacks ~33 frames deep. Build with
 *   gcc -O2 -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -pthread
 *
 *   cwork spin FILE [THREADS] THREADS workers (default: online CPUs) run
 *                             units forever, counting them in FILE.
 *   cwork fixed UNITS [THREADS]
 *                             runs UNITS units split over THREADS workers,
 *                             prints "<units> <seconds> <units/s>".
 *   cwork churn FILE RATE BURN_US
 *                             forks and execs `cwork burn BURN_US` RATE times
 *                             a second, counting children started in FILE.
 *   cwork burn US             runs units for US microseconds of CPU, exits.
 *
 * FILE is a shared counter page: little-endian u64 counters, one per 64-byte
 * line, zero elsewhere; its total is the sum of all its u64 words. The
 * harness reads it at the edges of a window (no signal, no scheduling delay).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

/* The leaf touches its stack so GCC keeps its frame (see README, Known limits). */
NOINLINE static uint64_t leaf(uint64_t x) {
    volatile uint64_t scratch[4];
    for (int i = 0; i < 256; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        scratch[i & 3] = x;
    }
    return x + scratch[1];
}

/* Work after the call keeps it from being a tail call, so every level stays a frame. */
#define LEVEL(n, below)                                          \
    NOINLINE static uint64_t f##n(uint64_t x) {                  \
        uint64_t r = below(x + n);                               \
        __asm__ volatile("" : "+r"(r) : : "memory");             \
        return r ^ (uint64_t)n;                                  \
    }

LEVEL(1, leaf)
LEVEL(2, f1)
LEVEL(3, f2)
LEVEL(4, f3)
LEVEL(5, f4)
LEVEL(6, f5)
LEVEL(7, f6)
LEVEL(8, f7)
LEVEL(9, f8)
LEVEL(10, f9)
LEVEL(11, f10)
LEVEL(12, f11)
LEVEL(13, f12)
LEVEL(14, f13)
LEVEL(15, f14)
LEVEL(16, f15)
LEVEL(17, f16)
LEVEL(18, f17)
LEVEL(19, f18)
LEVEL(20, f19)
LEVEL(21, f20)
LEVEL(22, f21)
LEVEL(23, f22)
LEVEL(24, f23)
LEVEL(25, f24)
LEVEL(26, f25)
LEVEL(27, f26)
LEVEL(28, f27)
LEVEL(29, f28)
LEVEL(30, f29)

/* One unit of work: the whole chain once. */
NOINLINE static uint64_t unit(uint64_t x) { return f30(x); }

#define MAX_THREADS 256

/* One cache line per worker so the counters do not share lines. */
struct worker {
    uint64_t *units; /* in the shared counter page, one 64-byte line each */
    uint64_t limit;  /* 0: forever */
    uint64_t sink;
    char pad[64 - 3 * sizeof(uint64_t)];
};

static struct worker workers[MAX_THREADS];
static uint64_t private_counters[MAX_THREADS * 8];
static int nworkers;

/* Maps FILE as the counter page (MAX_THREADS lines) and points the workers at it. */
static uint64_t *map_counters(const char *path) {
    size_t size = MAX_THREADS * 64;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        perror(path);
        exit(1);
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    close(fd);
    return p;
}

static void point_workers(uint64_t *lines) {
    for (int i = 0; i < MAX_THREADS; i++)
        workers[i].units = &lines[i * 8];
}

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

NOINLINE static void *work_loop(void *arg) {
    struct worker *w = arg;
    uint64_t x = (uint64_t)(uintptr_t)arg | 1;
    for (uint64_t n = 0; w->limit == 0 || n < w->limit; n++) {
        x = unit(x);
        __atomic_store_n(w->units, n + 1, __ATOMIC_RELAXED);
    }
    w->sink = x;
    return NULL;
}

static int parse_threads(int argc, char **argv, int at) {
    long n = argc > at ? strtol(argv[at], NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1 || n > MAX_THREADS) {
        fprintf(stderr, "cwork: bad thread count\n");
        exit(2);
    }
    return (int)n;
}

static int cmd_spin(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: cwork spin FILE [THREADS]\n");
        return 2;
    }
    point_workers(map_counters(argv[2]));
    nworkers = parse_threads(argc, argv, 3);
    pthread_t threads[MAX_THREADS];
    for (int i = 0; i < nworkers; i++) {
        if (pthread_create(&threads[i], NULL, work_loop, &workers[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int i = 0; i < nworkers; i++)
        pthread_join(threads[i], NULL);
    return 0;
}

static int cmd_fixed(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: cwork fixed UNITS [THREADS]\n");
        return 2;
    }
    uint64_t units = strtoull(argv[2], NULL, 10);
    point_workers(private_counters);
    nworkers = parse_threads(argc, argv, 3);
    pthread_t threads[MAX_THREADS];
    uint64_t start = mono_ns();
    for (int i = 0; i < nworkers; i++) {
        workers[i].limit = units / (uint64_t)nworkers + (i == 0 ? units % (uint64_t)nworkers : 0);
        pthread_create(&threads[i], NULL, work_loop, &workers[i]);
    }
    for (int i = 0; i < nworkers; i++)
        pthread_join(threads[i], NULL);
    double secs = (double)(mono_ns() - start) / 1e9;
    printf("%llu %.6f %.1f\n", (unsigned long long)units, secs, (double)units / secs);
    return 0;
}

static int cmd_burn(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: cwork burn US\n");
        return 2;
    }
    uint64_t until = cpu_ns() + strtoull(argv[2], NULL, 10) * 1000ull;
    uint64_t x = 7;
    while (cpu_ns() < until)
        for (int i = 0; i < 16; i++)
            x = unit(x);
    return x == 42;
}

static int cmd_churn(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: cwork churn FILE RATE BURN_US\n");
        return 2;
    }
    uint64_t *started = map_counters(argv[2]);
    long rate = strtol(argv[3], NULL, 10);
    if (rate < 1 || rate > 100000) {
        fprintf(stderr, "cwork: bad rate\n");
        return 2;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) {
        perror("readlink");
        return 1;
    }
    self[n] = 0;
    char *child_argv[] = {self, "burn", argv[4], NULL};
    uint64_t period = 1000000000ull / (uint64_t)rate;
    uint64_t next = mono_ns();
    for (;;) {
        pid_t pid = fork();
        if (pid == 0) {
            execv(self, child_argv);
            _exit(127);
        }
        if (pid > 0)
            __atomic_add_fetch(started, 1, __ATOMIC_RELAXED);
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        next += period;
        struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull),
                              .tv_nsec = (long)(next % 1000000000ull)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "spin"))
        return cmd_spin(argc, argv);
    if (!strcmp(mode, "fixed"))
        return cmd_fixed(argc, argv);
    if (!strcmp(mode, "churn"))
        return cmd_churn(argc, argv);
    if (!strcmp(mode, "burn"))
        return cmd_burn(argc, argv);
    fprintf(stderr, "usage: cwork spin FILE [THREADS] | fixed UNITS [THREADS] | churn FILE RATE BURN_US | burn US\n");
    return 2;
}
