"""The gate's static check: each new revision's offline SQL, rendered by the migration tool and
linted with a real PostgreSQL parser (:mod:`sandbox.migrations.lint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pglast
from pglast import ast

from ...errors import MigrationError, SandboxError
from ...registry import WorkspaceRecord
from ..base import Revision
from ..context import GateContext
from ..findings import Report
from ..lint import lint_dump, lint_sql, parse_suppressions
from ..scan import read_inside
from .clock import GateClock, GateTimeout


def static(ctx: GateContext, clock: GateClock, rec: WorkspaceRecord, new: list[Revision],
           report: Report) -> dict[str, str]:
    """Lint each revision's offline SQL; returns that SQL by revision (the replay traces it)."""
    clock.start()                   # the gate's deadline counts from here: render, replay, tests
    created: set[str] = set()
    tree = ctx.trees.tree(rec)
    rendered: dict[str, str] = {}
    for rev in new:
        doing = f"rendering the offline SQL of {rev.id}"
        try:
            sql = ctx.tool.offline_sql(tree, rev.id, env=ctx.ws.base_env(rec), timeout=clock.left(doing))
        except GateTimeout:
            clock.timed_out(report, doing)
            break
        except MigrationError as exc:
            report.note(f"{rev.id}: no offline SQL ({exc}); judged by its online run only, without evidence")
            continue
        except SandboxError:
            if clock.expired():
                clock.timed_out(report, doing)
                break
            raise
        rendered[rev.id] = sql
        report.extend(lint_sql(sql, revision=rev.id, suppressions=suppressions(tree, rev), created_before=created))
        created |= created_tables(sql)
    return rendered


def suppressions(tree: Path, rev: Revision) -> dict[str, str]:
    """The revision file's inline suppressions (rule → reason); none when it cannot be read."""
    try:
        return parse_suppressions(read_inside(tree, rev.path).decode("utf-8", errors="replace"))
    except MigrationError:
        return {}


def created_tables(sql: str) -> set[str]:
    """Tables a revision's SQL creates (schema-qualified; ``public`` by default)."""
    out: set[str] = set()
    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return out
    for raw in stmts:
        stmt = raw.stmt
        rel: Any = None
        if isinstance(stmt, ast.CreateStmt):
            rel = stmt.relation
        elif isinstance(stmt, ast.CreateTableAsStmt) and stmt.into is not None:
            rel = stmt.into.rel
        if rel is not None:
            out.add(f"{rel.schemaname or 'public'}.{rel.relname}")
    return out


def lint_report(sql: str) -> Report:
    """``migrate lint``: lint raw SQL with no workspace.

    alembic ``--sql`` output of several revisions is split at its ``-- Running upgrade A -> B``
    markers and each revision is linted on its own (``revisions`` lists them); a file without
    markers is one migration, and the report's ``notes`` say so.
    """
    dump = lint_dump(sql)
    report = Report(revisions=dump.revisions)
    report.extend(dump.findings)
    if not dump.split:
        report.note(
            "no alembic revision markers (-- Running upgrade A -> B): the SQL was linted as one "
            "migration, so objects created anywhere in it count as new")
    return report
