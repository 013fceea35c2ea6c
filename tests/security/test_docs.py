"""docs/security.md names every test of tests/security/, and only tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "security.md"


def _tests() -> set[str]:
    names = set()
    for path in HERE.glob("test_*.py"):
        if path.name == "test_docs.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_security_md_names_every_security_test_and_only_those() -> None:
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", DOC.read_text()))
    tests = _tests()
    assert not tests - named, f"not in docs/security.md: {sorted(tests - named)}"
    assert not named - tests, f"named in docs/security.md but no such test: {sorted(named - tests)}"
