#!/usr/bin/env bash
# wake-cost.sh: measures what a cross-CPU eventfd wakeup costs in CPU time on this machine
# (bench/wake-cost/wake-cost.c), the floor under a backend's CPU per request with a client
# that sleeps on its call eventfd; then what a short timed nap costs (bench/wake-cost/nap-cost.c),
# the price of sleeping through a client's turnaround instead of spinning through it.
# Needs a C compiler. Run on a quiet machine.
#   bench/wake-cost.sh [waker-cpu] [sleeper-cpu] [asleep-us]   # default 0 1 50
set -euo pipefail
cd "$(dirname "$0")"
. ./lib.sh
bench_workdir out wake-cost
cc -O2 -pthread -o "$out/wake-cost" wake-cost/wake-cost.c
cc -O2 -o "$out/nap-cost" wake-cost/nap-cost.c
"$out/wake-cost" "${1:-0}" "${2:-1}" "${3:-50}"
"$out/nap-cost" "${2:-1}" 1 5 10 20
