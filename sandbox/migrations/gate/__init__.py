"""The migration gate: the checks that stand between a workspace's branch and main.

The gate judges one commit: the workspace's branch, collected into main's repository and resolved
once to a sha, whose tree is exported from main's object store into a folder sandbox owns
(:meth:`~sandbox.migrations.trees.CommittedTrees.judging`); every read the gate makes is of that
folder, never of the workspace's checkout, and ``merge`` merges exactly that sha. It proves, in
order:

1. ordering (:mod:`.ordering`): main has one head, the new revisions form one linear chain whose
   root revises main's head;
2. additive, static (:mod:`.static`): the offline SQL of each new revision, parsed by a real
   PostgreSQL parser;
3. additive, dynamic (:mod:`.replay`): the revisions applied one by one to a fresh clone of the
   baseline, with the catalog diffed around each, and the offline SQL traced for evidence;

then :mod:`.policy` says which findings block and whom they affect.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import SandboxError, WorkspaceError
from ...registry import WorkspaceRecord
from ...git import Unsaved, UnsavedKind
from ..checkout import checkout_head, subject, uncommitted, unsaved_work
from ..context import GateContext
from ..findings import Report
from .clock import GateClock
from .ordering import ordering
from .policy import apply_policy, ignored_paths, trusted_changes
from .replay import replay, run_tests
from .static import lint_report, static

__all__ = ["check", "checkout_head", "lint_report", "run_gate", "unsaved_work"]


def run_gate(ctx: GateContext, name: str) -> Report:
    """``migrate check NAME``: the gate's checks on the branch's commit, without merging."""
    return check(ctx, name)


def check(ctx: GateContext, name: str, *, dry_run_tests: bool = False, allow: str | None = None) -> Report:
    """The gate's checks, without merging: on the branch's commit, resolved once (``judged``).
    ``dry_run_tests``: also run ``[migrations] test`` (merge does); ``allow``: ``--allow-destructive``."""
    rec = ctx.ws.record(name)
    report = Report(workspace=name)
    state = _checkout_state(ctx, rec, report)       # collects the workspace into main first
    sha = ctx.trees.branch_sha(rec, fresh=True)
    if sha is None:
        raise WorkspaceError(f"workspace {name!r} has no branch {rec.branch!r} in main's repository",
                             hint="commit in the workspace first")
    report.judged, report.branch = sha, rec.branch
    _note_checkout(ctx, rec, sha, state, report)
    with ctx.trees.judging(rec, sha):
        _gate(ctx, rec, sha, report, dry_run_tests=dry_run_tests, allow=allow)
    return report


def _gate(ctx: GateContext, rec: WorkspaceRecord, sha: str, report: Report, *, dry_run_tests: bool,
          allow: str | None) -> None:
    """Every check, on the exported tree of ``sha`` (``ctx.trees.tree(rec)``)."""
    trusted = trusted_changes(ctx, rec, sha)
    report.trusted_changes = trusted
    if trusted:
        report.note(f"this branch changes files sandbox trusts once merged (they run on the host or configure "
                    f"what does): {', '.join(trusted[:8])}{' …' if len(trusted) > 8 else ''}; review them")
    planted = ignored_paths(ctx, sha)
    if not ctx.enabled():
        report.extend(planted)
        report.note(f"no {ctx.config.migrations.config} on main: no migrations to check")
        return
    main_revs, main_heads = ctx.trees.main()
    report.base_head = main_heads[0] if len(main_heads) == 1 else None
    new = ctx.trees.new_revisions(rec, main_revs)
    report.revisions = [r.id for r in new]
    report.extend(ordering(ctx, rec, main_revs, main_heads, new))
    ordered = report.ok          # only ordering findings so far: replaying needs the right parent
    report.extend(planted)
    clock = GateClock(ctx.config.migrations.gate_timeout)
    if new:
        offline = static(ctx, clock, rec, new, report)
        if ordered:   # the replay's evidence matters most when the static check found something
            replay(ctx, clock, rec, new, report, run_tests=dry_run_tests, offline=offline)
        else:
            report.note("dynamic replay skipped: fix the ordering first")
    elif dry_run_tests and ctx.config.migrations.test:
        with ctx.db.scratch(f"gate-{rec.name}") as conn:
            run_tests(ctx, rec, conn, report)
    allowed = apply_policy(ctx, rec, report, allow)
    if allowed:
        report.allowed = [f.rule + (f" {f.object}" if f.object else "") for f in allowed]


def _checkout_state(ctx: GateContext, rec: WorkspaceRecord, report: Report) -> list[Unsaved]:
    """What the workspace's checkout holds beyond its branch (uncommitted work, stashes, other
    branches, a detached HEAD); collects the workspace. Only reported: it never changes what is judged."""
    ctx.ws.collect(rec)            # an unreadable workspace repository fails the check here
    try:
        return unsaved_work(ctx, rec)
    except SandboxError as exc:
        report.note(f"cannot tell what the checkout holds beyond its commits ({exc}); "
                    "the branch was judged as collected")
        return []


def _note_checkout(ctx: GateContext, rec: WorkspaceRecord, sha: str, state: list[Unsaved], report: Report) -> None:
    report.note()
    judged = f"the gate judged commit {sha[:12]} of branch {rec.branch!r}"
    dirty = uncommitted(state)
    if dirty:
        shown = ", ".join(subject(u) for u in dirty[:5]) + (" …" if len(dirty) > 5 else "")
        report.note(f"the checkout has {len(dirty)} uncommitted change(s) ({shown}): not checked; {judged}")
    head = checkout_head(ctx, rec)
    if head and head != sha:
        report.note(f"the checkout has {head[:12]} out, not the branch's tip (a detached HEAD or another "
                    f"branch): not checked; {judged}, and merge refuses until the checkout is on it")
    for u in state:
        if u.kind is UnsavedKind.STASH:
            report.note(f"the checkout has stash entries: not checked; {judged}")
        elif u.kind is UnsavedKind.OTHER_BRANCH:
            report.note(f"branch {subject(u)!r} in the checkout has commits that are not on {rec.branch!r}: "
                        f"not checked; {judged}")
