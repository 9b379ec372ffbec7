# bench/lib.sh: what every bench script does around a backend, in one place. Sourced (bash):
#
#   . bench/lib.sh                       # installs the EXIT trap (bench_cleanup)
#   bench_workdir work first-look        # work=/tmp/first-look.XXXXXX, removed at exit
#   bench_build missing spindle spindle-bench >&2
#   bench_start_backend "$work/spindle.log" taskset -c 1 "$BENCH_RELEASE/spindle" --blockdev ...
#   bench_wait_socket "$sock" "$backend_pid" "$work/spindle.log" 5
#   ... spindle-bench --backend-pid "$backend_pid" ...
#   bench_stop_backend
#
# One backend at a time: bench_start_backend sets backend_pid, bench_stop_backend clears it,
# and the EXIT trap stops whatever is still running. Messages start with BENCH_NAME (default:
# the script's name without .sh).

BENCH_NAME=${BENCH_NAME:-$(basename "$0" .sh)}
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_RELEASE=$BENCH_ROOT/.build/release
backend_pid=
bench_exit_hooks=()
bench_work_dir=

# bench_build WHEN [SWIFT-BUILD-OPTION... --] PRODUCT...: builds the release products of
# the package, WHEN `always` or only if one of them is `missing` from .build/release.
# NOBUILD (set, and not 0) never builds: then a missing binary is an error. swift build's
# progress goes to this function's stdout (callers redirect it: `>&2`, `>/dev/null`).
bench_build() {
    local when=$1 opts=() products=() p missing=0
    shift
    if [[ " $* " == *" -- "* ]]; then
        while [ "$1" != -- ]; do opts+=("$1"); shift; done
        shift
    fi
    products=("$@")
    for p in "${products[@]}"; do [ -x "$BENCH_RELEASE/$p" ] || missing=1; done
    if [ -n "${NOBUILD:-}" ] && [ "${NOBUILD:-}" != 0 ]; then
        [ "$missing" = 0 ] && return 0
        for p in "${products[@]}"; do
            [ -x "$BENCH_RELEASE/$p" ] || echo "$BENCH_NAME: NOBUILD is set but $BENCH_RELEASE/$p is missing; build it with \`swift build -c release --product $p\`" >&2
        done
        return 1
    fi
    [ "$when" = missing ] && [ "$missing" = 0 ] && return 0
    # One product per swift build: given --product twice, SwiftPM builds only the last.
    for p in "${products[@]}"; do
        (cd "$BENCH_ROOT" && swift build -c release ${opts[@]+"${opts[@]}"} --product "$p") || return 1
    done
}

# bench_start_backend LOG CMD...: starts CMD in the background, its stdout and stderr in LOG;
# sets backend_pid. (Environment for the backend: `env VAR=value CMD...`.)
bench_start_backend() {
    local log=$1
    shift
    if [ -n "$backend_pid" ]; then
        echo "$BENCH_NAME: a backend (pid $backend_pid) is still running; bench_stop_backend first" >&2
        return 1
    fi
    "$@" >"$log" 2>&1 &
    backend_pid=$!
}

# bench_wait_socket SOCK PID LOG TIMEOUT: waits up to TIMEOUT seconds (whole) for the backend
# PID to create the socket SOCK. Fails (status 1; with set -e the script stops), printing LOG,
# if the backend exits first or the socket never appears.
bench_wait_socket() {
    local sock=$1 pid=$2 log=$3 timeout=$4 i
    for ((i = 0; i < timeout * 20; i++)); do
        [ -S "$sock" ] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$BENCH_NAME: the backend (pid $pid) exited before creating $sock; its log ($log):" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.05
    done
    [ -S "$sock" ] && return 0
    echo "$BENCH_NAME: the backend (pid $pid) did not create $sock within ${timeout}s; its log ($log):" >&2
    cat "$log" >&2
    return 1
}

# bench_stop_backend: stops the backend started last (SIGTERM) and waits for it to exit.
bench_stop_backend() {
    [ -n "$backend_pid" ] || return 0
    kill "$backend_pid" 2>/dev/null || echo "$BENCH_NAME: backend (pid $backend_pid) had already exited" >&2
    wait "$backend_pid" 2>/dev/null || true
    backend_pid=
}

# bench_machine_busy: busy CPU of the whole machine over one second, in % of one CPU
# (/proc/stat: user nice system irq softirq steal).
bench_machine_busy() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    echo $(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8] - a[1]-a[2]-a[3]-a[6]-a[7]-a[8]) * 100 / $(getconf CLK_TCK) ))
}

# bench_wait_quiet [BUDGET]: waits (up to QUIET_WAIT seconds) until other work on the machine
# stays under QUIET_PCT % of a CPU; not at all once the script has run BUDGET seconds.
bench_wait_quiet() {
    local waited=0 busy
    [ -z "${1:-}" ] || [ "$SECONDS" -lt "$1" ] || return 0
    while busy=$(bench_machine_busy); [ "$busy" -gt "$QUIET_PCT" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
        waited=$((waited + 1))
    done
    [ "$busy" -le "$QUIET_PCT" ] || echo "$BENCH_NAME: machine still ${busy}% busy after ${QUIET_WAIT}s; running anyway" >&2
}

# bench_other_cpu JSON: spindle-bench's other_cpu_pct in a result line (CPU used by neither
# side), as a whole number.
bench_other_cpu() {
    python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get("other_cpu_pct"); print(int(v or 0))' "$1"
}

# bench_workdir VAR PREFIX: creates /tmp/PREFIX.XXXXXX, stores its path in VAR; removed at exit
# after the backend has stopped.
bench_workdir() {
    bench_work_dir=$(mktemp -d "/tmp/$2.XXXXXX")
    printf -v "$1" %s "$bench_work_dir"
}

# bench_at_exit CMD: shell code to run at exit (newest first), before the backend is stopped:
# a guest or client to stop, a file to remove.
bench_at_exit() {
    bench_exit_hooks+=("$1")
}

# bench_cleanup (the EXIT trap): the exit hooks, then any backend still running, then the
# work directory. Keeps the script's exit status.
bench_cleanup() {
    local i
    for ((i = ${#bench_exit_hooks[@]} - 1; i >= 0; i--)); do
        eval "${bench_exit_hooks[i]}" || true
    done
    if [ -n "$backend_pid" ]; then
        kill "$backend_pid" 2>/dev/null || true
        wait "$backend_pid" 2>/dev/null || true
        backend_pid=
    fi
    [ -z "$bench_work_dir" ] || rm -rf "$bench_work_dir"
}
trap bench_cleanup EXIT
