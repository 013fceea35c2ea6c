"""``sandbox migrate up NAME [--to REV]``: the workspace's own revisions, applied to its own database.

An agent that runs ``alembic upgrade head`` itself reaches whatever ``alembic.ini`` names, which
on a developer's machine is the real development database. This command runs alembic through
the project runner (the project's image or interpreter) with the workspace's own connection
settings, then reads the version table of that database to verify it holds the expected heads.

Destructive revisions apply here too: this is the workspace's own database. The gate judges
them before a merge.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from ..databases.base import ConnInfo, Strategy
from ..errors import UsageError
from ..registry import WorkspaceRecord
from .base import MigrationTool, Revision


@dataclass(frozen=True)
class MigrateUpResult:
    """What ``migrate up`` did: ``applied`` is empty when the database was already there."""

    workspace: str
    target: str
    before: list[str]
    heads: list[str]                                   # the version table afterwards (verified)
    applied: list[str] = field(default_factory=list)   # oldest first

    @property
    def message(self) -> str:
        if not self.applied:
            return f"{self.workspace}: already at {', '.join(self.heads) or 'base'}; nothing to apply"
        return (f"{self.workspace}: applied {len(self.applied)} revision(s): {', '.join(self.applied)}; "
                f"its database is at {', '.join(self.heads)}")

    def to_json(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "target": self.target, "before": list(self.before),
                "heads": list(self.heads), "applied": list(self.applied), "noop": not self.applied,
                "message": self.message}


class Workspaces(Protocol):
    """What ``migrate up`` needs of the project (``Sandbox`` has it)."""

    @property
    def tool(self) -> MigrationTool: ...

    @property
    def db(self) -> Strategy: ...

    def record(self, name: str) -> WorkspaceRecord: ...

    def locked(self, name: str) -> contextlib.AbstractContextManager[WorkspaceRecord]: ...

    def base_env(self, rec: WorkspaceRecord | None = None) -> dict[str, str]: ...


def _ancestors(revs: Mapping[str, Revision], starts: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        rid = stack.pop()
        if rid in seen or rid not in revs:
            continue
        seen.add(rid)
        stack.extend(revs[rid].down_revisions)
    return seen


def _ordered(revs: Mapping[str, Revision], wanted: set[str]) -> list[str]:
    """``wanted`` oldest first (parents before children; ties by id)."""
    out: list[str] = []
    done: set[str] = set()

    def visit(rid: str) -> None:
        if rid in done or rid not in wanted:
            return
        done.add(rid)
        for d in revs[rid].down_revisions:
            visit(d)
        out.append(rid)

    for rid in sorted(wanted):
        visit(rid)
    return out


def _target(revs: Mapping[str, Revision], to: str | None) -> str:
    if to is None or to in ("head", "heads"):
        return "heads"
    if to in revs:
        return to
    found = [r for r in revs if r.startswith(to)] if len(to) >= 4 else []
    if len(found) == 1:
        return found[0]
    raise UsageError(f"--to {to!r}: " + ("ambiguous: " + ", ".join(sorted(found)) if found
                                          else "no such revision in the workspace's migrations"))


def migrate_up(project: Workspaces, name: str, to: str | None = None) -> MigrateUpResult:
    """Upgrade the workspace's own database to ``to`` (default: its heads), verified."""
    project.record(name)                 # unknown: exit 2 before anything is locked
    tool = project.tool
    with project.locked(name) as rec:
        tree = Path(rec.path)
        if not rec.strategy:
            raise UsageError(f"workspace {name!r} has no database")
        if not tool.available(tree):
            raise UsageError(f"workspace {name!r} has no migrations to apply (no alembic configuration in "
                             f"{tree})")
        revs = tool.revisions(tree)
        target = _target(revs, to)
        info: ConnInfo = project.db.info(name, rec.data.get("network"))
        before = tool.current(info)
        if target != "heads" and target in _ancestors(revs, before):
            return MigrateUpResult(name, target, before, before)      # already at or past it
        heads = tool.upgrade(tree, info, target, env=project.base_env(rec), workspace=name)
        applied = _ordered(revs, _ancestors(revs, heads) - _ancestors(revs, before))
        return MigrateUpResult(name, target, before, heads, applied)
