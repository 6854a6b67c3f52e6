"""The product's own source, read as text by the tests that hold it to its architecture
(tests/test_architecture.py, tests/smsmta/test_states.py).

The product is the four import packages; the test and benchmark kit (`smsmta/testing/`)
sets states up directly and is not part of it. Strings are the constants of the modules'
syntax trees, docstrings left out (they describe statements, they do not run them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("smsmta", "mta", "sms_process", "midsourcing")
OUTSIDE = ("smsmta/testing/",)


class Module(NamedTuple):
    name: str  # dotted: smsmta.queue.claims
    path: str  # relative to the repository: smsmta/queue/claims.py
    tree: ast.Module
    lines: int


class Text(NamedTuple):
    module: str
    path: str
    line: int
    value: str
    formatted: bool  # an f-string: only its literal parts are in `value`


def modules() -> Iterator[Module]:
    """Every module of the product, in path order."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(OUTSIDE):
                continue
            name = relative.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            source = path.read_text()
            yield Module(name, relative, ast.parse(source, relative), source.count("\n"))


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def strings() -> Iterator[Text]:
    """Every string constant and f-string of the product, docstrings left out."""
    for module in modules():
        docstrings = _docstrings(module.tree)
        inside_fstrings: set[int] = set()
        for node in ast.walk(module.tree):
            if isinstance(node, ast.JoinedStr):
                parts = [p for p in node.values if isinstance(p, ast.Constant)]
                inside_fstrings.update(id(p) for p in parts)
                text = "".join(p.value for p in parts if isinstance(p.value, str))
                yield Text(module.name, module.path, node.lineno, text, True)
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if id(node) in docstrings or id(node) in inside_fstrings:
                continue
            yield Text(module.name, module.path, node.lineno, node.value, False)
