"""Recovery: roll forward or back what a killed (or failed) operation left unfinished.

The journal (:mod:`sandbox.intents`) says which operation stopped at which step; the table in
its docstring says what happens next. Workspace operations are finished here (an interrupted
``rm`` goes through the one :func:`~.remove.teardown`); the gate's own (merge, rebase, sync) are
finished by the gate, which the facade passes in as ``finish_coordinated``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..core import Project
from ..errors import SandboxError, UsageError, WorkspaceError
from ..gc import settle_creating
from ..intents import PROJECT_OPS, STEPS, Recovery, abandoned, lock_of
from ..registry import IntentRecord, WorkspaceRecord
from .checkpoints import prune_auto
from .remove import deinit, teardown

Finisher = Callable[[IntentRecord], tuple[str, str]]


def recover(p: Project, *, workspace: str | None = None, everything: bool = False,
            dry_run: bool = False, finish_coordinated: Finisher | None = None) -> list[Recovery]:
    """Roll forward or back the operations that were left unfinished.

    ``everything`` (gc): all of them. Otherwise those on ``workspace`` and the project-wide
    ones (merge, deinit). Each is handled under its operation's lock, taken without waiting:
    a lock held means someone is at work on it, and it is left alone.
    """
    out: list[Recovery] = []
    for it in p.registry.intents():
        if not abandoned(it):
            continue
        if not (everything or it.op in PROJECT_OPS or (workspace is not None and it.workspace == workspace)):
            continue
        if dry_run:
            out.append(Recovery(it, "roll-forward" if _forward(it) else "roll-back",
                                "would be finished" if _forward(it) else "would be undone"))
            continue
        try:
            with p.registry.lock(lock_of(it), blocking=False):
                fresh = p.registry.intent(it.id)
                if fresh is None or not abandoned(fresh):
                    continue
                p.registry.update_intent(fresh.id, status="recovering", claim=True)
                try:
                    action, detail = _recover_one(p, fresh, finish_coordinated)
                except SandboxError as exc:
                    p.registry.update_intent(fresh.id, status="failed", cause=f"recovery failed: {exc}"[:500])
                    out.append(Recovery(fresh, "failed", str(exc)))
                    p.warn(f"could not finish an {Recovery(fresh, '', str(exc)).describe()}")
                    continue
                if fresh.op != "deinit":                 # deinit took the registry with it
                    p.registry.end_intent(fresh.id)
                rec = Recovery(fresh, action, detail, done=True)
                out.append(rec)
                p.progress(rec.describe())
                if fresh.op == "deinit":
                    break
        except WorkspaceError:
            out.append(Recovery(it, "busy", "another sandbox process holds its lock"))
    return out


def _forward(it: IntentRecord) -> bool:
    """Whether recovery of ``it`` finishes it (rather than undoing it), judged by its step."""
    steps = STEPS[it.op]
    first_dirty = {"up": "database", "rm": "removing", "db-reset": "checkpointed", "db-restore": "checkpointed",
                   "db-checkpoint": "taken", "migrate-rebase": "merged-main", "sync": "merged-main",
                   "merge": "main-moved", "deinit": "begin"}[it.op]
    return steps.index(it.step) >= steps.index(first_dirty) if it.step in steps else False


def _rec(p: Project, it: IntentRecord) -> WorkspaceRecord | None:
    return p.registry.get(it.workspace) if it.workspace else None


def _start_again(p: Project, name: str) -> None:
    """A ready workspace's database runs again (an interrupted step may have stopped it)."""
    rec = p.registry.get(name)
    if rec is not None and rec.state == "ready" and rec.strategy and p.db.exists(name):
        p.db.start(name, rec.data.get("network"))


def _recover_up(p: Project, it: IntentRecord) -> tuple[str, str]:
    rec = _rec(p, it)
    if rec is None:
        return "roll-back", "nothing had been made"
    if rec.state != "creating":
        return "roll-forward", f"nothing left to do (the workspace is {rec.state})"
    if it.step in ("setup", "ready"):
        p.registry.set_state(rec.name, "ready")
        return "roll-forward", "created and set up: marked ready"
    if it.step == "database" or it.data.get("existed"):
        cause = f"interrupted while creating (at step {it.step}): `sandbox up {rec.name}` finishes it"
        p.registry.set_state(rec.name, "broken", cause)
        return "roll-forward", "kept as broken: `sandbox up` finishes it"
    action, detail, fn = settle_creating(p, rec)
    fn()
    return ("roll-back" if action == "remove" else "roll-forward"), detail


def _recover_rm(p: Project, it: IntentRecord) -> tuple[str, str]:
    rec = _rec(p, it)
    if rec is None:
        return "roll-forward", "already removed"
    if rec.state != "removing":
        return "roll-back", "nothing had been removed"
    if not it.data.get("force"):
        try:
            reasons = p.unsaved(rec) if Path(rec.path).exists() else []
        except SandboxError as exc:
            reasons = [str(exc)]
        if reasons:
            cause = (f"interrupted while removing; the worktree now holds work ({'; '.join(reasons)[:200]}): "
                     f"`sandbox rm {rec.name}` again, or --force")
            p.registry.set_state(rec.name, "broken", cause)
            return "roll-back", "kept as broken: its worktree holds work"
    teardown(p, rec, delete_branch=bool(it.data.get("delete_branch")), force=bool(it.data.get("force")))
    return "roll-forward", "removal finished"


def _recover_reset(p: Project, it: IntentRecord) -> tuple[str, str]:
    rec = _rec(p, it)
    if rec is None:
        return "roll-back", "the workspace is gone"
    if it.step == "begin":
        _start_again(p, rec.name)
        return "roll-back", "the database was not changed"
    if it.step == "checkpointed":
        p.db.reset(rec.name, rec.data.get("network"))
    prune_auto(p, rec.name)
    kept = it.data.get("checkpoint")
    return "roll-forward", "reset to the baseline" + (f" (the data it replaced is in checkpoint {kept})" if kept else "")


def _recover_restore(p: Project, it: IntentRecord) -> tuple[str, str]:
    rec = _rec(p, it)
    label = str(it.data.get("label"))
    if rec is None:
        return "roll-back", "the workspace is gone"
    if it.step == "begin":
        _start_again(p, rec.name)
        return "roll-back", "the database was not changed"
    if it.step == "checkpointed":
        p.db.restore(rec.name, label, rec.data.get("network"))
    prune_auto(p, rec.name)
    kept = it.data.get("checkpoint")
    return "roll-forward", f"restored to {label}" + (f" (the data it replaced is in checkpoint {kept})" if kept else "")


def _recover_checkpoint(p: Project, it: IntentRecord) -> tuple[str, str]:
    rec = _rec(p, it)
    if rec is None:
        return "roll-back", "the workspace is gone"
    label = it.data.get("label")
    if it.step == "taken":
        return "roll-forward", f"checkpoint {label} was taken"
    _start_again(p, rec.name)
    return "roll-back", f"checkpoint {label} was not taken (`sandbox gc` removes a half-made copy)"


def _recover_deinit(p: Project, it: IntentRecord) -> tuple[str, str]:
    deinit(p, force=bool(it.data.get("force")), resume=it.step, keep_images=bool(it.data.get("keep_images")))
    return "roll-forward", "deinit finished: the project is no longer initialised"


_RECOVER: dict[str, Callable[[Project, IntentRecord], tuple[str, str]]] = {
    "up": _recover_up, "rm": _recover_rm, "db-reset": _recover_reset, "db-restore": _recover_restore,
    "db-checkpoint": _recover_checkpoint, "deinit": _recover_deinit,
}
COORDINATED = ("migrate-rebase", "sync", "merge")     # finished by the gate (its ``finish``)


def _recover_one(p: Project, it: IntentRecord, finish_coordinated: Finisher | None) -> tuple[str, str]:
    if it.op in COORDINATED:
        if finish_coordinated is None:
            raise WorkspaceError(f"an interrupted `{it.op}` needs the migration gate to finish it")
        return finish_coordinated(it)
    return _RECOVER[it.op](p, it)


def recover_once(p: Project, name: str | None, everything: bool, dry_run: bool,
                 finish_coordinated: Finisher | None) -> list[Recovery]:
    """:meth:`Project.recover`: once per process and name; a finished deinit ends the command."""
    if not dry_run:
        p.mark_recovered(name, everything=everything)
    results = recover(p, workspace=name, everything=everything, dry_run=dry_run,
                      finish_coordinated=finish_coordinated)
    if any(r.intent.op == "deinit" and r.done for r in results) and not everything:
        p.forget_registry()
        raise UsageError("an interrupted `sandbox deinit` was finished: the project is no longer initialised",
                         hint="run `sandbox init`")
    return results
