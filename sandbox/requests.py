"""Briefs and merge requests: what a person asks of an agent, and what an agent asks of a person.

A *brief* is a workspace's goal and context, set with ``sandbox up NAME --brief`` or
``sandbox brief NAME TEXT``. It is the first thing the MCP server's ``workspace_info`` returns.

A *merge request* is an agent's "please merge this": ``sandbox merge-request NAME`` runs the
gate on the branch's commit and records the request (workspace, commit, note, gate result,
time). ``sandbox merge --requests`` lists the open ones; a request is *stale* once the branch
has moved past the commit that was judged. ``sandbox merge NAME`` closes it. Nothing here
moves main.

Both live in the registry's SQLite database, in tables of this module (created on first use).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .errors import SandboxError, UsageError
from .migrations.findings import Report
from .registry import Registry, WorkspaceRecord, now

MAX_BRIEF = 20_000          # characters; a brief is a focused goal, not a document dump

_TABLES = (
    "CREATE TABLE IF NOT EXISTS briefs (workspace TEXT PRIMARY KEY, text TEXT NOT NULL, at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS merge_requests (id INTEGER PRIMARY KEY AUTOINCREMENT, workspace TEXT NOT NULL, "
    "branch TEXT NOT NULL, commit_sha TEXT NOT NULL, note TEXT, ok INTEGER NOT NULL, report TEXT NOT NULL, "
    "at TEXT NOT NULL, closed_at TEXT, closed_by TEXT)",
)


@dataclass(frozen=True)
class MergeRequest:
    """One recorded request for a person to merge a workspace's branch."""

    id: int
    workspace: str
    branch: str
    commit: str
    note: str | None
    ok: bool                       # the gate's result when the request was made
    at: str
    report: dict[str, Any] = field(default_factory=dict)
    closed_at: str | None = None
    closed_by: str | None = None   # "merged <sha>", "superseded by #N"
    stale: bool = False            # the branch has moved since the gate judged ``commit``
    current: str | None = None     # the branch's commit now (None: the workspace is gone)

    @property
    def command(self) -> str:
        """What the person runs to merge it."""
        if self.ok:
            return f"sandbox merge {self.workspace}"
        return f"sandbox merge {self.workspace} --allow-destructive REASON   (the gate failed: read the findings first)"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "workspace": self.workspace, "branch": self.branch, "commit": self.commit,
                "note": self.note, "ok": self.ok, "at": self.at, "stale": self.stale, "current": self.current,
                "closed_at": self.closed_at, "closed_by": self.closed_by, "command": self.command,
                "gate": self.report}


class Requests:
    """The briefs and merge requests of one project's registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._ready = False

    def _ensure(self) -> None:
        if self._ready:
            return
        with self.registry.reading() as conn:
            have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                               "AND name IN ('briefs', 'merge_requests')")}
        if len(have) < len(_TABLES):
            with self.registry.transaction() as conn:
                for ddl in _TABLES:
                    conn.execute(ddl)
        self._ready = True

    # -- briefs -------------------------------------------------------------------------------------
    def set_brief(self, workspace: str, text: str | None) -> None:
        """Set (or, with None or blank text, clear) the workspace's brief."""
        if text is not None and len(text) > MAX_BRIEF:
            raise UsageError(f"the brief is {len(text)} characters long; at most {MAX_BRIEF} are kept")
        self._ensure()
        with self.registry.transaction() as conn:
            if text is None or not text.strip():
                conn.execute("DELETE FROM briefs WHERE workspace = ?", (workspace,))
            else:
                conn.execute("INSERT INTO briefs (workspace, text, at) VALUES (?, ?, ?) ON CONFLICT(workspace) "
                             "DO UPDATE SET text = excluded.text, at = excluded.at", (workspace, text, now()))

    def brief(self, workspace: str) -> str | None:
        return self.briefs().get(workspace)

    def briefs(self) -> dict[str, str]:
        self._ensure()
        with self.registry.reading() as conn:
            return {r[0]: r[1] for r in conn.execute("SELECT workspace, text FROM briefs")}

    def forget(self, workspace: str) -> None:
        """The workspace was removed: its brief goes (its requests stay, closed, as history)."""
        self._ensure()
        with self.registry.transaction() as conn:
            conn.execute("DELETE FROM briefs WHERE workspace = ?", (workspace,))
            conn.execute("UPDATE merge_requests SET closed_at = ?, closed_by = 'workspace removed' "
                         "WHERE workspace = ? AND closed_at IS NULL", (now(), workspace))

    # -- merge requests -----------------------------------------------------------------------------
    @staticmethod
    def _row(r: sqlite3.Row) -> MergeRequest:
        return MergeRequest(id=r["id"], workspace=r["workspace"], branch=r["branch"], commit=r["commit_sha"],
                            note=r["note"], ok=bool(r["ok"]), at=r["at"], report=json.loads(r["report"]),
                            closed_at=r["closed_at"], closed_by=r["closed_by"])

    def record(self, workspace: str, branch: str, commit: str, note: str | None, report: Report) -> MergeRequest:
        """Record a request; an earlier open request of the same workspace is superseded by it."""
        self._ensure()
        with self.registry.transaction() as conn:
            cur = conn.execute("INSERT INTO merge_requests (workspace, branch, commit_sha, note, ok, report, at) "
                               "VALUES (?,?,?,?,?,?,?)",
                               (workspace, branch, commit, note, int(report.ok), json.dumps(report.to_json(),
                                                                                            default=str), now()))
            new_id = int(cur.lastrowid or 0)
            conn.execute("UPDATE merge_requests SET closed_at = ?, closed_by = ? WHERE workspace = ? "
                         "AND closed_at IS NULL AND id != ?", (now(), f"superseded by #{new_id}", workspace, new_id))
        with self.registry.reading() as conn:
            conn.row_factory = sqlite3.Row
            return self._row(conn.execute("SELECT * FROM merge_requests WHERE id = ?", (new_id,)).fetchone())

    def open(self) -> list[MergeRequest]:
        self._ensure()
        with self.registry.reading() as conn:
            conn.row_factory = sqlite3.Row
            return [self._row(r) for r in conn.execute("SELECT * FROM merge_requests WHERE closed_at IS NULL "
                                                       "ORDER BY id")]

    def close(self, workspace: str, reason: str) -> int:
        """Close the workspace's open requests (a merge happened); how many were open."""
        self._ensure()
        with self.registry.transaction() as conn:
            cur = conn.execute("UPDATE merge_requests SET closed_at = ?, closed_by = ? WHERE workspace = ? "
                               "AND closed_at IS NULL", (now(), reason, workspace))
            return int(cur.rowcount or 0)


class GateRunner(Protocol):
    """What requesting a merge needs of the project (``Sandbox`` has it)."""

    @property
    def registry(self) -> Registry: ...

    def record(self, name: str) -> WorkspaceRecord: ...

    def migrate_check(self, name: str) -> Any: ...


@dataclass(frozen=True)
class MergeRequestResult:
    """``sandbox merge-request``: the request recorded and the gate's report on the judged commit."""

    request: MergeRequest
    report: Report

    @property
    def ok(self) -> bool:
        return self.report.ok

    def to_json(self) -> dict[str, Any]:
        return {**self.request.to_json(), "recorded": True}


def request_merge(project: GateRunner, name: str, note: str | None) -> MergeRequestResult:
    """Run the gate on the workspace's branch and record a request for a person to merge it."""
    if note is not None and len(note) > MAX_BRIEF:
        raise UsageError(f"the note is {len(note)} characters long; at most {MAX_BRIEF} are kept")
    rec = project.record(name)
    report = project.migrate_check(name)
    commit = report.to_json().get("judged")
    if not commit:
        raise SandboxError(f"the gate did not name the commit it judged for {name!r}; nothing was recorded")
    req = Requests(project.registry).record(name, rec.branch, str(commit), note, report)
    return MergeRequestResult(req, report)


def open_requests(registry: Registry, branch_commit: Callable[[WorkspaceRecord], str | None]) -> list[MergeRequest]:
    """The open requests, each marked ``stale`` when its branch no longer points at the judged commit."""
    out: list[MergeRequest] = []
    for req in Requests(registry).open():
        rec = registry.get(req.workspace)
        current: str | None = None
        if rec is not None:
            try:
                current = branch_commit(rec)
            except SandboxError:
                current = None
        out.append(MergeRequest(**{**req.__dict__, "stale": current != req.commit, "current": current}))
    return out
