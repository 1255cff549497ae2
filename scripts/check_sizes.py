#!/usr/bin/env python3
"""Fail when a module of the package is over 400 lines or a function over 60 (docstring included;
argparse builders, ``build_parser``, excepted): a module that long is usually two modules.

Usage: check_sizes.py    exit 0: every module and function within the limits; 1 otherwise
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lumbo_bids"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
#: functions that are one long declaration (every option of the command line)
EXCEPTED = {("cli/parser.py", "build_parser")}


def oversized(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(package).as_posix()
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{where}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (where, node.name) not in EXCEPTED:
                if (length := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                    found.append(f"{where}:{node.lineno} {node.name}(): {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def main() -> int:
    found = oversized()
    for line in found:
        print(f"[sizes] {line}", file=sys.stderr)
    if not found:
        print(f"[sizes] every module <= {MAX_MODULE_LINES} lines, every function <= {MAX_FUNCTION_LINES}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
