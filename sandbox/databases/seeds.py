"""Seeding the baseline: a project's seed SQL file runs in the baseline database (``[database] seed``)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from ..errors import DatabaseError
from .base import ConnInfo


def run_seed_file(conn: ConnInfo, path: Path, name: str) -> None:
    """Run the SQL file ``path`` (a trusted project file, ``name`` as the config gives it) in the
    database ``conn`` names, autocommit; :class:`DatabaseError` naming the seed if it fails."""
    try:
        with psycopg.connect(**conn.kwargs(), autocommit=True, connect_timeout=10) as c:
            c.execute(path.read_text())  # type: ignore[arg-type] # trusted project file
    except psycopg.Error as exc:
        raise DatabaseError(f"seed {name} failed: {exc.diag.message_primary or exc}") from exc
