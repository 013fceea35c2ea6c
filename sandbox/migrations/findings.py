"""Findings and reports: the JSON shape of `migrate check`, `migrate lint` and `merge`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import re
from typing import Any, Literal, Mapping, Sequence

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
    # what the gate's replay measured (sandbox/migrations/trace.py): locks, rewrite, held_ms, rows, fails_on
    evidence: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rule": self.rule, "kind": self.kind, "severity": self.severity,
                             "revision": self.revision, "statement": self.statement,
                             "object": self.object, "message": self.message,
                             "affected_workspaces": list(self.affected_workspaces)}
        if self.suppressed:
            d["suppressed"] = self.suppressed
        if self.evidence is not None:
            d["evidence"] = self.evidence
        return d

    def with_(self, **changes: Any) -> "Finding":
        return replace(self, **changes)


def _mode_words(mode: str) -> str:
    """``AccessExclusiveLock`` → ``ACCESS EXCLUSIVE`` (the name LOCK TABLE and the docs use)."""
    words = re.findall(r"[A-Z][a-z]*", mode.removesuffix("Lock"))
    return " ".join(words).upper() or mode


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _count(n: int) -> str:
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return str(n)


def _rows(n: int) -> str:
    return f"{_count(n)} row" + ("" if n == 1 else "s")


def fails_text(fails_on: Mapping[str, int]) -> str:
    """``would fail on workspace d (3 rows)``; several: ``workspaces d (3 rows) and e (1 row)``."""
    parts = [f"{ws} ({_rows(n)})" for ws, n in sorted(fails_on.items())]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"would fail on workspace{'s' if len(parts) > 1 else ''} {listed}"


def describe_evidence(ev: Mapping[str, Any]) -> str:
    """One line for people, e.g. "took ACCESS EXCLUSIVE on public.users for 2.4 s and rewrote it
    (1.2 M rows) on the baseline; would fail on workspace d (3 rows)"."""
    locks = [lk for lk in ev.get("locks") or () if isinstance(lk, Mapping)]
    # the weak locks every statement takes say little once a stronger one is listed
    strong = [lk for lk in locks if lk.get("mode") not in ("AccessShareLock", "RowShareLock")] or locks
    shown = [f"{_mode_words(str(lk.get('mode')))} on {lk.get('relation')}" for lk in strong[:3]]
    if len(strong) > 3:
        shown.append(f"{len(strong) - 3} more")
    text = ("took " + (shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1])) if shown \
        else "ran"
    if isinstance(ev.get("held_ms"), (int, float)):
        text += f" for {_duration(float(ev['held_ms']))}"
    if ev.get("rewrite"):
        text += " and rewrote it" if len(strong) <= 1 else " and rewrote the table"
    if isinstance(ev.get("rows"), int):
        text += f" ({_rows(ev['rows'])})"
    text += " on the baseline"
    fails = ev.get("fails_on")
    if isinstance(fails, Mapping) and fails:
        text += "; " + fails_text(fails)
    elif isinstance(fails, Mapping) and ev.get("checked_on"):
        text += f"; the data of {', '.join(ev['checked_on'])} satisfies it"
    return text


def explain_destructive(finding: Finding, workspace: str | None) -> Finding:
    """A blocking destructive finding, saying what would break now and naming both escape hatches.

    The gate blocks a destructive change whether or not another workspace uses the object now:
    deployed code, and every workspace made from main later, still run code written against the
    old schema (docs/migration-rules.md, "Why destructive changes are always blocked")."""
    if finding.kind != "destructive" or finding.severity != "error" or "--allow-destructive" in finding.message:
        return finding
    users = finding.affected_workspaces
    now = (f"breaks now: workspace{'s' if len(users) > 1 else ''} {', '.join(users)} still "
           f"run{'' if len(users) > 1 else 's'} code written against it" if users
           else "no other workspace uses it now, but deployed code (and the old version during a rollout) may")
    name = workspace or "NAME"
    hatches = (f"to merge it anyway: `sandbox merge {name} --allow-destructive \"REASON\"`, or a "
               f"`# sandbox: allow {finding.rule} reason: …` comment in the revision file")
    return finding.with_(message=f"{finding.message} ({now}; {hatches})")


def default_severity(kind: Kind) -> Severity:
    """Under the default (additive) policy: destructive, ordering and apply are errors; lock warns."""
    return "warning" if kind == "lock" else "error"


@dataclass
class Report:
    """The result of a lint, a gate check or a merge.

    The optional fields are left out of :meth:`to_json` while unset (None): ``notes`` (what the
    gate could not judge, or judged on something else), ``judged`` and ``branch`` (the commit the
    gate judged, of which branch), ``trusted_changes`` (files the branch changes that main
    trusts), ``allowed`` (what ``--allow-destructive`` let through), ``dry_run``, ``commit`` (main
    after the merge) and ``baseline_error`` (merged, but the baseline did not follow).
    """

    workspace: str | None = None
    base_head: str | None = None
    revisions: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    merged: bool = False
    notes: list[str] | None = None
    judged: str | None = None
    branch: str | None = None
    trusted_changes: list[str] | None = None
    allowed: list[str] | None = None
    dry_run: bool | None = None
    commit: str | None = None
    baseline_error: str | None = None

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def extend(self, findings: Sequence[Finding]) -> None:
        self.findings.extend(findings)

    def note(self, *texts: str) -> list[str]:
        """Add notes (none: only make sure the report has its ``notes`` list); the list."""
        if self.notes is None:
            self.notes = []
        self.notes.extend(texts)
        return self.notes

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ok": self.ok, "workspace": self.workspace, "base_head": self.base_head,
                             "revisions": list(self.revisions),
                             "findings": [f.to_json() for f in self.findings]}
        if self.merged:
            d["merged"] = True
        optional: dict[str, Any] = {
            "judged": self.judged, "branch": self.branch, "notes": self.notes,
            "trusted_changes": self.trusted_changes, "allowed": self.allowed, "dry_run": self.dry_run,
            "baseline_error": self.baseline_error, "commit": self.commit}
        d.update({k: (list(v) if isinstance(v, list) else v) for k, v in optional.items() if v is not None})
        return d
