#!/bin/bash
# Build the guest artifacts (cached) and run the real-guest suite.
#
#   Tests/guest/run.sh [pytest args...]
#
#   SPINDLE_BIN=/path/to/spindle Tests/guest/run.sh      # test Spindle
#   Tests/guest/run.sh                                   # test qemu-storage-daemon
#   Tests/guest/run.sh -k readonly -x                    # a subset
#
# Exit code: pytest's (build failures exit non-zero before pytest runs).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/build-guest.sh"
cd "$HERE"
set +e
python3 -m pytest "$@"
exit $?
