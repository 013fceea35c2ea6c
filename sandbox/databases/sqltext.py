"""A migration's SQL as PostgreSQL's parser reads it: statements, a normalised key, nodes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, parse_sql, split
from pglast.parser import ParseError, scan

from ..errors import MigrationError

__all__ = ["normalize", "shorten", "statements", "walk"]


def statements(sql_text: str) -> list[tuple[str, Any]]:
    """``(text, parsed statement)`` per statement, as PostgreSQL's parser splits them.

    Raises :class:`MigrationError` when the SQL does not parse.
    """
    try:
        return [(text, parse_sql(text)[0].stmt) for text in split(sql_text, with_parser=True)]
    except ParseError as exc:
        raise MigrationError(f"the offline SQL does not parse: {exc}") from exc


def normalize(text: str) -> str:
    """A statement's tokens without comments, one space apart: the key that matches a finding."""
    try:
        return " ".join(text[t.start:t.end + 1] for t in scan(text) if t.name not in ("SQL_COMMENT", "C_COMMENT"))
    except ParseError:
        return " ".join(text.split())


def shorten(text: str, limit: int = 160) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[:limit - 1] + "…"


def walk(node: Any) -> Iterator[Any]:
    if isinstance(node, (tuple, list)):
        for item in node:
            yield from walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for slot in node:
            yield from walk(getattr(node, slot))
