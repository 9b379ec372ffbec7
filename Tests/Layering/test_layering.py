"""The module layering the README states is the one the code has.

- Package.swift lists, for every target, exactly the project modules (and swift-log) that
  its sources import: nothing undeclared, nothing declared and unused.
- README's module table names every source target, and a target imports only targets
  listed below it (a lower row never imports a higher one).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL = {"log": "Logging"}  # Package.swift's shorthand variables for package products

TARGET_RE = re.compile(
    r'\.(target|executableTarget|testTarget)\(\s*name:\s*"([^"]+)"(?:\s*,\s*dependencies:\s*\[([^\]]*)\])?')
IMPORT_RE = re.compile(r'^\s*(?:@\w+\s+)*(?:public\s+|package\s+|internal\s+)?import\s+(?:struct\s+|class\s+|enum\s+|func\s+|protocol\s+)?(\w+)', re.M)


def package_targets() -> dict[str, tuple[str, set[str]]]:
    text = (ROOT / "Package.swift").read_text()
    targets = {}
    for kind, name, deps in TARGET_RE.findall(text):
        declared = set(re.findall(r'"([^"]+)"', re.sub(r'\.product\([^)]*\)', "", deps or "")))
        declared |= {EXTERNAL[v] for v in re.findall(r'\b(\w+)\b', re.sub(r'"[^"]*"|\.product\([^)]*\)', "", deps or "")) if v in EXTERNAL}
        declared |= set(re.findall(r'\.product\(\s*name:\s*"([^"]+)"', deps or ""))
        targets[name] = (kind, declared)
    return targets


def package_products() -> set[str]:
    """Products of other packages named with .product(name:) (NIOCore, Prometheus, ...)."""
    return set(re.findall(r'\.product\(\s*name:\s*"([^"]+)"', (ROOT / "Package.swift").read_text()))


def source_dir(name: str, kind: str) -> Path:
    # A target declared with `path:` (SpindleTestSupport lives under Tests/) is read there.
    custom = re.search(r'name:\s*"%s"[^\n]*?\bpath:\s*"([^"]+)"' % re.escape(name), (ROOT / "Package.swift").read_text())
    if custom:
        return ROOT / custom.group(1)
    return ROOT / ("Tests" if kind == "testTarget" else "Sources") / name


def imports_of(name: str, kind: str, known: set[str]) -> set[str]:
    found: set[str] = set()
    for path in source_dir(name, kind).rglob("*.swift"):
        found |= {m for m in IMPORT_RE.findall(path.read_text()) if m in known}
    return found


def readme_layers() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Modules, and the thread each runs on")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        m = re.match(r'\|\s*`([^`]+)`', line)
        if m:
            rows.append(m.group(1))
    return rows


def test_package_dependencies_equal_imports():
    targets = package_targets()
    known = set(targets) | set(EXTERNAL.values()) | package_products()
    problems = []
    for name, (kind, declared) in sorted(targets.items()):
        if not source_dir(name, kind).is_dir():
            problems.append(f"{name}: no folder {source_dir(name, kind).relative_to(ROOT)}")
            continue
        imported = imports_of(name, kind, known)
        if imported - declared:
            problems.append(f"{name} imports {sorted(imported - declared)} without declaring them in Package.swift")
        if declared - imported:
            problems.append(f"{name} declares {sorted(declared - imported)} in Package.swift but never imports them")
    assert not problems, "\n".join(problems)


def test_readme_layering_table_matches_imports():
    targets = package_targets()
    layers = readme_layers()
    sources = {n for n, (kind, _) in targets.items() if kind != "testTarget"}
    missing = sorted(sources - set(layers))
    assert not missing, f"README's module table leaves out {missing}"
    unknown = sorted(set(layers) - sources)
    assert not unknown, f"README's module table names {unknown}, which Package.swift does not have"
    row = {name: i for i, name in enumerate(layers)}
    problems = []
    for name in layers:
        kind, _ = targets[name]
        for imported in sorted(imports_of(name, kind, sources)):
            if row[imported] <= row[name]:
                problems.append(f"{name} (row {row[name] + 1}) imports {imported} (row {row[imported] + 1}), "
                                f"which is not below it in README's module table")
    assert not problems, "\n".join(problems)


def test_only_the_metrics_endpoint_uses_nio_and_prometheus():
    """SwiftNIO and swift-prometheus stay in MetricsEndpoint: no other target (the hot path
    least of all) links or imports them."""
    heavy = {p for p in package_products() if p.startswith("NIO") or p == "Prometheus"}
    users = {name for name, (_, declared) in package_targets().items() if declared & heavy}
    assert users == {"MetricsEndpoint"}, users
