"""A re-export for callers not yet moved to the gate's modules (``sandbox.api``, ``sandbox.intents``,
``sandbox.cli``): each method is one call into :mod:`sandbox.migrations.gate`, :mod:`.queue`,
:mod:`.sync` or :mod:`.status` with a :class:`~sandbox.migrations.context.GateContext`. Delete once
``Sandbox`` builds the context itself."""

from __future__ import annotations

from typing import Any

from ..registry import IntentRecord, WorkspaceRecord
from . import gate, queue, status, sync
from .context import GateContext
from .findings import Report
from .gate import lint_report

__all__ = ["Coordinator", "lint_report"]


class Coordinator:
    """The gate's commands over one ``Sandbox`` (results as the JSON the CLI prints, reports typed)."""

    def __init__(self, sb: Any) -> None:
        self.ctx = GateContext.from_sandbox(sb)

    def workspace_summary(self, rec: WorkspaceRecord) -> dict[str, Any]:
        return status.workspace_summary(self.ctx, rec).to_json()

    def status(self) -> dict[str, Any]:
        return status.status(self.ctx).to_json()

    def check(self, name: str, **kw: Any) -> Report:
        return gate.check(self.ctx, name, **kw)

    def rebase(self, name: str) -> dict[str, Any]:
        return sync.rebase(self.ctx, name).to_json()

    def sync(self, name: str) -> dict[str, Any]:
        return sync.sync(self.ctx, name).to_json()

    def merge(self, name: str, *, dry_run: bool = False, allow_destructive: str | None = None) -> Report:
        return queue.merge(self.ctx, name, dry_run=dry_run, allow_destructive=allow_destructive)

    def finish(self, it: IntentRecord) -> tuple[str, str]:
        return queue.finish(self.ctx, it)
