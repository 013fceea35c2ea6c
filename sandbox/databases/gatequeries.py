"""The gate's queries on its scratch clones: where unqualified names land, a default statement
timeout for the clone's role, and exact row counts that run no workspace-defined code.

Every session here is the scratch clone's own NOSUPERUSER login (``Strategy.scratch()``), the
role the revisions themselves ran as.
"""

from __future__ import annotations

from typing import Collection, Mapping

import psycopg
from psycopg import sql

from ..errors import MigrationError
from .base import ConnInfo


def current_schema(conn: ConnInfo) -> str | None:
    """Where unqualified names land for this connection (its first schema on the search path)."""
    try:
        with psycopg.connect(**conn.kwargs(), connect_timeout=10) as c:
            row = c.execute("SELECT pg_catalog.current_schema()").fetchone()
            return str(row[0]) if row and row[0] else None
    except psycopg.Error as exc:
        raise MigrationError(f"cannot open the gate's fresh clone: {exc}") from exc


def limit_statements(info: ConnInfo, timeout_ms: int) -> bool:
    """Give the scratch clone's role a default statement timeout, so that every later session of it
    gets it: alembic's online run whatever its driver (asyncpg ignores PGOPTIONS), the trace and the
    row counts. An ordinary role may set its own defaults, so this needs no admin session. A
    revision can still ``SET statement_timeout = 0`` for itself: the gate's deadline bounds that."""
    try:
        with psycopg.connect(**info.kwargs(), autocommit=True, connect_timeout=10) as c:
            c.execute(sql.SQL("ALTER ROLE CURRENT_USER SET statement_timeout = {}").format(sql.Literal(timeout_ms)))
        return True
    except psycopg.Error:
        return False


# Ordinary tables and partitioned tables of the clone, read from the catalog only.
_COUNTABLE_SQL = """
SELECT n.nspname, c.relname, c.relkind::text, c.relrowsecurity,
       EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {}
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def row_counts(info: ConnInfo, schemas: list[str] | None, rename: Mapping[str, str] | None,
               timeout_ms: int, excluded: Collection[str] = ()) -> tuple[dict[str, int | str], list[str]]:
    """Exact row counts of the clone's tables (``"schema.table"`` → rows, or the error that stopped
    the count), and notes on tables left out.

    Why this is safe, although the tables were defined by the workspace: the session is the scratch
    clone's own login role (every strategy's ``scratch()`` hands out a NOSUPERUSER role that owns
    the clone, the very role the revision itself ran as), so nothing evaluated here can do more
    than the revision already could. On top of that the count evaluates no workspace-defined code:
    ``search_path`` is ``pg_catalog``, the function is ``pg_catalog.count``, a plain table is read
    with ``FROM ONLY`` (no inheritance children), ``row_security = off`` makes a table whose policies
    would apply raise an error instead of running them, a relation with an ``ON SELECT`` rule is a
    view (relkind ``v``, never counted) and SELECT fires no trigger. Each count runs in a read-only
    transaction under the gate's statement timeout. Should the role ever be privileged, only plain
    tables without rules and without row-level security are counted, and a note says so.
    """
    if schemas:
        where: sql.Composable = sql.SQL("n.nspname = ANY({})").format(sql.Literal(list(schemas)))
    else:
        where = sql.SQL("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'")
    counts: dict[str, int | str] = {}
    notes: list[str] = []
    try:
        with psycopg.connect(**info.kwargs(), autocommit=True, connect_timeout=10) as c:
            row = c.execute("SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles "
                            "WHERE rolname = current_user").fetchone()
            privileged = bool(row and row[0])
            skipped: list[str] = []
            for nsp, rel, kind, rls, rules in c.execute(sql.SQL(_COUNTABLE_SQL).format(where)).fetchall():
                if rel in excluded:
                    continue
                name = f"{(rename or {}).get(nsp, nsp)}.{rel}"
                if privileged and (kind != "r" or rls or rules):
                    skipped.append(name)
                    continue
                query = sql.SQL("SELECT pg_catalog.count(*) FROM {} {}").format(
                    sql.SQL("ONLY") if kind == "r" else sql.SQL(""), sql.Identifier(nsp, rel))
                try:
                    with c.transaction():
                        c.execute("SET TRANSACTION READ ONLY")
                        c.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true), "
                                  "pg_catalog.set_config('row_security', 'off', true), "
                                  "pg_catalog.set_config('statement_timeout', %s, true)", (str(timeout_ms),))
                        counted = c.execute(query).fetchone()
                    counts[name] = int(counted[0]) if counted else 0
                except psycopg.Error as exc:
                    counts[name] = (exc.diag.message_primary or type(exc).__name__).strip()
            if skipped:
                notes.append(f"rows not counted (the clone's role is privileged, and these tables have rules "
                             f"or row-level security): {', '.join(skipped[:8])}")
    except psycopg.Error as exc:
        notes.append(f"rows were not counted: the gate's clone did not answer ({type(exc).__name__})")
    return counts, notes
