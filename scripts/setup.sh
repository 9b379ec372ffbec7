#!/usr/bin/env bash
# Installs what Spindle needs on a fresh Debian 12 machine (idempotent; quick when all is there).
set -euo pipefail
packages=(liburing-dev libnuma-dev qemu-system-x86 qemu-utils fio busybox-static cpio kmod util-linux zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v swift >/dev/null; then
    for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do [ -x "$d/swift" ] && export PATH="$d:$PATH"; done
fi
command -v swift >/dev/null || { echo "setup: swift not found; install Swift 6 (https://swift.org) and retry" >&2; exit 1; }
python3 -c "import pytest" 2>/dev/null || python3 -m pip install -q pytest
python3 -c "import qemu.qmp" 2>/dev/null || python3 -m pip install -q qemu.qmp
python3 -c "import prometheus_client" 2>/dev/null || python3 -m pip install -q prometheus-client
