# Shell helpers for guest test scripts.  The harness (guestlib.py) prepends
# this file to every per-test script before handing it to the guest through
# fw_cfg, so editing it does not require rebuilding the initramfs.
#
# Markers on the serial console (parsed by guestlib.py):
#   GUEST-RESULT <name> PASS|FAIL [detail]
#   GUEST-INFO <key> <value>
DEV=${DEV:-/dev/vda}
DISK=${DEV#/dev/}

# busybox sh runs its own applets before searching PATH; busybox's blkdiscard
# lacks -z, so always use util-linux's copy.
blkdiscard() { /usr/sbin/blkdiscard "$@"; }

result() {  # result NAME PASS|FAIL [detail...]
    n=$1; s=$2; shift 2
    echo "GUEST-RESULT $n $s${*:+ $*}"
}
info() {    # info KEY VALUE...
    k=$1; shift
    echo "GUEST-INFO $k $*"
}
check() {   # check NAME CMD...   PASS iff CMD exits 0
    n=$1; shift
    if "$@"; then result "$n" PASS; else result "$n" FAIL "rc=$? cmd: $*"; fi
}
check_eq() {  # check_eq NAME GOT EXPECTED
    if [ "$2" = "$3" ]; then result "$1" PASS; else result "$1" FAIL "got '$2' expected '$3'"; fi
}
check_fails() {  # check_fails NAME CMD...   PASS iff CMD exits non-zero
    n=$1; shift
    if "$@"; then result "$n" FAIL "unexpected success: $*"; else result "$n" PASS "rc=$?"; fi
}
wait_for_disk() {  # wait_for_disk [seconds]; PASS/FAIL result "disk-present"
    i=0; lim=$(( ${1:-30} * 10 ))
    while [ ! -b "$DEV" ] && [ $i -lt $lim ]; do sleep 0.1; i=$((i + 1)); done
    if [ -b "$DEV" ]; then
        result disk-present PASS
        q=/sys/block/$DISK/queue
        info disk-sectors "$(cat /sys/block/$DISK/size)"
        info disk-ro "$(cat /sys/block/$DISK/ro)"
        info logical-block-size "$(cat $q/logical_block_size)"
        info discard-max-bytes "$(cat $q/discard_max_bytes)"
        info write-zeroes-max-bytes "$(cat $q/write_zeroes_max_bytes)"
        info write-cache "$(cat $q/write_cache)"
        info num-queues "$(ls /sys/block/$DISK/mq | wc -l)"
        return 0
    fi
    result disk-present FAIL "$DEV did not appear"
    return 1
}
drop_cache() { blockdev --flushbufs "$DEV"; }
region_is_zero() {  # region_is_zero OFFSET LEN   (bytes)
    drop_cache
    cmp -s -n "$2" "$DEV" /dev/zero "$1" 0
}
region_sha256() {   # region_sha256 OFFSET LEN   (bytes, multiples of 4096)
    drop_cache
    dd if="$DEV" bs=4096 skip=$(($1 / 4096)) count=$(($2 / 4096)) 2>/dev/null |
        sha256sum | cut -d' ' -f1
}
check_sha256() {    # check_sha256 NAME OFFSET LEN EXPECTED
    check_eq "$1" "$(region_sha256 "$2" "$3")" "$4"
}
check_zero() {      # check_zero NAME OFFSET LEN
    check "$1" region_is_zero "$2" "$3"
}
check_size() {      # check_size NAME EXPECTED_SECTORS
    check_eq "$1" "$(cat /sys/block/$DISK/size)" "$2"
}
run_fio() {   # run_fio NAME FIO-ARGS...   PASS iff fio exits 0 and every job has err=0
    n=$1; shift
    fio --filename="$DEV" --name="$n" "$@" > "/tmp/fio-$n.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && ! grep -q 'err= *[1-9]' "/tmp/fio-$n.log"; then
        result "$n" PASS "$(grep -Eo '(READ|WRITE): bw=[^ ]*' "/tmp/fio-$n.log" | tr '\n' ' ')"
    else
        sed "s/^/fio-$n: /" "/tmp/fio-$n.log"
        result "$n" FAIL "fio rc=$rc"
    fi
}
run_fio_expect_fail() {  # run_fio_expect_fail NAME FIO-ARGS...  PASS iff fio reports an error
    n=$1; shift
    fio --filename="$DEV" --name="$n" "$@" > "/tmp/fio-$n.log" 2>&1
    rc=$?
    sed "s/^/fio-$n: /" "/tmp/fio-$n.log" | grep -iE 'err|error' | head -5
    if [ $rc -ne 0 ] || grep -q 'err= *[1-9]' "/tmp/fio-$n.log"; then
        result "$n" PASS "fio failed as expected (rc=$rc)"
    else
        result "$n" FAIL "fio write succeeded on a read-only disk"
    fi
}

# Mailbox: the host writes a word into one block of the image (migrationlib.write_mailbox);
# the guest reads it with O_DIRECT, so neither its page cache nor a migration is in the way.
MAILBOX_BLOCK=${MAILBOX_BLOCK:-15360}   # 4 KiB block number: 60 MiB
mailbox() { dd if="$DEV" bs=4096 skip="$MAILBOX_BLOCK" count=1 iflag=direct 2>/dev/null | head -c 32 | tr -cd 'a-z0-9-'; }
wait_mailbox() {  # wait_mailbox WORD [seconds]: returns 1 (and GUEST-ERROR) on timeout
    i=0; lim=$(( ${2:-300} * 5 ))
    while [ "$(mailbox)" != "$1" ]; do
        i=$((i + 1)); [ $i -lt $lim ] || { echo "GUEST-ERROR mailbox: no '$1' within ${2:-300}s"; return 1; }
        sleep 0.2
    done
}
# Churn: rewrite the same 256 pages of a tmpfs file (non-zero data: QEMU sends zero pages for
# nearly nothing) without pause, 64 KiB per write(), so that a migration with a small downtime
# limit keeps iterating until churn_stop.
churn_start() {
    yes churn | head -c 1048576 > /tmp/churn-src
    ( while [ ! -e /tmp/churn-stop ]; do
          dd if=/tmp/churn-src of=/tmp/churn bs=64k count=16 conv=notrunc 2>/dev/null
      done ) &
    CHURN_PID=$!
}
churn_stop() { touch /tmp/churn-stop; wait "$CHURN_PID" 2>/dev/null; }
# The side the guest runs on now ("A" or "B", migrationlib's fw_cfg entry opt/spindle/host),
# read from whichever QEMU runs it: no disk I/O, so it works however the disk is.
host_side() { cat /sys/firmware/qemu_fw_cfg/by_name/opt/spindle/host/raw 2>/dev/null; }
wait_host_side() {  # wait_host_side A|B [seconds]
    i=0; lim=$(( ${2:-300} * 5 ))
    while [ "$(host_side)" != "$1" ]; do
        i=$((i + 1)); [ $i -lt $lim ] || { echo "GUEST-ERROR still not on $1 after ${2:-300}s"; return 1; }
        sleep 0.2
    done
}
sectors_read() { awk '{print $3}' /sys/block/$DISK/stat; }
disk_config() {  # what the device's config space and GET_ID tell the guest: capacity serial cache
    echo "$(cat /sys/block/$DISK/size) $(cat /sys/block/$DISK/serial 2>/dev/null) $(cat /sys/block/$DISK/queue/write_cache | tr ' ' _)"
}

# -------- per-test script follows --------
