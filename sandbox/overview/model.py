"""The overview's typed answer: main, every workspace against main, every pair against each other.

``Overview.to_json()`` is what ``sandbox overview --json``, the dashboard and the MCP ``overview``
tool return.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Risk(enum.IntEnum):
    """How bad a pair (or a finding) is; ordered, so the worst is ``max``."""

    NONE = 0
    LOW = 1        # overlapping paths that merge cleanly
    MEDIUM = 2     # the second to merge must rebase its revisions
    HIGH = 3       # a textual conflict, or a schema change that breaks the other's code

    @property
    def label(self) -> str:
        return self.name.lower()


class GateState(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    STALE = "stale"      # the branch moved since the gate judged it
    NEVER = "never"


class FindingKind(enum.Enum):
    OVERLAP = "overlap"                      # both change the same paths; git merges them cleanly
    CONFLICT = "conflict"                    # a textual conflict between the two (committed work)
    UNCOMMITTED_CONFLICT = "uncommitted-conflict"   # a conflict that involves uncommitted work
    SCHEMA_BREAKS = "schema-breaks"          # one's revision drops/renames/narrows what the other uses
    SCHEMA_SAME_OBJECT = "schema-same-object"   # both add the same object
    SCHEMA_SAME_HEAD = "schema-same-head"    # both revise the same head: the second must rebase


@dataclass(frozen=True)
class PairFinding:
    kind: FindingKind
    risk: Risk
    message: str                              # what will happen and what to do
    paths: tuple[str, ...] = ()
    object: str | None = None
    revision: str | None = None
    by: str | None = None                     # the workspace whose change causes it

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "risk": self.risk.label, "message": self.message,
                "paths": list(self.paths), "object": self.object, "revision": self.revision, "by": self.by}


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    overlap: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    findings: tuple[PairFinding, ...] = ()

    @property
    def risk(self) -> Risk:
        return max((f.risk for f in self.findings), default=Risk.NONE)

    def involves(self, name: str) -> bool:
        return name in (self.a, self.b)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "workspaces": [self.a, self.b], "risk": self.risk.label,
                "overlap": list(self.overlap), "conflicts": list(self.conflicts),
                "textual_conflict": bool(self.conflicts),
                "schema_collision": any(f.kind.value.startswith("schema-") for f in self.findings),
                "findings": [f.to_json() for f in self.findings]}


@dataclass(frozen=True)
class GateResult:
    state: GateState
    commit: str | None = None       # the commit the gate judged
    at: str | None = None
    findings: int = 0
    report: dict[str, Any] | None = None

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"state": self.state.value, "commit": self.commit, "at": self.at,
                             "findings": self.findings}
        if full and self.report is not None:
            d["report"] = self.report
        return d


@dataclass(frozen=True)
class WorkspaceView:
    name: str
    branch: str
    state: str
    commit: str | None
    ahead: int = 0
    behind: int = 0
    changed: tuple[str, ...] = ()          # uncommitted: tracked files that differ
    untracked: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()            # every path it changes against main (commits and files)
    added: int = 0
    removed: int = 0
    revisions: tuple[str, ...] = ()
    revises: str | None = None
    on_main_head: bool = True
    gate: GateResult = field(default_factory=lambda: GateResult(GateState.NEVER))
    merges_cleanly: bool | None = None
    merge_conflicts: tuple[str, ...] = ()
    brief: str | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "branch": self.branch, "state": self.state, "commit": self.commit,
                "ahead": self.ahead, "behind": self.behind,
                "uncommitted": {"changed": list(self.changed), "untracked": list(self.untracked)},
                "diffstat": {"files": len(self.paths), "added": self.added, "removed": self.removed},
                "paths": list(self.paths),
                "revisions": {"new": list(self.revisions), "revises": self.revises,
                              "on_main_head": self.on_main_head},
                "gate": self.gate.to_json(),
                "merges_cleanly": self.merges_cleanly, "merge_conflicts": list(self.merge_conflicts),
                "brief": self.brief, "notes": list(self.notes)}


@dataclass(frozen=True)
class Overview:
    main_branch: str
    main_commit: str
    main_head: str | None
    workspaces: tuple[WorkspaceView, ...] = ()
    pairs: tuple[Pair, ...] = ()
    migrations: bool = True

    def workspace(self, name: str) -> WorkspaceView | None:
        return next((w for w in self.workspaces if w.name == name), None)

    def pair(self, a: str, b: str) -> Pair | None:
        return next((p for p in self.pairs if {p.a, p.b} == {a, b}), None)

    def for_workspace(self, name: str) -> Overview:
        """The same overview with only the pairs that involve ``name`` (the MCP tool's view)."""
        return Overview(self.main_branch, self.main_commit, self.main_head, self.workspaces,
                        tuple(p for p in self.pairs if p.involves(name)), self.migrations)

    def to_json(self) -> dict[str, Any]:
        return {"main": {"branch": self.main_branch, "commit": self.main_commit, "head": self.main_head},
                "migrations": self.migrations,
                "workspaces": [w.to_json() for w in self.workspaces],
                "pairs": [p.to_json() for p in self.pairs]}
