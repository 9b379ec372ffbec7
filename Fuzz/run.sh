#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for SECONDS (default 600), two at a time under
# nice, then writes the figures (executions, coverage, corpus, crashes) to
# Fuzz/results/<date>.md. The seed corpus in Fuzz/corpus/<target>/ is copied into a working
# corpus under Fuzz/work/<target>/ (not committed) that grows across runs.
# Crash inputs land in Fuzz/work/crashes/<target>/: fix the bug, then copy the input to
# Tests/Regressions/<target>/ so `swift test --filter FuzzRegressionTests` keeps it fixed.
#
#   Fuzz/run.sh [SECONDS] [TARGET...]     e.g. Fuzz/run.sh 60 qmp command-line
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-600}
shift || true
ALL=(vhost-user-message guest-memory descriptor-chain packed-descriptor-chain virtio-blk-request qmp command-line qcow2-header qcow2-l2-entry)
TARGETS=("${@:-${ALL[@]}}")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
PARALLEL=${FUZZ_PARALLEL:-2}

echo "building fuzz targets (release, -sanitize=fuzzer,address)…"
nice -n 10 swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
BIN=$(swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library --show-bin-path)

run_one() {
    local target=$1
    local work=work/$target crashes=work/crashes/$target log=work/logs/$target.log
    mkdir -p "$work" "$crashes" work/logs
    cp -n corpus/"$target"/* "$work"/ 2>/dev/null || true
    # The ring targets take a 64 KiB guest memory image; text and messages need less.
    local max_len=8192
    case $target in descriptor-chain|packed-descriptor-chain|virtio-blk-request) max_len=65600 ;; esac
    # ASan on, leaks checked, a hang of 10 s or 2 GB counts as a finding. Swift's own
    # backtracer is off: libFuzzer and ASan print the stack.
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=1 nice -n 10 "$BIN/fuzz-$target" "$work" \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
        -print_final_stats=1 -artifact_prefix="$crashes/" >"$log" 2>&1 || true
}

running=0
for target in "${TARGETS[@]}"; do
    echo "fuzzing $target for ${SECONDS_EACH}s…"
    run_one "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$((running - 1)); fi
done
wait

mkdir -p results
out=results/$(date -u +%Y-%m-%d-%H%M).md
{
    echo "# Fuzzing run $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Each target ran ${SECONDS_EACH} s under libFuzzer with AddressSanitizer ($(swift --version 2>/dev/null | head -1)),"
    echo "${PARALLEL} targets at a time under \`nice -n 10\` on a shared 2-core machine. \"corpus\" is the working"
    echo "corpus after the run (seeds from Fuzz/corpus plus what libFuzzer kept)."
    echo
    echo "| target | seconds | executions | exec/s | coverage (edges) | features | corpus files | corpus bytes | crashes |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for target in "${TARGETS[@]}"; do
        log=work/logs/$target.log
        execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | awk '{print $2}' | tail -1)
        rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | awk '{print $2}' | tail -1)
        last=$(grep -E '^#[0-9]+' "$log" | grep -o 'cov: [0-9]* ft: [0-9]*' | tail -1)
        cov=$(echo "$last" | awk '{print $2}')
        ft=$(echo "$last" | awk '{print $4}')
        files=$(find work/"$target" -type f | wc -l)
        bytes=$(du -sb work/"$target" | cut -f1)
        crashes=$(find work/crashes/"$target" -type f | wc -l)
        echo "| $target | $SECONDS_EACH | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $files | $bytes | $crashes |"
    done
    echo
    echo "Crash inputs (if any) are in Fuzz/work/crashes/<target>/ and, once fixed, in Tests/Regressions/<target>/."
} >"$out"
cat "$out"
