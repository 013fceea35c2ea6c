"""The merge queue: ``merge NAME`` runs the gate under the merge lock, merges exactly the commit it
judged into main, records the merge and brings the baseline forward; and finishing what a killed
merge, rebase or sync left (:func:`finish`)."""

from __future__ import annotations

from typing import Any

from ..errors import SandboxError, WorkspaceError
from ..registry import IntentRecord, WorkspaceRecord
from ..git import UnsavedKind
from . import gate, sync
from .checkout import checkout_head, subject
from .context import GateContext
from .findings import Finding, Report
from .status import workspace_summary


def merge(ctx: GateContext, name: str, *, dry_run: bool = False, allow_destructive: str | None = None) -> Report:
    """The gate, then the merge into main, then the baseline brought forward. Merges are serialised."""
    rec = ctx.ws.record(name)
    main = ctx.git.main_branch()
    # Bounded by SANDBOX_REGISTRY_TIMEOUT: another merge can hold this lock for as long as its gate
    # runs. Exit 1 (LockBusy), not 3: nothing is unavailable, another sandbox command is working.
    with ctx.registry.lock("merge", timeout=ctx.registry.timeout), ctx.ws.operation("merge", name) as op:
        sync.require_clean(ctx, rec, "merging")
        _require_clean_main(ctx)
        if ctx.enabled() and ctx.config.migrations.auto_rebase:
            st = workspace_summary(ctx, rec)
            if st.new and st.behind:
                sync.rebase(ctx, name)
        report = gate.check(ctx, name, dry_run_tests=True, allow=allow_destructive)
        branch_sha = str(report.judged)        # the commit the gate judged, and the one merged
        main_sha = ctx.git.rev(main)
        if ctx.config.migrations.merge == "ff" and not ctx.is_ancestor(main_sha, branch_sha):
            report.extend([Finding(rule="branch-behind-main", kind="ordering", severity="error",
                                   message=f"branch {rec.branch!r} does not contain main's latest commits; "
                                   f"run `sandbox sync {name}` (merge = \"ff\")")])
        if not report.ok or dry_run:
            report.dry_run = dry_run
            return report
        _still_judged(ctx, rec, branch_sha)
        allowed = report.allowed or []
        op.step("checked", dirty=False, main_sha=main_sha, branch_sha=branch_sha, revisions=report.revisions,
                base_head=report.base_head, allow=allow_destructive, allowed=allowed)
        commit = _git_merge(ctx, rec.branch, main_sha, branch_sha)
        op.step("main-moved", commit=commit)
        _record_merge(ctx, name, commit, report.base_head, report.revisions, allow_destructive, allowed)
        op.step("recorded")
        try:
            forward_baseline(ctx, report.revisions)
            op.step("baseline")
        except SandboxError as exc:
            # main moved: the baseline must follow. The intent stays, so the next command retries.
            op.leave(f"the baseline could not be brought forward: {exc}")
            report.baseline_error = (f"merged, but the baseline could not be brought forward: {exc}; the next "
                                     "sandbox command retries (or run `sandbox db baseline --refresh`)")
        report.merged = True
        report.commit = commit
        return report


def _require_clean_main(ctx: GateContext) -> None:
    """Refuse while main's checkout has changes a merge would touch (untracked files and stashes do not)."""
    changed = [u for u in ctx.git.find_unsaved(ctx.root) if u.kind is UnsavedKind.CHANGES]
    if changed:
        raise WorkspaceError("the main checkout has uncommitted changes; merging would touch them",
                             hint=", ".join(subject(u) for u in changed[:5]))


def _still_judged(ctx: GateContext, rec: WorkspaceRecord, sha: str) -> None:
    """Refuse to merge unless the branch is still at the judged commit and the checkout has it out."""
    ctx.ws.collect(rec)
    now = ctx.trees.branch_sha(rec, fresh=True)
    if now != sha:
        raise WorkspaceError(f"branch {rec.branch!r} moved from {sha[:12]} (the commit the gate judged) to "
                             f"{(now or 'nothing')[:12]} during the check; nothing was merged",
                             hint=f"run `sandbox merge {rec.name}` again to judge the new commit")
    head = checkout_head(ctx, rec)
    if head and head != sha:
        raise WorkspaceError(f"workspace {rec.name!r} has {head[:12]} checked out (a detached HEAD or another "
                             f"branch), not branch {rec.branch!r} at {sha[:12]}, the commit the gate judged; "
                             "nothing was merged",
                             hint=f"check out {rec.branch} in the workspace (`sandbox exec {rec.name} -- git "
                             f"switch {rec.branch}`), then merge again")


def _record_merge(ctx: GateContext, name: str, commit: str, base_head: str | None, revisions: list[str],
                  allow: str | None, allowed: list[str]) -> None:
    if allow:
        ctx.registry.record_allowance(name, revisions, allowed, allow, ctx.who())
    ctx.registry.set_meta("baseline_commit", commit)
    ctx.registry.record_merge(name, base_head, revisions, commit)


def forward_baseline(ctx: GateContext, revisions: list[str]) -> None:
    """After main moved: apply main's new revisions to the baseline (a copy, swapped in) and record its head."""
    if not (ctx.enabled() and revisions):
        return
    ctx.progress("bringing the baseline forward")
    with ctx.registry.lock("baseline"):
        def forward(conn: Any) -> None:
            ctx.tool.upgrade(ctx.root, conn, "heads", env=ctx.ws.base_env(None), what="the baseline database")
        ctx.db.update_baseline(forward)
        heads = ctx.tool.heads(ctx.root)
        ctx.registry.set_meta("baseline_head", heads[0] if heads else "")


def _git_merge(ctx: GateContext, branch: str, main_sha: str, sha: str) -> str:
    """Merge ``sha`` (the judged commit of ``branch``, not whatever the branch names now) into the
    main checkout; on any failure main is put back exactly as it was."""
    mode = ctx.config.migrations.merge
    args = ["merge", "--ff-only", sha] if mode == "ff" else \
        ["merge", "--no-ff", "--no-edit", "-m", f"Merge workspace {branch} at {sha[:12]} (sandbox)", sha]
    res = ctx.run_git(*args, check=False, long=True)
    ctx.trees.forget_main()
    if res.returncode != 0:
        _abort_merge(ctx, main_sha)
        raise WorkspaceError(f"git merge of {branch!r} into main failed; main is unchanged: "
                             f"{(res.stderr or res.stdout).strip()[:300]}")
    return ctx.git.rev("HEAD")


def _abort_merge(ctx: GateContext, main_sha: str) -> None:
    ctx.run_git("merge", "--abort", check=False)
    ctx.run_git("reset", "-q", "--keep", main_sha, check=False)


# -- finishing what a killed process left (see sandbox.intents) --------------------------------------
def finish(ctx: GateContext, it: IntentRecord) -> tuple[str, str]:
    """Roll an interrupted rebase, sync or merge forward or back; called under its lock."""
    if it.op == "merge":
        return _finish_merge(ctx, it)
    return sync.finish(ctx, it)


def _finish_merge(ctx: GateContext, it: IntentRecord) -> tuple[str, str]:
    """Main moved: the merge is recorded and the baseline brought to main's head. It did not: a half-done
    ``git merge`` in the main checkout is aborted."""
    main_sha, branch_sha = it.data.get("main_sha"), it.data.get("branch_sha")
    head = ctx.git.rev("HEAD")
    moved = it.step in ("main-moved", "recorded", "baseline") or bool(
        main_sha and branch_sha and head != main_sha and ctx.is_ancestor(branch_sha, head))
    if not moved:
        if main_sha and ctx.run_git("rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).returncode == 0:
            _abort_merge(ctx, main_sha)
            return "roll-back", "a half-done git merge was aborted: main is unchanged"
        return "roll-back", "main was not changed"
    commit = str(it.data.get("commit") or head)
    revisions = list(it.data.get("revisions") or [])
    if it.step in ("checked", "main-moved"):
        _record_merge(ctx, str(it.workspace), commit, it.data.get("base_head"), revisions,
                      it.data.get("allow"), list(it.data.get("allowed") or []))
    if it.step != "baseline":
        forward_baseline(ctx, revisions)
    return "roll-forward", f"main is at {commit[:12]}; the baseline is at main's head"
