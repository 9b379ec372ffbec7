#!/usr/bin/env bash
# A throwaway one-node Ceph cluster for tests and benchmarks (part 12): one monitor and one
# OSD (BlueStore in a sparse file), pool "rbd" of size 1, cephx on, everything under one
# folder, no systemd, no containers. Debian 12's packages (Ceph 16.2).
#
#   scripts/ceph-cluster.sh start DIR [IMAGE_SIZE]   # up in ~10 s; prints the environment to source
#   scripts/ceph-cluster.sh stop DIR                 # stops the daemons by PID, removes nothing else
#   scripts/ceph-cluster.sh install                  # the Debian packages (apt-get)
#   scripts/ceph-cluster.sh osd-stop DIR             # stops the OSD (SIGTERM; clients' I/O waits)
#   scripts/ceph-cluster.sh osd-start DIR            # starts it again, returns once it is up
#   scripts/ceph-cluster.sh osd-freeze DIR           # SIGSTOP: the OSD hangs (an outage of exact length)
#   scripts/ceph-cluster.sh osd-thaw DIR             # SIGCONT: it carries on where it stopped
#
# After `start`, DIR/env holds CEPH_CONF, CEPH_KEYRING, CEPH_ADMIN_KEY (the base64 key, for
# QEMU/Spindle's `--object secret,...,file=`), CEPH_MON_HOST, and the PIDs. The image
# rbd/test (IMAGE_SIZE, default 1G) exists. Ceph's own logs are in DIR/log.
set -euo pipefail

die() { echo "ceph-cluster: $*" >&2; exit 1; }

install_packages() {
    if command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && command -v rbd >/dev/null \
        && [ -e /usr/include/rbd/librbd.h ]; then
        return
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ceph-mon ceph-osd ceph-common librbd-dev >/dev/null
}

# Waits until `cmd` succeeds, up to `seconds`.
wait_for() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

start() {
    local dir=$1 size=${2:-1G}
    [ -n "$dir" ] || die "usage: $0 start DIR [IMAGE_SIZE]"
    install_packages
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ ! -e "$dir/env" ] || die "$dir already holds a cluster (stop it first: $0 stop $dir)"
    mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"
    local fsid port v1port conf=$dir/ceph.conf
    fsid=$(cat /proc/sys/kernel/random/uuid)
    # Ports above the defaults, chosen per cluster so two test runs do not collide.
    port=$((20000 + RANDOM % 20000)); v1port=$((port + 1))
    cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port,v1:127.0.0.1:$v1port]
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = bluestore
bluestore block size = 4294967296
bluestore block create = true
bluestore fsck on mount = false
osd memory target = 536870912
ms bind ipv6 = false
[mon]
mon data = $dir/mon
[osd]
osd data = $dir/osd
keyring = $dir/osd/keyring
[client]
keyring = $dir/admin.keyring
EOF
    ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$dir/admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null
    monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port,v1:127.0.0.1:$v1port]" \
        "$dir/monmap" >/dev/null
    ceph-mon --cluster ceph -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" \
        >"$dir/log/mkfs-mon.log" 2>&1 || die "ceph-mon --mkfs failed: see $dir/log/mkfs-mon.log"
    ceph-mon -c "$conf" -i a -f >"$dir/log/mon.out" 2>&1 &
    echo $! >"$dir/mon.pid"
    export CEPH_CONF=$conf
    wait_for 30 ceph -c "$conf" --connect-timeout 5 mon stat \
        || die "the monitor did not answer within 30 s: see $dir/log/mon.a.log"

    local osd_uuid secret
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    secret=$(ceph-authtool --gen-print-key)
    echo "{\"cephx_secret\": \"$secret\"}" >"$dir/osd-secret.json"
    local id
    id=$(ceph -c "$conf" osd new "$osd_uuid" -i "$dir/osd-secret.json")
    [ "$id" = 0 ] || die "expected OSD id 0, got '$id'"
    ceph-authtool --create-keyring "$dir/osd/keyring" --name osd.0 --add-key "$secret" >/dev/null
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/mkfs-osd.log" 2>&1 \
        || die "ceph-osd --mkfs failed: see $dir/log/mkfs-osd.log"
    ceph-osd -c "$conf" -i 0 -f >"$dir/log/osd.out" 2>&1 &
    echo $! >"$dir/osd.pid"
    wait_for 60 sh -c "ceph -c '$conf' osd stat -f json | grep -q '\"num_up_osds\":1'" \
        || die "the OSD did not come up within 60 s: see $dir/log/osd.0.log"

    ceph -c "$conf" osd pool create rbd 8 8 >/dev/null 2>&1
    rbd -c "$conf" pool init rbd
    rbd -c "$conf" create --size "$size" rbd/test

    local key
    key=$(ceph-authtool "$dir/admin.keyring" -n client.admin --print-key)
    printf '%s' "$key" >"$dir/admin.key"
    cat >"$dir/env" <<EOF
CEPH_CONF=$conf
CEPH_KEYRING=$dir/admin.keyring
CEPH_ADMIN_KEY_FILE=$dir/admin.key
CEPH_MON_HOST=127.0.0.1
CEPH_MON_PORT=$v1port
CEPH_MON_V2_PORT=$port
CEPH_MON_PID=$(cat "$dir/mon.pid")
CEPH_OSD_PID=$(cat "$dir/osd.pid")
EOF
    cat "$dir/env"
}

stop() {
    local dir=$1
    [ -n "$dir" ] || die "usage: $0 stop DIR"
    local pidfile pid
    for pidfile in "$dir/osd.pid" "$dir/mon.pid"; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill -CONT "$pid" 2>/dev/null || true  # a frozen OSD (osd-freeze) would not see SIGTERM
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    rm -f "$dir/env"
}

# The OSD goes away cleanly (it tells the monitor it is down); I/O to its PGs waits in the
# clients until it is back (up to their rados_osd_op_timeout).
osd_stop() {
    local dir=$1
    [ -n "$dir" ] && [ -f "$dir/osd.pid" ] || die "usage: $0 osd-stop DIR (a running cluster)"
    local pid
    pid=$(cat "$dir/osd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/osd.pid"
}

osd_start() {
    local dir=$1
    [ -n "$dir" ] && [ -f "$dir/ceph.conf" ] || die "usage: $0 osd-start DIR (a cluster made by start)"
    [ ! -f "$dir/osd.pid" ] || die "the OSD of $dir is running already (pid $(cat "$dir/osd.pid"))"
    local conf=$dir/ceph.conf
    ceph-osd -c "$conf" -i 0 -f >>"$dir/log/osd.out" 2>&1 &
    echo $! >"$dir/osd.pid"
    sed -i "s/^CEPH_OSD_PID=.*/CEPH_OSD_PID=$(cat "$dir/osd.pid")/" "$dir/env"
    wait_for 60 sh -c "ceph -c '$conf' osd stat -f json | grep -q '\"num_up_osds\":1'" \
        || die "the OSD did not come back within 60 s: see $dir/log/osd.0.log"
}

# A frozen OSD neither answers nor closes its connections: clients wait; a restart of the
# OSD process on a busy machine can take far longer than the outage one wants to test.
osd_signal() {
    local dir=$1 signal=$2
    [ -n "$dir" ] && [ -f "$dir/osd.pid" ] || die "usage: $0 osd-freeze|osd-thaw DIR (a running cluster)"
    kill "-$signal" "$(cat "$dir/osd.pid")"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    install) install_packages ;;
    osd-stop) shift; osd_stop "$@" ;;
    osd-start) shift; osd_start "$@" ;;
    osd-freeze) shift; osd_signal "${1:-}" STOP ;;
    osd-thaw) shift; osd_signal "${1:-}" CONT ;;
    *) die "usage: $0 start DIR [IMAGE_SIZE] | stop DIR | install | osd-stop DIR | osd-start DIR | osd-freeze DIR | osd-thaw DIR" ;;
esac
