// nap-cost.c: what a short timed sleep (clock_nanosleep, timer slack 1 ns) costs a thread in
// CPU time and wall time on this machine. A backend could nap through a client's known
// turnaround instead of spinning through it; this says whether napping is cheaper than
// spinning. Usage: nap-cost CPU NAP_US...
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static long long now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: nap-cost CPU NAP_US...\n"); return 2; }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(argv[1]), &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) { perror("sched_setaffinity"); return 1; }
    prctl(PR_SET_TIMERSLACK, 1);  // the default 50 µs slack would swallow short naps
    const int naps = 20000;
    for (int a = 2; a < argc; a++) {
        long us = atol(argv[a]);
        struct timespec nap = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };
        long long wall0 = now(CLOCK_MONOTONIC), cpu0 = now(CLOCK_THREAD_CPUTIME_ID);
        for (int i = 0; i < naps; i++) clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, NULL);
        long long wall1 = now(CLOCK_MONOTONIC), cpu1 = now(CLOCK_THREAD_CPUTIME_ID);
        printf("nap %4ld us: %6.1f us wall, %6.1f us CPU per nap (%d naps on CPU %s)\n", us,
               (wall1 - wall0) / 1e3 / naps, (cpu1 - cpu0) / 1e3 / naps, naps, argv[1]);
    }
    return 0;
}
