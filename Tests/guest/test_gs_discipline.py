"""The GS / I/O split is structural: the compiler refuses a GS call from code that is not
on the control thread, and the I/O-side modules cannot import the GS ones at all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".build" / "x86_64-unknown-linux-gnu" / "debug"

IO_SIDE = {"BlockIO", "IOThreads", "VirtioBlk", "VhostUser", "BlockCommon", "CSpindle"}
GS_SIDE = {"BlockGraph", "Exports", "Monitor"}

pytestmark = pytest.mark.skipif(not (BUILD / "Modules" / "BlockGraph.swiftmodule").exists(),
                                reason="needs a debug build (swift build)")


def typecheck(source: str, tmp_path: Path) -> subprocess.CompletedProcess:
    f = tmp_path / "snippet.swift"
    f.write_text(source)
    return subprocess.run(
        ["swiftc", "-typecheck", "-swift-version", "6", str(f), "-I", str(BUILD / "Modules"),
         "-Xcc", "-D_GNU_SOURCE"]
        # Every C target's module map (CSpindle, CQcow2Zlib, ...): the Swift modules need them.
        + [arg for m in sorted(BUILD.glob("*.build/module.modulemap")) for arg in ("-Xcc", f"-fmodule-map-file={m}")],
        capture_output=True, text=True, timeout=120)


CALL = """
import BlockCommon
import BlockGraph
import ControlThread
{attribute} func caller(graph: BlockGraph) throws {{
    try graph.openNode(BlockdevOptions(nodeName: NodeName("x"), driver: .null(NullOptions())))
}}
"""


def test_gs_call_off_the_control_actor_does_not_compile(tmp_path):
    r = typecheck(CALL.format(attribute=""), tmp_path)
    assert r.returncode != 0
    assert "ControlActor" in r.stderr and "openNode" in r.stderr


def test_the_same_call_on_the_control_actor_compiles(tmp_path):
    r = typecheck(CALL.format(attribute="@ControlActor"), tmp_path)
    assert r.returncode == 0, r.stderr


def test_io_side_modules_cannot_reach_gs_modules():
    package = json.loads(subprocess.run(["swift", "package", "dump-package"], cwd=ROOT, check=True,
                                        capture_output=True, text=True).stdout)
    deps = {}
    for target in package["targets"]:
        names = set()
        for d in target.get("dependencies", []):
            for kind in ("byName", "target"):
                if kind in d:
                    names.add(d[kind][0])
        deps[target["name"]] = names

    def closure(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            for d in deps.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    for module in IO_SIDE:
        assert not (closure(module) & GS_SIDE), f"{module} reaches {closure(module) & GS_SIDE}"
