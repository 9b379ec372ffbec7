"""Self-tests of the guest harness: failures are reported and every process
the harness started is gone afterwards."""

from __future__ import annotations

import os

import pytest

import guestlib
from guestlib import file_export_args


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_backend_start_failure_is_reported(guest_env):
    """A backend that exits at startup raises with its log; nothing is left running."""
    img = guest_env.make_image(1024 * 1024)
    with pytest.raises(RuntimeError, match="before creating") as exc:
        guest_env.start_backend(file_export_args(img, guest_env.sock) +
                                ["--no-such-option-spindle-test"])
    assert "no-such-option-spindle-test" in str(exc.value)   # the log is shown
    assert not guestlib._live


@pytest.mark.slow
def test_guest_timeout_kills_everything(guest_env):
    """A guest that never finishes is killed at the deadline and reported."""
    img = guest_env.make_image(16 * 1024 * 1024)
    backend = guest_env.start_backend(file_export_args(img, guest_env.sock))
    run = guestlib.run_guest(guest_env.sock, "sleep 100000\n",
                             guest_env.workdir, name="hang", timeout=20.0)
    assert run.timed_out and run.done_rc is None
    with pytest.raises(AssertionError, match="timed out"):
        run.assert_passed()
    assert backend.alive()
    guest_env.stop_all()
    assert _gone(backend.proc.pid)
    assert not guestlib._live
