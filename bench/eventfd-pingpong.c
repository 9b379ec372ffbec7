// Calibration: the round trip of two threads on two CPUs waking each other through
// eventfds with blocking reads, i.e. the floor of any QD1 eventfd-mode measurement on
// this machine (one kick wakeup plus one call wakeup per request).
//   gcc -O2 -pthread -o /tmp/eventfd-pingpong bench/eventfd-pingpong.c && /tmp/eventfd-pingpong
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

enum { rounds = 20000 };
static int ping, pong;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *peer(void *unused) {
    (void)unused;
    pin(1);
    uint64_t value;
    for (int i = 0; i < rounds; i++) {
        if (read(ping, &value, 8) != 8) return NULL;
        value = 1;
        if (write(pong, &value, 8) != 8) return NULL;
    }
    return NULL;
}

int main(void) {
    ping = eventfd(0, 0);
    pong = eventfd(0, 0);
    pthread_t thread;
    pthread_create(&thread, NULL, peer, NULL);
    pin(0);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    uint64_t value;
    for (int i = 0; i < rounds; i++) {
        value = 1;
        if (write(ping, &value, 8) != 8 || read(pong, &value, 8) != 8) return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    pthread_join(thread, NULL);
    double ns = (end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec);
    printf("eventfd ping-pong round trip: %.1f us\n", ns / rounds / 1000.0);
    return 0;
}
