"""Reading a migration tool's version table (alembic's ``alembic_version``) in a database."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..errors import DatabaseError
from .base import ConnInfo


class VersionTableUnreadable(DatabaseError):
    """The database could not be asked (``detail``: the driver's first line, not yet scrubbed)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def read_versions(db: ConnInfo, table: str, schema: str | None = None) -> list[str]:
    """The values of ``[schema.]table``'s ``version_num`` column, sorted (empty when the table
    does not exist); :class:`VersionTableUnreadable` when the database cannot be read."""
    ident = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    try:
        with psycopg.connect(**db.kwargs(), connect_timeout=10, autocommit=True) as conn:
            try:
                rows = conn.execute(sql.SQL("SELECT version_num FROM {}").format(ident)).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
    except psycopg.Error as exc:
        text = str(exc).strip()
        raise VersionTableUnreadable(text.splitlines()[0] if text else repr(exc)) from exc
    return sorted(str(r[0]) for r in rows)
