#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every test: the Swift unit tests, then the
# daemon tests (command line, socket, signals) and the real-guest tests (QEMU under TCG
# with Debian's kernel, attached to spindle through qemu-configs/).
#
#   scripts/test.sh                 # everything
#   SKIP_GUEST=1 scripts/test.sh    # unit and daemon tests only
#   scripts/test.sh -k fio          # pass pytest arguments to the daemon/guest suite
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# Every Spindle target gets -D_GNU_SOURCE from Package.swift. It must not be passed on the
# command line (-Xswiftc -Xcc -Xswiftc -D_GNU_SOURCE) any more: that reaches SwiftNIO's
# NIOPosix too, where glibc's GNU socket prototypes (__SOCKADDR_ARG) do not compile. A clean
# build of the tests without it passed (Swift 6.3.1, 2026-12-06); if SwiftPM's generated
# test-discovery module ever fails on fd_set again, remove .build and rebuild.

# The rbd tests (Tests/guest/test_rbd.py) need Ceph for their throwaway cluster and QEMU's
# rbd driver (qemu-block-extra) as the oracle; spindle itself loads librbd only at run time.
bash scripts/ceph-cluster.sh install
if ! dpkg-query -W -f='${Status}' qemu-block-extra 2>/dev/null | grep -q "install ok installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-block-extra >/dev/null
fi

echo "== build (warnings are errors)"
swift build --build-tests -Xswiftc -warnings-as-errors

echo "== unit tests"
# One test at a time: several suites look at process-wide state (open descriptors,
# /proc/self/maps, image locks that a child spawned by another test holds between fork and
# exec), which tests running beside them in the same process disturb. ~30 s either way.
# RbdKillReconnectTests needs a Ceph cluster: a throwaway one for the unit tests (always stopped).
unit_ceph=$(mktemp -d /tmp/spindle-ceph-unit.XXXXXX)
trap 'bash scripts/ceph-cluster.sh stop "$unit_ceph/c" >/dev/null 2>&1 || true; rm -rf "$unit_ceph"' EXIT
bash scripts/ceph-cluster.sh start "$unit_ceph/c" >/dev/null
SPINDLE_CEPH_DIR="$unit_ceph/c" swift test --skip-build --no-parallel
bash scripts/ceph-cluster.sh stop "$unit_ceph/c" >/dev/null
rm -rf "$unit_ceph"
trap - EXIT

echo "== layering (README's module table and Package.swift against the imports)"
python3 -m pytest -q -p no:cacheprovider Tests/Layering

echo "== daemon and real-guest tests"
export SPINDLE_BIN="$PWD/.build/debug/spindle"
if [ "${SKIP_GUEST:-0}" = 1 ]; then
    cd Tests/guest && exec python3 -m pytest -q -m "not slow" "$@"
fi
exec Tests/guest/run.sh -q "$@"
