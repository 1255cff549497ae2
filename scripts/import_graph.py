#!/usr/bin/env python3
"""Print the package's import graph (module -> the lumbo_bids modules it imports) and fail on a cycle.

Every ``import``/``from ... import`` of a ``lumbo_bids`` module counts, at the top of a module or
inside a function (a deferred import is still a dependency). ``TYPE_CHECKING`` blocks are ignored.
It also checks the layers the README's layout map gives: the pure floor imports only the floor, and no part
imports what :data:`FORBIDDEN` keeps from it (``lumbo_bids.model`` never imports ``lumbo_bids.training``).

Usage: import_graph.py [--quiet] [--dot]    exit 0: no cycle and no layer broken; 1 otherwise
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lumbo_bids"

#: the pure floor: numpy/nibabel/scipy functions and small helpers, importing nothing but the floor
FLOOR = (
    "lumbo_bids.geometry", "lumbo_bids.resample", "lumbo_bids.centerline", "lumbo_bids.centerline_error",
    "lumbo_bids.intensity", "lumbo_bids.postproc", "lumbo_bids.metrics", "lumbo_bids.morphometry", "lumbo_bids.qc",
    "lumbo_bids.label_coverage", "lumbo_bids.reacquire", "lumbo_bids.annotate", "lumbo_bids.errors",
    "lumbo_bids.utils", "lumbo_bids.options", "lumbo_bids.plan",
)  # fmt: skip
_APPS = ("lumbo_bids.cli", "lumbo_bids.participant", "lumbo_bids.group")
#: what a part of the package must never import (the README's layout map says why)
FORBIDDEN = {
    "lumbo_bids.model": ("lumbo_bids.training", "lumbo_bids.engine", "lumbo_bids.workflows", "lumbo_bids.interfaces",
                         "lumbo_bids.reports", "lumbo_bids.preprocess", "lumbo_bids.api", *_APPS),
    "lumbo_bids.training": ("lumbo_bids.engine", "lumbo_bids.workflows", "lumbo_bids.interfaces", "lumbo_bids.reports", *_APPS),
    "lumbo_bids.engine": ("lumbo_bids.model", "lumbo_bids.training", "lumbo_bids.workflows", "lumbo_bids.interfaces",
                          "lumbo_bids.reports", *_APPS),
    "lumbo_bids.interfaces": ("lumbo_bids.training", "lumbo_bids.engine", "lumbo_bids.workflows", *_APPS),
    "lumbo_bids.workflows": ("lumbo_bids.training", "lumbo_bids.engine", *_APPS),
    "lumbo_bids.reports": ("lumbo_bids.engine", "lumbo_bids.workflows", "lumbo_bids.interfaces", *_APPS),
    "lumbo_bids.group": ("lumbo_bids.cli", "lumbo_bids.participant"),
    "lumbo_bids.participant": ("lumbo_bids.cli", "lumbo_bids.group", "lumbo_bids.training"),
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules that the module at ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    # "from . import x" names the package too; keep the submodule only
    return {t for t in found if not any(o.startswith(t + ".") for o in found) or t not in _packages(modules)}


def _packages(modules: set[str]) -> set[str]:
    return {m for m in modules if any(o.startswith(m + ".") for o in modules)}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    packages = _packages(modules)
    edges = {module_name(p): imports_of(p, modules) for p in paths}
    # a package's __init__ importing its own submodules is how packages work: not an edge back
    for name, targets in edges.items():
        if name in packages:
            edges[name] = {t for t in targets if not t.startswith(name + ".")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_breaks(edges: dict[str, set[str]]) -> list[str]:
    """Imports that break the layers: a floor module importing above the floor, a part importing
    what :data:`FORBIDDEN` keeps from it."""
    broken = []
    for name, targets in sorted(edges.items()):
        for target in sorted(targets):
            if any(_within(name, f) for f in FLOOR) and not any(_within(target, f) for f in FLOOR):
                broken.append(f"{name} imports {target} (the pure floor imports only the floor)")
            for part, forbidden in FORBIDDEN.items():
                if _within(name, part) and any(_within(target, f) for f in forbidden):
                    broken.append(f"{name} imports {target} ({part} must not import it)")
    return broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print problems only")
    parser.add_argument("--dot", action="store_true", help="print the graph in Graphviz dot")
    args = parser.parse_args(argv)
    edges = graph()
    if args.dot:
        print("digraph lumbo_bids {")
        for name, targets in sorted(edges.items()):
            for target in sorted(targets):
                print(f'  "{name}" -> "{target}";')
        print("}")
    elif not args.quiet:
        for name, targets in sorted(edges.items()):
            print(f"{name}: {', '.join(sorted(targets)) or '-'}")
    found, broken = cycles(edges), layer_breaks(edges)
    for component in found:
        print(f"[imports] cycle: {' <-> '.join(component)}", file=sys.stderr)
    for line in broken:
        print(f"[imports] layer: {line}", file=sys.stderr)
    if found or broken:
        return 1
    print(f"[imports] {len(edges)} modules, no cycle, layers kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
