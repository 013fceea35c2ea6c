"""A re-export for callers not yet moved to the gate's modules (``sandbox.api``, ``sandbox.intents``,
``sandbox.cli``): each method is one call into :mod:`sandbox.migrations.gate`, :mod:`.queue`,
:mod:`.sync` or :mod:`.status` with a :class:`~sandbox.migrations.context.GateContext`. Delete once
``Sandbox`` builds the context itself."""

from __future__ import annotations

from typing import Any

from ..registry import IntentRecord, WorkspaceRecord
from . import status
from .context import GateContext
from .findings import Report

__all__ = ["Coordinator", "lint_report"]


def lint_report(sql: str) -> Report:
    """``migrate lint`` (:func:`sandbox.migrations.gate.static.lint_report`)."""
    from .gate.static import lint_report as lint
    return lint(sql)


class Coordinator:
    """The gate's commands over one ``Sandbox`` (results as the JSON the CLI prints, reports typed).

    The gate's parts (pglast, psycopg, the catalog and the trace) are imported when a command
    needs them, not by every command that imports ``sandbox.api`` (``ls`` reads only :mod:`.status`)."""

    def __init__(self, sb: Any) -> None:
        self.ctx = GateContext.from_sandbox(sb)

    def workspace_summary(self, rec: WorkspaceRecord) -> dict[str, Any]:
        return status.workspace_summary(self.ctx, rec).to_json()

    def workspace_summaries(self, recs: list[WorkspaceRecord]) -> dict[str, dict[str, Any]]:
        """Every workspace's summary by name, batched (call after collecting them)."""
        return {name: s.to_json() for name, s in status.summaries(self.ctx, recs).items()}

    def status(self) -> dict[str, Any]:
        return status.status(self.ctx).to_json()

    def check(self, name: str, **kw: Any) -> Report:
        from . import gate
        return gate.check(self.ctx, name, **kw)

    def rebase(self, name: str) -> dict[str, Any]:
        from . import sync
        return sync.rebase(self.ctx, name).to_json()

    def sync(self, name: str) -> dict[str, Any]:
        from . import sync
        return sync.sync(self.ctx, name).to_json()

    def merge(self, name: str, *, dry_run: bool = False, allow_destructive: str | None = None) -> Report:
        from . import queue
        return queue.merge(self.ctx, name, dry_run=dry_run, allow_destructive=allow_destructive)

    def finish(self, it: IntentRecord) -> tuple[str, str]:
        from . import queue
        return queue.finish(self.ctx, it)
