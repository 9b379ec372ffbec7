#!/bin/bash
# migrate.sh: live-migrate a guest whose disk is served by Spindle, from QEMU A + Spindle A to
# QEMU B + Spindle B (one host, or two hosts sharing the image), handing the image over
# between the daemons at switchover, the way QEMU's qemu-iotests "qsd-migrate" test does.
#
#   migrate.sh [options] migrate SRC_QEMU_QMP DST_QEMU_QMP SRC_SPINDLE_QMP DST_SPINDLE_QMP URI
#   migrate.sh [options] cancel  SRC_QEMU_QMP SRC_SPINDLE_QMP DST_SPINDLE_QMP
#
# The arguments are QMP Unix sockets (QEMU's -qmp, Spindle's --qmp) and QEMU's migration
# URI (unix:PATH or tcp:HOST:PORT, as given to the destination's -incoming).
# Before "migrate": QEMU B runs with the same devices and -incoming URI; Spindle B runs with
# the image's node active=off; both daemons' exports have allow-inactive=on (A's node is
# inactivated at switchover, B's export must accept its frontend while inactive).
#
# migrate: sets pause-before-switchover (and events) on both QEMUs, starts the migration,
#   waits for "pre-switchover" (guest stopped, A's rings stopped), inactivates the node on
#   Spindle A (drain, flush, image locks released), activates it on Spindle B, continues,
#   waits for "completed". Any failure or SIGINT/SIGTERM takes the cancel path.
# cancel: stops a running migration: if the image was handed over already, B's node is
#   inactivated and A's activated again first (the guest resumes on A with its disk);
#   then migrate_cancel, and waits until QEMU A reports "cancelled".
#
# Options:
#   --node NAME               the node to hand over (default: every node of both daemons)
#   --max-bandwidth BYTES     RAM copy rate (bytes/s) at first (default: QEMU's)
#   --downtime-limit MS       allowed downtime at first (default: QEMU's)
#   --finish-after-passes N   after N dirty-sync passes, set --finish-bandwidth (default
#                             1073741824) and --finish-downtime (default 1000) to converge
#   --timeout S               cancel if not completed after S seconds (default 900)
#   --cancel-at-switchover    (tests) hand the image over at pre-switchover, then cancel:
#                             exercises the way back after A was inactivated
#   --no-handover             no image handover: never asks the daemons anything (no node
#                             checks, no blockdev-set-active, also on the way back); their QMP
#                             arguments are ignored ("-" will do). For backends that share the
#                             image without it (qemu-storage-daemon 7.2 with locking=off) and
#                             disks QEMU serves itself (QEMU hands those over on its own)
# Environment: PYTHON (default python3) runs qmp.py, the one-command QMP helper next to this.
# Exit status: 0 completed (or cancelled, for "cancel"); 1 failed and cancelled (the guest
# still runs on A); 2 usage; 3 cancelled on request (--cancel-at-switchover, a signal).
set -u
here=$(cd "$(dirname "$0")" && pwd)
qmp() { "${PYTHON:-python3}" "$here/qmp.py" "$@"; }
say() { echo "migrate.sh: $*" >&2; }
usage() { sed -n '6,7p' "$0" | sed 's/^# */usage: /' >&2; exit 2; }

node="" max_bw="" downtime="" finish_after="" finish_bw=1073741824 finish_dt=1000
timeout=900 cancel_at_switchover=0 handover=1
while [ $# -gt 0 ]; do
    case $1 in
        --node) node=$2; shift 2 ;;
        --max-bandwidth) max_bw=$2; shift 2 ;;
        --downtime-limit) downtime=$2; shift 2 ;;
        --finish-after-passes) finish_after=$2; shift 2 ;;
        --finish-bandwidth) finish_bw=$2; shift 2 ;;
        --finish-downtime) finish_dt=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --cancel-at-switchover) cancel_at_switchover=1; shift ;;
        --no-handover) handover=0; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --*) say "unknown option $1"; usage ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage
action=$1; shift
case $action in
    migrate) [ $# -eq 5 ] || usage
             src_qemu=$1 dst_qemu=$2 src_spindle=$3 dst_spindle=$4 uri=$5 ;;
    cancel)  [ $# -eq 3 ] || usage
             src_qemu=$1 src_spindle=$2 dst_spindle=$3 ;;
    *) usage ;;
esac

# --- the image's node(s) on a daemon -------------------------------------------------------
node_args() {  # blockdev-set-active arguments for ACTIVE (true|false)
    if [ -n "$node" ]; then echo "{\"node-name\": \"$node\", \"active\": $1}"
    else echo "{\"active\": $1}"; fi
}
# Prints true if the node (every node, without --node) is active on the daemon, false if
# it (any of them) is inactive; nothing when the daemon cannot be asked.
node_active() {
    local path=active
    [ -n "$node" ] && path="[node-name=$node].active"
    if [ -n "$node" ]; then
        qmp --get "$path" "$1" query-named-block-nodes 2>/dev/null
    else
        qmp "$1" query-named-block-nodes 2>/dev/null | "${PYTHON:-python3}" -c \
            'import json,sys; n=json.load(sys.stdin); print("true" if all(x.get("active", True) for x in n) else "false")'
    fi
}
set_active() {  # set_active DAEMON_QMP true|false WHO
    if qmp "$1" blockdev-set-active "$(node_args "$2")" >/dev/null; then
        say "$3: node ${node:-(all)} active=$2"
        return 0
    fi
    say "$3: blockdev-set-active ${node:-(all nodes)} active=$2 failed (see above)"
    return 1
}
status() { qmp --get status "$src_qemu" query-migrate 2>/dev/null; }

# --- the way back: B inactive (it must let go of the image locks first), A active, cancel --
undo_and_cancel() {  # undo_and_cancel REASON
    local st
    st=$(status)
    if [ "$st" = completed ]; then
        say "$1: too late to cancel, the migration has completed: the guest runs on the destination"
        return 1
    fi
    if [ "$st" != pre-switchover ]; then
        # RAM copy still running: nothing was handed over; stop the copy first.
        qmp "$src_qemu" migrate_cancel >/dev/null
    fi
    if [ $handover = 1 ]; then
        [ "$(node_active "$dst_spindle")" = false ] || set_active "$dst_spindle" false "Spindle B" ||
            say "Spindle B still holds the image: fix that before the guest on A can write (blockdev-set-active false on $dst_spindle)"
        [ "$(node_active "$src_spindle")" = true ] || set_active "$src_spindle" true "Spindle A" ||
            say "Spindle A's node is inactive: the guest's disk I/O waits until it is activated (blockdev-set-active true on $src_spindle)"
    fi
    [ "$st" = pre-switchover ] && qmp "$src_qemu" migrate_cancel >/dev/null
    local deadline=$((SECONDS + 60))
    while st=$(status); do
        case $st in cancelled|failed|completed|none) break ;; esac
        [ $SECONDS -lt $deadline ] || { say "QEMU A still reports '$st' 60 s after migrate_cancel"; return 1; }
        sleep 0.2
    done
    say "$1: migration $st; the guest runs on the source (QEMU A, Spindle A active)"
    [ "$st" != completed ]
}

if [ "$action" = cancel ]; then
    undo_and_cancel "cancel requested"
    exit $?
fi

# --- migrate ---------------------------------------------------------------------------------
fail() { say "$1"; undo_and_cancel "failed" || true; exit 1; }
trap 'undo_and_cancel "interrupted"; exit 3' INT TERM

[ "$(qmp --get status "$dst_qemu" query-status)" = inmigrate ] ||
    { say "QEMU B ($dst_qemu) is not waiting for a migration: start it with -incoming $uri"; exit 1; }
if [ $handover = 1 ]; then
    case $(node_active "$dst_spindle") in
        false) ;;
        true) say "Spindle B's node ${node:-(some node)} is active: start it with active=off (the source holds the image)"; exit 1 ;;
        *) say "cannot read the nodes of Spindle B ($dst_spindle)"; exit 1 ;;
    esac
    [ "$(node_active "$src_spindle")" = true ] ||
        { say "Spindle A's node ${node:-(some node)} is not active: nothing to hand over"; exit 1; }
fi

caps='{"capabilities": [{"capability": "events", "state": true}, {"capability": "pause-before-switchover", "state": true}]}'
qmp "$src_qemu" migrate-set-capabilities "$caps" >/dev/null || exit 1
qmp "$dst_qemu" migrate-set-capabilities "$caps" >/dev/null || exit 1
params=""
[ -n "$max_bw" ] && params="\"max-bandwidth\": $max_bw"
[ -n "$downtime" ] && params="${params:+$params, }\"downtime-limit\": $downtime"
[ -n "$params" ] && { qmp "$src_qemu" migrate-set-parameters "{$params}" >/dev/null || exit 1; }

start=$SECONDS
qmp "$src_qemu" migrate "{\"uri\": \"$uri\"}" >/dev/null || exit 1
say "migrating to $uri"
finished=0 last_report=-1
while :; do
    # One monitor round trip per poll.
    progress=$(qmp --get status,ram.dirty-sync-count,ram.remaining "$src_qemu" query-migrate 2>/dev/null ||
               qmp --get status "$src_qemu" query-migrate) || fail "cannot query QEMU A ($src_qemu)"
    read -r st passes remaining <<<"$progress"
    passes=${passes:-0} remaining_mib=$(( ${remaining:-0} >> 20 ))
    case $st in
        pre-switchover) break ;;
        failed|cancelled|cancelling) say "migration $st before switchover (a migrate_cancel, or QEMU A's log says why); the guest runs on A"; exit 1 ;;
        completed) fail "migration completed without pausing at pre-switchover" ;;
    esac
    if [ -n "$finish_after" ] && [ $finished = 0 ] && [ "$passes" -ge "$finish_after" ]; then
        qmp "$src_qemu" migrate-set-parameters \
            "{\"max-bandwidth\": $finish_bw, \"downtime-limit\": $finish_dt}" >/dev/null ||
            fail "cannot raise the bandwidth"
        finished=1
        say "after $passes dirty-sync passes: max-bandwidth $finish_bw, downtime-limit $finish_dt ms"
    fi
    if [ $((SECONDS / 5)) != $last_report ]; then
        last_report=$((SECONDS / 5))
        say "$st: dirty-sync pass $passes, ${remaining_mib} MiB remaining"
    fi
    [ $((SECONDS - start)) -lt "$timeout" ] || fail "not at switchover after $timeout s"
    sleep 0.1
done

# pre-switchover: the guest is stopped and QEMU A has stopped the rings (GET_VRING_BASE).
if [ $handover = 1 ]; then
    say "pre-switchover after $((SECONDS - start)) s: handing the image over"
    set_active "$src_spindle" false "Spindle A" || fail "Spindle A cannot release the image (does its export have allow-inactive=on?)"
    set_active "$dst_spindle" true "Spindle B" || fail "Spindle B cannot take the image"
else
    say "pre-switchover after $((SECONDS - start)) s: no handover (--no-handover)"
fi
if [ $cancel_at_switchover = 1 ]; then
    undo_and_cancel "--cancel-at-switchover"
    exit 3
fi
qmp "$src_qemu" migrate-continue '{"state": "pre-switchover"}' >/dev/null || fail "migrate-continue refused"
while st=$(status); do
    case $st in
        completed) break ;;
        failed|cancelled) fail "migration $st after the handover" ;;
    esac
    sleep 0.2
done
[ "$st" = completed ] || fail "lost QEMU A's monitor after the handover"
summary=$(qmp "$src_qemu" query-migrate | "${PYTHON:-python3}" -c 'import json, sys
m = json.load(sys.stdin); r = m.get("ram", {})
print("total %s ms, downtime %s ms, %s dirty-sync passes, %d MiB sent" % (m.get("total-time"),
      m.get("downtime"), r.get("dirty-sync-count"), r.get("transferred", 0) >> 20))')
dst_status=$(qmp --get status "$dst_qemu" query-status 2>/dev/null)
trap - INT TERM
say "completed: $summary; QEMU B is $dst_status"
echo "completed $summary"
