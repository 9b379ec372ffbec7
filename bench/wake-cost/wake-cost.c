// wake-cost: what a cross-CPU eventfd wakeup costs on this machine, in CPU time charged to
// each side. In eventfd completion mode the backend signals the client's call eventfd once
// per batch, and the client (asleep) is woken on another CPU: that signal is a floor under
// the backend's CPU per request that no polling strategy removes.
//
//   cc -O2 -pthread -o wake-cost wake-cost.c && ./wake-cost [waker-cpu] [sleeper-cpu] [asleep-us]
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

enum { ROUNDS = 20000 };
static int wakeFD, backFD, wakerCPU = 0, sleeperCPU = 1;
static double asleepFor = 50e-6;  // how long the sleeper sleeps before each wakeup
static _Atomic int woken;
static double sleeperReadCPU;

static double threadCPU(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double wall(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Blocks on wakeFD; after each wakeup tells the (spinning) waker through memory.
static void *sleeper(void *unused) {
    (void)unused;
    pin(sleeperCPU);
    uint64_t value;
    for (int i = 0; i < ROUNDS; i++) {
        double before = threadCPU();
        if (read(wakeFD, &value, 8) != 8) abort();
        sleeperReadCPU += threadCPU() - before;
        atomic_store(&woken, 1);
    }
    return NULL;
}

// Both sides block: a classic eventfd ping-pong.
static void *ponger(void *unused) {
    (void)unused;
    pin(sleeperCPU);
    uint64_t value;
    for (int i = 0; i < ROUNDS; i++) {
        if (read(wakeFD, &value, 8) != 8) abort();
        value = 1;
        if (write(backFD, &value, 8) != 8) abort();
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) wakerCPU = atoi(argv[1]);
    if (argc > 2) sleeperCPU = atoi(argv[2]);
    if (argc > 3) asleepFor = atof(argv[3]) * 1e-6;
    wakeFD = eventfd(0, 0);
    backFD = eventfd(0, 0);
    uint64_t one = 1;

    // 1. A spinning waker (as a polling IOThread) wakes a sleeper (as an eventfd client).
    pthread_t thread;
    pthread_create(&thread, NULL, sleeper, NULL);
    pin(wakerCPU);
    double writeCPU = 0, latency = 0;
    for (int i = 0; i < ROUNDS; i++) {
        double spinUntil = wall() + asleepFor;  // let the sleeper fall asleep
        while (wall() < spinUntil) {}
        atomic_store(&woken, 0);
        double cpu0 = threadCPU(), t0 = wall();
        if (write(wakeFD, &one, 8) != 8) abort();
        writeCPU += threadCPU() - cpu0;
        while (!atomic_load(&woken)) {}
        latency += wall() - t0;
    }
    pthread_join(thread, NULL);
    printf("spinning waker on CPU %d -> thread asleep for %.0f us on CPU %d (%d rounds):\n", wakerCPU, asleepFor * 1e6, sleeperCPU, ROUNDS);
    printf("  waker's write(): %.2f us CPU\n", writeCPU / ROUNDS * 1e6);
    printf("  sleeper's read() that slept: %.2f us CPU\n", sleeperReadCPU / ROUNDS * 1e6);
    printf("  write() to wake seen by the waker: %.2f us wall\n", latency / ROUNDS * 1e6);

    // 2. The same write() when nobody sleeps on the eventfd.
    double cpu0 = threadCPU();
    for (int i = 0; i < ROUNDS; i++) {
        if (write(wakeFD, &one, 8) != 8) abort();
    }
    printf("write() with no sleeper: %.2f us CPU\n", (threadCPU() - cpu0) / ROUNDS * 1e6);
    uint64_t drain;
    if (read(wakeFD, &drain, 8) != 8) abort();

    // 3. Both sides sleep.
    pthread_create(&thread, NULL, ponger, NULL);
    cpu0 = threadCPU();
    double t0 = wall();
    for (int i = 0; i < ROUNDS; i++) {
        if (write(wakeFD, &one, 8) != 8) abort();
        if (read(backFD, &drain, 8) != 8) abort();
    }
    printf("ping-pong, both sides sleeping: %.2f us CPU per round trip on this side, %.2f us wall\n",
           (threadCPU() - cpu0) / ROUNDS * 1e6, (wall() - t0) / ROUNDS * 1e6);
    pthread_join(thread, NULL);
    return 0;
}
