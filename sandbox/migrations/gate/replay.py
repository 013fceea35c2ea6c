"""The gate's dynamic check and its evidence.

alembic applies the new revisions one by one to a fresh clone of the baseline, and the catalog
diff and the row counts around each are what the policy judges. The offline SQL the static check
rendered is traced statement by statement on a second clone (:mod:`sandbox.migrations.trace`):
its evidence goes on the findings, and a revision whose offline SQL changes the catalog
differently from its online run is an error of its own.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Mapping

from ...config import duration_seconds
from ...databases.base import ConnInfo
from ...databases.gatequeries import current_schema, limit_statements, row_counts
from ...errors import MigrationError, SandboxError
from ...registry import WorkspaceRecord
from .. import catalog, trace
from ..alembic import scrub_secrets
from ..base import Revision
from ..context import GateContext
from ..findings import Finding, Report
from .clock import GateClock, GateTimeout
from .static import suppressions

_WHAT = {"tables": "table", "views": "view", "constraints": "constraint", "indexes": "index", "types": "type",
         "functions": "function", "sequences": "sequence", "behaviour": "rules, policies or triggers of"}


def replay(ctx: GateContext, clock: GateClock, rec: WorkspaceRecord, new: list[Revision], report: Report,
           run_tests: bool = False, offline: Mapping[str, str] | None = None) -> None:
    """Judge what runs online (see the module's docstring); a passed deadline is a finding."""
    if any(f.rule == "gate-timeout" for f in report.findings):
        return
    try:
        _Replay(ctx, clock, rec, report, dict(offline or {})).run(new, run_tests)
    except GateTimeout as exc:
        clock.timed_out(report, exc.doing)


def run_tests(ctx: GateContext, rec: WorkspaceRecord, conn: ConnInfo, report: Report) -> None:
    """The gate's test commands, in the project's environment, against the fresh clone only."""
    tree = ctx.trees.tree(rec)
    for command in ctx.config.migrations.test:
        res = ctx.runner.run(tree, ["sh", "-c", command], cwd=tree, env=ctx.ws.base_env(rec), db=conn,
                             workspace=rec.name, writable=True)
        if res.code != 0:
            tail = scrub_secrets(res.output, conn.url()).splitlines()[-5:]
            report.extend([Finding(rule="tests-failed", kind="apply", severity="error",
                                   message=f"test command {command!r} exited {res.code}: " + " | ".join(tail))])
            return


def statement_timeout_ms(value: str) -> int:
    return max(1, int((duration_seconds(value) or 60.0) * 1000))


class _Clone:
    """One scratch clone and how its catalog is read (the schema strategy's clone is a schema)."""

    def __init__(self, info: ConnInfo) -> None:
        self.info = info
        self.schemas: list[str] | None = None
        self.rename: dict[str, str] | None = None
        schema = current_schema(info)
        if schema not in (None, "public"):
            self.schemas, self.rename = [str(schema)], {str(schema): "public"}

    def snapshot(self) -> Any:
        return catalog.snapshot(self.info, schemas=self.schemas, rename=self.rename)


class _Replay:
    """One replay of a workspace's new revisions (state carried from one revision to the next)."""

    def __init__(self, ctx: GateContext, clock: GateClock, rec: WorkspaceRecord, report: Report,
                 offline: dict[str, str]) -> None:
        self.ctx, self.clock, self.rec, self.report, self.offline = ctx, clock, rec, report, offline
        self.tree: Path = ctx.trees.tree(rec)
        self.env = ctx.ws.base_env(rec)
        self.cfg = ctx.config.migrations
        self.timeout_ms = statement_timeout_ms(self.cfg.statement_timeout)
        self.notes = report.note()
        self.static_keys = {(f.rule, f.object, f.revision) for f in report.findings}
        self.writes: set[str] = set()        # tables the chain's DML wrote so far (trace.probe skips them)
        self.targets: dict[str, Any] | None = None
        self.shadow: _Clone | None = None

    def run(self, new: list[Revision], run_tests_too: bool) -> None:
        with contextlib.ExitStack() as clones:
            self.clock.left("cloning the baseline")
            conn = _Clone(clones.enter_context(self.ctx.db.scratch(f"gate-{self.rec.name}")))
            # the offline SQL runs on a clone of its own: both start from the baseline, so each
            # revision's catalog change can be compared between the two
            if self.offline:
                self.shadow = _Clone(clones.enter_context(self.ctx.db.scratch(f"sql-{self.rec.name}")))
            for info in (conn, self.shadow):
                if info is not None and not limit_statements(info.info, self.timeout_ms):
                    self.notes.append(f"the statement timeout ({self.cfg.statement_timeout}) could not be set on a "
                                      "scratch clone's role: only the gate's deadline bounds its statements there")
            before = conn.snapshot()
            shadow_before = self.shadow.snapshot() if self.shadow is not None else None
            rows = self._count(conn)
            for rev in new:
                step = self._revision(conn, rev, before, shadow_before, rows)
                if step is None:
                    return
                before, shadow_before, rows = step
            if self.cfg.roundtrip and new:
                self._roundtrip(conn.info, new)
            if run_tests_too and self.cfg.test:
                self.clock.left("running the gate's tests")
                run_tests(self.ctx, self.rec, conn.info, self.report)

    def _count(self, clone: _Clone) -> dict[str, int | str]:
        counts, notes = row_counts(clone.info, clone.schemas, clone.rename, self.timeout_ms,
                                   catalog.DEFAULT_EXCLUDED_TABLES)
        self.notes.extend(n for n in notes if n not in self.notes)
        return counts

    def _revision(self, conn: _Clone, rev: Revision, before: Any, shadow_before: Any,
                  rows: dict[str, int | str]) -> tuple[Any, Any, dict[str, int | str]] | None:
        """Apply ``rev`` online and judge it, then trace its offline SQL; None: the replay stops."""
        # 1. what runs: the project's alembic, online, this one revision
        try:
            self._upgrade_on(conn.info, rev.id, "the gate's fresh clone")
        except MigrationError as exc:
            self._apply_failed(rev, exc)
            return None
        self.clock.left(f"reading the catalog after {rev.id}")
        after = conn.snapshot()
        rows_after = self._count(conn)
        supp = suppressions(self.tree, rev)
        judged = [f for f in catalog.diff(before, after, revision=rev.id)
                  if (f.rule, f.object, f.revision) not in self.static_keys]
        judged += rows_lost(rows, rows_after, rev.id)
        for finding in judged:
            reason = supp.get(finding.rule) or supp.get("*")
            if reason and finding.kind in ("destructive", "lock"):
                finding = finding.with_(severity="warning", suppressed=reason)
            self.report.extend([finding])
        # 2. the evidence: the offline SQL, traced on the second clone
        traced: trace.Trace | None = None
        if self.shadow is not None and shadow_before is not None:
            traced, shadow_after = self._trace_offline(rev)
            if shadow_after is None:
                self.shadow = None           # it could not follow: later revisions have no evidence
                self.notes.append(f"the offline SQL clone could not follow {rev.id}: later revisions "
                                  "have no evidence")
            else:
                if traced is not None:
                    self._compare(rev, _delta(before, after), _delta(shadow_before, shadow_after))
                shadow_before = shadow_after
        if traced is None:
            self.writes.add("*")             # what it wrote is unknown: later data checks are not probed
        else:
            self._probe(rev, traced)
        return after, shadow_before, rows_after

    def _apply_failed(self, rev: Revision, exc: MigrationError) -> None:
        text = str(exc)
        if "statement timeout" in text:
            text += f" (the gate's statement timeout is {self.cfg.statement_timeout}: [migrations] statement_timeout)"
        failed = self._failing_statement(rev)
        if failed is not None:      # the offline SQL names the statement that fails
            text = failed.describe() + ("" if failed.committed else f"; alembic: {text}")
        self.report.extend([Finding(rule="apply-failed", kind="apply", severity="error", revision=rev.id,
                                    statement=failed.statement if failed else None,
                                    message=f"upgrade to {rev.id} failed on a fresh clone of the baseline: {text}")])

    def _compare(self, rev: Revision, online: Mapping[tuple[str, str], tuple[Any, Any]],
                 offline: Mapping[tuple[str, str], tuple[Any, Any]]) -> None:
        differs = _divergence(online, offline)
        if differs:
            self.report.extend([Finding(
                rule="online-offline-differ", kind="apply", severity="error", revision=rev.id,
                message=f"revision {rev.id} behaves differently online than offline: "
                + "; ".join(differs[:5]) + (f"; and {len(differs) - 5} more" if len(differs) > 5 else "")
                + ". The gate judged its online run; review what it does")])

    def _probe(self, rev: Revision, traced: trace.Trace) -> None:
        """Run the trace's data checks on the other live workspaces' databases."""
        self.writes = traced.writes
        if self.targets is None and any(st.checks for st in traced.statements):
            self.targets = live_databases(self.ctx, self.rec, self.report)
        probes, probe_notes = trace.probe(self.targets or {}, traced)
        self.report.findings = trace.annotate(self.report.findings, rev.id, traced, probes)
        self.notes.extend(probe_notes)

    def _roundtrip(self, conn: ConnInfo, new: list[Revision]) -> None:
        first = new[0]
        target = first.down_revisions[0] if first.down_revisions else "base"
        try:
            self.clock.left("the downgrade round trip")
            self.ctx.tool.downgrade(self.tree, conn, target, env=self.env, workspace=self.rec.name)
            self._upgrade_on(conn, new[-1].id, "the gate's fresh clone")
        except MigrationError as exc:
            self.report.extend([Finding(rule="roundtrip-failed", kind="apply", severity="error", revision=new[-1].id,
                                        message=f"downgrade to {target} and upgrade again failed: {exc}")])

    def _upgrade_on(self, conn: ConnInfo, rev: str, what: str) -> None:
        doing = f"applying {rev} to {what}"
        try:
            self.ctx.tool.upgrade(self.tree, conn, rev, env=self.env, workspace=self.rec.name, what=what,
                                  timeout=self.clock.left(doing))
        except SandboxError:
            if self.clock.expired():
                raise GateTimeout(doing) from None
            raise

    def _failing_statement(self, rev: Revision) -> Any:
        """After the online run failed: the offline SQL's statement that fails on the second clone, if
        it fails there too (evidence for the ``apply-failed`` finding), else None."""
        sql = self.offline.get(rev.id)
        if self.shadow is None or sql is None or rev.id not in sql:
            return None
        try:
            traced = trace.trace(self.shadow.info, sql, schemas=self.shadow.schemas, rename=self.shadow.rename,
                                 prior_writes=self.writes,
                                 deadline=time.monotonic() + self.clock.left(f"tracing the offline SQL of {rev.id}"))
        except MigrationError:
            return None
        return traced.failure

    def _trace_offline(self, rev: Revision) -> tuple[Any, Any]:
        """Trace ``rev``'s offline SQL on the second clone; returns (trace or None, its catalog after,
        or None when the clone could not be brought to ``rev``). A revision without usable offline SQL
        is applied there by alembic instead, so that the next one is traced from the right state."""
        shadow = self.shadow
        assert shadow is not None
        sql = self.offline.get(rev.id)
        traced: trace.Trace | None = None
        if sql is not None and rev.id in sql:    # the SQL records the revision in the version table
            doing = f"tracing the offline SQL of {rev.id}"
            try:
                traced = trace.trace(shadow.info, sql, schemas=shadow.schemas, rename=shadow.rename,
                                     prior_writes=self.writes, deadline=time.monotonic() + self.clock.left(doing))
            except MigrationError as exc:
                if self.clock.expired():
                    raise GateTimeout(doing) from None
                self.notes.append(f"{rev.id}: its offline SQL could not be traced ({exc}): no evidence")
                return None, None
            if self.clock.expired():
                raise GateTimeout(doing)
            failed = traced.failure
            if failed is not None:
                self.notes.append(f"{rev.id}: its offline SQL failed on the clone ({failed.describe()}), but alembic "
                                  "applied it online: the revision behaves differently offline, so it has no evidence")
                if failed.committed:
                    return None, None
                traced = None
            else:
                try:
                    self.ctx.tool.verify(shadow.info, [rev.id], what="the gate's offline SQL clone")
                except MigrationError as exc:
                    self.notes.append(f"{rev.id}: its offline SQL did not record the revision ({exc}): no evidence")
                    return None, None
        elif sql is not None:
            self.notes.append(f"{rev.id}: its offline SQL does not record the revision in the version table: "
                              "no evidence")
        if traced is None:
            try:
                self._upgrade_on(shadow.info, rev.id, "the gate's offline SQL clone")
            except MigrationError:
                return None, None
        return traced, shadow.snapshot()


def live_databases(ctx: GateContext, rec: WorkspaceRecord, report: Report) -> dict[str, Any]:
    """The databases of the other live workspaces, for the replay's data checks."""
    out: dict[str, Any] = {}
    for other in ctx.registry.all():
        if other.name == rec.name or other.state not in ("ready", "stopped") or not other.strategy:
            continue
        try:
            out[other.name] = ctx.db.info(other.name, other.data.get("network"))
        except SandboxError as exc:
            report.note(f"workspace {other.name}'s database is unknown ({exc}): its data was not checked")
    return out


def rows_lost(before: Mapping[str, int | str], after: Mapping[str, int | str], revision: str) -> list[Finding]:
    """A table that held rows before the revision and holds fewer after (or hides them)."""
    out: list[Finding] = []
    for table, was in sorted(before.items()):
        now = after.get(table)
        if not isinstance(was, int) or was == 0 or now is None:
            continue          # uncounted, empty, or gone (the catalog diff reports a dropped table)
        if isinstance(now, str):
            out.append(Finding(rule="rows-lost", kind="destructive", severity="error", revision=revision,
                               object=table, message=f"revision {revision}: the {was} rows of {table} can no "
                               f"longer be counted after it ({now}); it hid or removed data other "
                               "workspaces' code relies on"))
        elif now < was:
            out.append(Finding(rule="rows-lost", kind="destructive", severity="error", revision=revision,
                               object=table, message=f"revision {revision} deleted rows of {table} on the "
                               f"baseline's data: {was} → {now}; data other workspaces' code relies on is gone"))
    return out


def _delta(before: Any, after: Any) -> dict[tuple[str, str], tuple[Any, Any]]:
    """What changed between two catalog snapshots: (part, name) → (before, after)."""
    out: dict[tuple[str, str], tuple[Any, Any]] = {}
    for part in _WHAT:
        b, a = getattr(before, part), getattr(after, part)
        for name in set(b) | set(a):
            if b.get(name) != a.get(name):
                out[(part, name)] = (b.get(name), a.get(name))
    return out


def _divergence(online: Mapping[tuple[str, str], tuple[Any, Any]],
                offline: Mapping[tuple[str, str], tuple[Any, Any]]) -> list[str]:
    """What the online run changed that the offline SQL did not, and the other way round."""
    def verb(change: tuple[Any, Any] | None) -> str:
        if change is None:
            return "leaves it alone"
        return "creates it" if change[0] is None else "drops it" if change[1] is None else "changes it"

    out = []
    for key in sorted(set(online) | set(offline)):
        on, off = online.get(key), offline.get(key)
        if on == off or (on is not None and off is not None and on[1] == off[1]):
            continue
        out.append(f"{_WHAT[key[0]]} {key[1]}: online it {verb(on)}, offline "
                   + (f"it {verb(off)}" if verb(off) != verb(on) else "differently"))
    return out
