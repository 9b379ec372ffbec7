"""pytest glue for the real-guest suite (see guestlib.py for the machinery).

Backend selection (first match wins):
  pytest --backend-bin=PATH    |   env SPINDLE_BIN=PATH   |   qemu-storage-daemon
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

import guestlib


def pytest_addoption(parser):
    parser.addoption("--backend-bin", default=None,
                     help="vhost-user-blk backend binary (qsd-compatible CLI); "
                          "default: $SPINDLE_BIN or qemu-storage-daemon")


def pytest_configure(config):
    opt = config.getoption("--backend-bin")
    if opt:
        os.environ["SPINDLE_BIN"] = opt
    guestlib.install_signal_handlers()


def pytest_report_header(config):
    b = guestlib.backend_binary()
    return [f"guest backend: {b} ({shutil.which(b) or 'NOT FOUND'})",
            f"guest artifacts: {guestlib.ARTIFACTS}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for title, path in getattr(item, "_guest_logs", []):
            report.sections.append((title, guestlib.tail(Path(path), 150)))


def pattern_bytes(seed: int, length: int) -> bytes:
    """Deterministic non-zero test data."""
    data = bytearray(random.Random(seed).randbytes(length))
    for i in range(0, length, 512):        # no all-zero sector, ever
        data[i] = data[i] | 1
    return bytes(data)


class Harness:
    """Per-test helper: temp dir, images, one backend, guest runs."""

    def __init__(self, request, workdir: Path):
        self.request = request
        self.workdir = workdir
        self.backends: list[guestlib.Backend] = []
        request.node._guest_logs = []
        # unix socket paths are limited to 108 bytes
        sockdir = workdir
        if len(str(workdir / "vhost-user.sock")) > 100:
            sockdir = Path(tempfile.mkdtemp(prefix="spg-"))
            request.addfinalizer(lambda: shutil.rmtree(sockdir, ignore_errors=True))
        self.sock = sockdir / "vhost-user.sock"

    def _log(self, title: str, path: Path) -> None:
        self.request.node._guest_logs.append((title, path))

    # ---- images ----------------------------------------------------------
    def make_image(self, size: int, name: str = "disk.img",
                   fill: dict[int, bytes] | None = None) -> Path:
        """Sparse raw image; fill maps byte offset -> data written before start."""
        img = self.workdir / name
        with open(img, "wb") as f:
            f.truncate(size)
            for off, data in (fill or {}).items():
                f.seek(off)
                f.write(data)
        return img

    @staticmethod
    def read_image(img: Path, offset: int, length: int) -> bytes:
        with open(img, "rb") as f:
            f.seek(offset)
            return f.read(length)

    # ---- processes -------------------------------------------------------
    def start_backend(self, args: list[str]) -> guestlib.Backend:
        b = guestlib.Backend(guestlib.backend_binary(), self.workdir,
                             name=f"backend{len(self.backends)}")
        self.backends.append(b)
        self._log(f"backend log ({b.binary})", b.log_path)
        b.start(args, self.sock)
        return b

    def run_guest(self, script: str, name: str = "guest") -> guestlib.GuestRun:
        self._log(f"guest serial log ({name})", self.workdir / f"{name}-serial.log")
        run = guestlib.run_guest(self.sock, script, self.workdir, name=name)
        print(f"[{name}] {run.duration:.1f}s qemu rc={run.qemu_rc} "
              f"results={ {k: v[0] for k, v in run.results.items()} } infos={run.infos}")
        return run

    def stop_all(self) -> None:
        for b in self.backends:
            b.stop(grace=5.0)


@pytest.fixture
def guest_env(request, tmp_path):
    if shutil.which(guestlib.backend_binary()) is None:
        pytest.fail(f"backend binary {guestlib.backend_binary()!r} not found")
    guestlib.guest_artifacts()   # fail early with a clear message
    h = Harness(request, tmp_path)
    request.addfinalizer(h.stop_all)
    request.addfinalizer(guestlib.kill_all)
    return h


def _read_ceph_env(folder: Path) -> dict:
    env = {"DIR": str(folder)}
    for line in (folder / "env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


@pytest.fixture(scope="session")
def ceph():
    """One throwaway Ceph cluster for the whole session, shared by every rbd test file (its
    environment: CEPH_CONF, CEPH_MON_PORT, ...). SPINDLE_CEPH_DIR=DIR reuses a cluster made by
    `scripts/ceph-cluster.sh start DIR` instead."""
    given = os.environ.get("SPINDLE_CEPH_DIR")
    if given:
        yield _read_ceph_env(Path(given))
        return
    if not shutil.which("ceph-mon") or not shutil.which("rbd"):
        pytest.skip("Ceph is not installed (scripts/ceph-cluster.sh install)")
    import subprocess
    script = Path(__file__).resolve().parents[2] / "scripts" / "ceph-cluster.sh"
    folder = Path(tempfile.mkdtemp(prefix="spindle-ceph-"))
    try:
        subprocess.run([str(script), "start", str(folder / "c")], check=True, timeout=180,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        yield _read_ceph_env(folder / "c")
    finally:
        subprocess.run([str(script), "stop", str(folder / "c")], timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)
