"""``migrate rebase`` and ``sync``: bring main into a workspace's branch, move the root of its new
revisions onto main's head, and rebuild or upgrade its database to match; and finishing what a
killed rebase or sync left (:func:`finish`).

Commits are made in main's repository (``git merge-tree``, plumbing), never in the workspace's;
the workspace then fast-forwards to them (inside its container for a Docker workspace).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import MigrationError, SandboxError, UsageError, WorkspaceError
from ..intents import STEPS, Operation
from ..host import now
from ..registry import IntentRecord, WorkspaceRecord
from .alembic import rewrite_down_revision
from .checkout import subject, uncommitted, unsaved_work
from .context import GateContext
from .trees import roots


@dataclass(frozen=True)
class RebaseResult:
    """``migrate rebase NAME``."""

    name: str
    rebased: bool
    message: str
    main_merged: bool | None = None       # None: already on main's head, nothing was done
    checkpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "rebased": self.rebased}
        if self.main_merged is not None:
            d.update(main_merged=self.main_merged, checkpoint=self.checkpoint)
        d["message"] = self.message
        return d


@dataclass(frozen=True)
class SyncResult:
    """``sync NAME``."""

    name: str
    merged: bool
    rebased: bool
    checkpoint: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "merged": self.merged, "rebased": self.rebased, "checkpoint": self.checkpoint,
                "message": self.message}


def rebase(ctx: GateContext, name: str) -> RebaseResult:
    """Move the workspace's new revisions onto main's current head and rebuild its database."""
    ctx.ws.record(name)                  # an unknown name is exit 2 before anything is locked
    if not ctx.enabled():
        raise UsageError(f"no {ctx.config.migrations.config} on main: nothing to rebase")
    with ctx.ws.locked(name) as rec, ctx.ws.operation("migrate-rebase", name) as op:
        merged = merge_main_into(ctx, rec)
        op.step("merged-main", dirty=merged, merged=merged)
        old = rewrite_root(ctx, rec)
        op.step("rewritten", dirty=bool(old), old=old)
        if old is None and not merged:
            return RebaseResult(name, False, f"{name}: already on main's head")
        ctx.ws.recopy(rec)            # generated, git-ignored files the database step may import
        with _database_step(op, f"{name}: rebased onto main's head (its files are committed), but its database "
                            "could not be rebuilt", name):
            cp = rebuild_db(ctx, rec, save_point("pre-rebase"), op)
    _, heads = ctx.trees.main()
    msg = f"{name}: " + (f"root moved from {old} onto {heads[0]}" if old else "main merged in")
    msg += "; database reset to the baseline and upgraded" + (f" (previous data in checkpoint {cp})" if cp else "")
    return RebaseResult(name, bool(old), msg, main_merged=merged, checkpoint=cp)


def sync(ctx: GateContext, name: str) -> SyncResult:
    """Bring main's new commits and migrations into the workspace and its database."""
    ctx.ws.record(name)
    with ctx.ws.locked(name) as rec, ctx.ws.operation("sync", name) as op:
        merged = merge_main_into(ctx, rec)
        op.step("merged-main", dirty=merged, merged=merged)
        old = rewrite_root(ctx, rec) if ctx.enabled() else None
        op.step("rewritten", dirty=bool(old), old=old)
        cp = None
        if merged or old:
            ctx.ws.recopy(rec)
            with _database_step(op, f"{name}: main merged in (its files are committed), but its database could "
                                "not be brought to the new head", name):
                if old:
                    cp = rebuild_db(ctx, rec, save_point("pre-sync"), op)
                elif rec.strategy:
                    # nothing of ours to move: bring the database forward in place, keeping its data
                    upgrade_workspace(ctx, rec, ctx.db.info(name, rec.data.get("network")))
                    op.step("upgraded")
    parts = [f"{name}: " + ("main merged in" if merged else "already up to date with main")]
    if old:
        parts.append(f"migration root moved from {old} onto main's head")
        parts.append("database rebuilt" + (f" (previous data in checkpoint {cp})" if cp else ""))
    elif merged:
        parts.append("database upgraded in place")
    return SyncResult(name, merged, bool(old), cp, "; ".join(parts))


@contextlib.contextmanager
def _database_step(op: Operation, what: str, name: str) -> Iterator[None]:
    """The database step of rebase/sync. Its files are rebased (or synced) and committed by then:
    when the step fails, the operation is finished (the workspace stays usable, not ``broken``) and
    the error says the whole reason and that ``sandbox db reset NAME`` redoes the step."""
    try:
        yield
    except MigrationError as exc:
        op.done()
        raise MigrationError(f"{what}: {exc.message}",
                             hint=(exc.hint + "; then " if exc.hint else "fix the cause, then ")
                             + f"`sandbox db reset {name}`") from exc


def merge_main_into(ctx: GateContext, rec: WorkspaceRecord) -> bool:
    """Merge main into the workspace's branch; True if anything came in.

    The merge commit is made in main's repository without a worktree (``git merge-tree``),
    then the workspace fast-forwards to it (inside its container for a Docker workspace):
    a conflict changes nothing anywhere.
    """
    main = ctx.git.main_branch()
    ctx.ws.collect(rec)
    if not ctx.git.behind(rec.branch):
        return False
    require_clean(ctx, rec, "syncing")
    commit, conflicts = ctx.repos.merge_commit(rec.branch, main, f"Merge {main} into {rec.branch} (sandbox sync)")
    if commit is None:
        raise WorkspaceError(f"merging {main} into {rec.branch!r} conflicts in "
                             f"{', '.join(conflicts) or 'some files'}; nothing was changed",
                             hint=f"resolve it in the workspace: `sandbox exec {rec.name} -- git merge {main}`")
    ctx.ws.advance(rec, commit)
    return True


def require_clean(ctx: GateContext, rec: WorkspaceRecord, doing: str) -> None:
    """Refuse while the checkout has uncommitted changes or untracked files (by their kind; a
    stash, another branch or a detached HEAD are not uncommitted work in the checkout)."""
    dirty = uncommitted(unsaved_work(ctx, rec))
    if dirty:
        raise WorkspaceError(f"workspace {rec.name!r} has uncommitted changes; commit them before {doing}",
                             hint=", ".join(subject(u) for u in dirty[:5]))


def rewrite_root(ctx: GateContext, rec: WorkspaceRecord) -> str | None:
    """Point the root of the new revisions at main's head and commit; returns the old parent."""
    main_revs, main_heads = ctx.trees.main()
    if len(main_heads) != 1:
        raise MigrationError(f"main has {len(main_heads)} heads; merge them on main first")
    head = main_heads[0]
    starts = roots(ctx.trees.new_revisions(rec, main_revs))
    if not starts:
        return None
    if len(starts) > 1:
        raise MigrationError(f"the new revisions of {rec.name!r} start from {len(starts)} roots; "
                             "make them one chain first")
    root = starts[0]
    if root.is_merge:
        raise MigrationError(f"{root.id} is a merge revision; rebase needs a linear chain")
    old = root.down_revisions[0] if root.down_revisions else None
    if old == head:
        return None
    require_clean(ctx, rec, "rebasing")
    tree = ctx.trees.revisions_tree(rec) or ctx.trees.tree(rec)     # where new_revisions read it
    rel = str(root.path.relative_to(tree.resolve()))
    # The committed file, read from main's object store (not the workspace's files), rewritten,
    # committed in main's repository; the workspace then fast-forwards to that commit.
    source = ctx.repos.show(f"refs/heads/{rec.branch}", rel)
    try:
        new_source = rewrite_down_revision(source, head)
    except (SyntaxError, ValueError) as exc:
        raise MigrationError(f"cannot rewrite down_revision in {rel}: {exc}") from exc
    commit = ctx.repos.commit_file(rec.branch, rel, new_source, f"sandbox: rebase migration {root.id} onto {head}")
    ctx.ws.advance(rec, commit)
    return old or "base"


def upgrade_workspace(ctx: GateContext, rec: WorkspaceRecord, info: Any) -> None:
    tree = ctx.trees.tree(rec)
    if ctx.tool.available(tree):
        ctx.tool.upgrade(tree, info, "heads", env=ctx.ws.base_env(rec), workspace=rec.name)


def rebuild_db(ctx: GateContext, rec: WorkspaceRecord, label: str, op: Operation | None = None) -> str | None:
    """Checkpoint, reset to the baseline, upgrade to the workspace's head (verified)."""
    if not rec.strategy:
        return None
    cp = None
    try:
        cp = ctx.db.checkpoint(rec.name, label).label
    except SandboxError:
        cp = None
    if op is not None:
        op.step("checkpointed", checkpoint=cp)
    info = ctx.db.reset(rec.name, rec.data.get("network"))
    if op is not None:
        op.step("reset")
    upgrade_workspace(ctx, rec, info)
    if op is not None:
        op.step("upgraded")
    return cp


def finish(ctx: GateContext, it: IntentRecord) -> tuple[str, str]:
    """Roll an interrupted rebase or sync forward or back; called under its lock.

    The git side is finished first (it is what the workspace's files show), then the database is
    brought to match it: rebuilt from the baseline (a moved root) or upgraded in place.
    """
    rec = ctx.registry.get(it.workspace or "")
    if rec is None:
        return "roll-back", "the workspace is gone"
    steps = STEPS[it.op]
    at = steps.index(it.step) if it.step in steps else 0
    if at == 0:
        return "roll-back", "nothing had changed"
    if it.step == "upgraded":
        return "roll-forward", "nothing left to do"
    if at <= steps.index("rewritten"):
        return _finish_git(ctx, rec, it)
    if it.step == "checkpointed":
        info = ctx.db.reset(rec.name, rec.data.get("network"))
    else:                                                       # "reset": only the upgrade is missing
        info = ctx.db.info(rec.name, rec.data.get("network"))
    upgrade_workspace(ctx, rec, info)
    kept = it.data.get("checkpoint")
    return "roll-forward", "database rebuilt from the baseline and upgraded" + (
        f" (previous data in checkpoint {kept})" if kept else "")


def _finish_git(ctx: GateContext, rec: WorkspaceRecord, it: IntentRecord) -> tuple[str, str]:
    """Killed after main was merged in (or the root rewritten): finish the rewrite, then the database."""
    label = save_point("pre-rebase" if it.op == "migrate-rebase" else "pre-sync")
    merged = bool(it.data.get("merged"))
    old = it.data.get("old") if it.step == "rewritten" else rewrite_root(ctx, rec)
    if old:
        cp = rebuild_db(ctx, rec, label)
        return "roll-forward", ("migration root moved onto main's head; database rebuilt and upgraded"
                                + (f" (previous data in checkpoint {cp})" if cp else ""))
    if not merged:
        return "roll-back", "nothing had changed"
    if it.op == "sync":
        if rec.strategy:
            upgrade_workspace(ctx, rec, ctx.db.info(rec.name, rec.data.get("network")))
        return "roll-forward", "main merged in; database upgraded in place"
    cp = rebuild_db(ctx, rec, label)
    return "roll-forward", "main merged in; database rebuilt and upgraded" + (
        f" (previous data in checkpoint {cp})" if cp else "")


def save_point(prefix: str) -> str:
    """A checkpoint label (a valid workspace-style name) such as ``pre-sync-2026-11-29T041500``."""
    return f"{prefix}-" + now().replace(":", "").replace("+", "")[:17]
