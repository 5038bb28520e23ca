"""The package's dependencies run one way: no cycle between packages, no import from a higher floor.

Reads every module's imports as text (function-level ones too), so a deferred import counts
like a top-level one. The floors are the ones docs/architecture.md draws.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fourdistill"

# docs/architecture.md: a module may import from its own floor or a lower one
FLOORS = {
    "cameras": 0, "io": 0, "diffusion": 0, "engine": 0,
    "world": 1, "sources": 1,
    "pairs": 2, "mappers": 2, "conditioning": 2, "teachers": 2, "field": 2,
    "distill": 3, "generate": 3, "sds": 3,
    "evaluate": 4,
    "commands": 5, "cli": 5, "app": 5,
}
# modules that stand on a lower floor than their package: image metrics are pure functions of
# arrays, read by trainers (validation PSNR) as well as by the evaluation
MODULE_FLOORS = {"evaluate.metrics": 0}


def _package(module: str) -> str | None:
    """The node a module belongs to: its package, or itself where MODULE_FLOORS names it."""
    parts = module.split(".")
    if parts[0] != "fourdistill" or len(parts) < 2:
        return None
    for name in MODULE_FLOORS:
        if ".".join(parts[1:]).startswith(name):
            return name
    return parts[1]


def _floor(node: str) -> int:
    return MODULE_FLOORS.get(node, FLOORS.get(node))


def module_imports() -> dict[str, set[str]]:
    """fourdistill module name -> the fourdistill modules it imports (absolute names)."""
    graph = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        name = ".".join(parts)
        base = parts if is_pkg else parts[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("fourdistill")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - node.level + 1]
                    target = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("fourdistill"):
                    found.add(target)
                    found |= {f"{target}.{a.name}" for a in node.names}
        graph[name] = found
    return graph


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> the importing modules, for packages that differ."""
    modules = module_imports()
    edges = {}
    for name, targets in modules.items():
        a = _package(name)
        for t in targets:
            b = _package(t)
            if a and b and a != b and _floor(b) is not None:
                edges.setdefault((a, b), []).append(f"{name} -> {t}")
    return edges


def test_every_package_has_a_floor():
    packages = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    packages.discard("__init__")
    assert packages <= set(FLOORS), f"give these a floor in docs/architecture.md and here: {sorted(packages - set(FLOORS))}"


def test_no_package_imports_from_a_higher_floor():
    upward = [f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)}): {sorted(set(why))[:3]}" for (a, b), why in package_edges().items() if _floor(b) > _floor(a)]
    assert not upward, "\n".join(upward)


def test_no_cycle_between_packages():
    edges = package_edges()
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    cycles = []
    for a, bs in graph.items():
        for b in bs:
            # a -> b and a path back from b to a
            seen, stack = set(), [b]
            while stack:
                n = stack.pop()
                if n == a:
                    cycles.append(f"{a} -> {b}: {sorted(set(edges[(a, b)]))[:2]} and back: {sorted(set(edges.get((b, a), [])))[:2]}")
                    break
                if n not in seen:
                    seen.add(n)
                    stack.extend(graph.get(n, ()))
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_cycle(tmp_path, monkeypatch):
    """The reader resolves relative imports: a made-up pair of modules importing each other is a cycle."""
    pkg = tmp_path / "fourdistill"
    for sub in ("world", "sources"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "world" / "a.py").write_text("def f():\n    from ..sources import b\n")
    (pkg / "sources" / "b.py").write_text("from ..world.a import f\n")
    monkeypatch.setattr(__import__(__name__), "SRC", pkg)
    with pytest.raises(AssertionError, match="world -> sources"):
        test_no_cycle_between_packages()
