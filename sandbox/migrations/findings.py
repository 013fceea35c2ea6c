"""Findings and reports: the JSON shape of `migrate check`, `migrate lint` and `merge`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Sequence

Kind = Literal["destructive", "lock", "ordering", "apply"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem found in a migration."""

    rule: str                      # stable rule id, e.g. "drop-table" (documented in docs/migration-rules.md)
    kind: Kind
    severity: Severity
    message: str
    revision: str | None = None
    statement: str | None = None   # the offending SQL statement, normalised, if any
    object: str | None = None      # "public.t", "public.t.col", ... or None
    affected_workspaces: tuple[str, ...] = ()
    suppressed: str | None = None  # reason, when an inline suppression or --allow-destructive let it through

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rule": self.rule, "kind": self.kind, "severity": self.severity,
                             "revision": self.revision, "statement": self.statement,
                             "object": self.object, "message": self.message,
                             "affected_workspaces": list(self.affected_workspaces)}
        if self.suppressed:
            d["suppressed"] = self.suppressed
        return d

    def with_(self, **changes: Any) -> "Finding":
        return replace(self, **changes)


def default_severity(kind: Kind) -> Severity:
    """Under the default (additive) policy: destructive, ordering and apply are errors; lock warns."""
    return "warning" if kind == "lock" else "error"


@dataclass
class Report:
    """The result of a lint, a gate check or a merge."""

    workspace: str | None = None
    base_head: str | None = None
    revisions: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    merged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def extend(self, findings: Sequence[Finding]) -> None:
        self.findings.extend(findings)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ok": self.ok, "workspace": self.workspace, "base_head": self.base_head,
                             "revisions": list(self.revisions),
                             "findings": [f.to_json() for f in self.findings]}
        if self.merged:
            d["merged"] = True
        d.update(self.extra)
        return d
