"""Operations that finish or roll back: an intent journal in the registry, and named kill points.

``up``, ``rm``, ``db reset``, ``db restore``, ``db checkpoint``, ``migrate rebase``, ``sync``,
``merge`` and ``deinit`` each change several systems (git, PostgreSQL, Docker, the registry).
Each one records its *intent* (operation, workspace, step, pid) in the registry before it acts,
moves the step on as it goes (:meth:`Operation.step`), and clears the intent when it is done.
A process that dies (SIGKILL, power cut) leaves its intent behind; a step that raised leaves it
``failed`` when something it changed still needs finishing. The next command that touches that
workspace, and ``gc``, finds it (its process is gone) and rolls it forward or back under the
operation's lock:

==================  ===============================================================================
operation           left behind at step → what the next command does
==================  ===============================================================================
up                  before ``worktree``/``database``: rolled back (kept as ``broken`` if it holds
                    work); ``database``: kept ``broken`` (``sandbox up`` finishes it);
                    ``setup``: marked ready
rm                  before ``removing``: nothing was removed; after: the removal is finished
                    (refused, and kept ``broken``, if the worktree gained work meanwhile)
db reset/restore    ``begin``: the database was not touched (started again); ``checkpointed``:
                    reset (restored) again: the replaced data is in the automatic checkpoint
db checkpoint       the half-made copy is gc's; the database is started again
migrate rebase,     the git side is finished first (main merged in, root moved); the database is
sync                then rebuilt from the baseline and upgraded, or upgraded in place
merge               main did not move: a half-done ``git merge`` is aborted; main moved: the
                    baseline is brought to main's head and the merge is recorded
deinit              finished
==================  ===============================================================================

Tests kill the process at named steps: ``SANDBOX_KILL_AT=merge:main-moved`` makes
:func:`kill_point` send SIGKILL to its own process when the operation reaches that step (after
the step is recorded). :data:`KILL_POINTS` lists every name; docs/reliability.md documents them.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .errors import SandboxError, WorkspaceError
from .registry import IntentRecord, Registry, process_alive

if TYPE_CHECKING:
    from .api import Sandbox

KILL_ENV = "SANDBOX_KILL_AT"

# Every operation's steps, in order. ``begin`` is recorded with the intent itself.
STEPS: dict[str, tuple[str, ...]] = {
    "up": ("begin", "registered", "worktree", "database", "setup", "ready", "started"),
    "rm": ("begin", "teardown", "removing", "container", "database", "worktree", "deleted"),
    "db-reset": ("begin", "checkpointed", "reset"),
    "db-restore": ("begin", "checkpointed", "restored"),
    "db-checkpoint": ("begin", "taken"),
    "migrate-rebase": ("begin", "merged-main", "rewritten", "checkpointed", "reset", "upgraded"),
    "sync": ("begin", "merged-main", "rewritten", "checkpointed", "reset", "upgraded"),
    "merge": ("begin", "checked", "main-moved", "recorded", "baseline"),
    "deinit": ("begin", "workspaces", "databases", "runtime", "storage"),
}
# Steps inside a database strategy, passed through by the operations above that replace a database.
BACKEND_STEPS: dict[str, tuple[str, ...]] = {
    "snapshot": ("stopped", "swapped"),      # the cluster stopped; the new volume in place, not yet configured
    "template": ("copied",),                 # the copy made under its temporary name, not yet swapped in
}
KILL_POINTS: tuple[str, ...] = tuple(f"{op}:{step}" for table in (STEPS, BACKEND_STEPS)
                                     for op, steps in table.items() for step in steps)
PROJECT_OPS = ("merge", "deinit")           # serialised by a project-wide lock, not a workspace's


_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process at ``name`` when ``SANDBOX_KILL_AT`` lists it.

    The variable holds comma-separated names; ``name#N`` kills the N-th time the point is reached
    (``template:copied#2``: the second copy of a ``db reset``, after its automatic checkpoint).
    """
    if name not in KILL_POINTS:
        raise ValueError(f"unknown kill point {name!r}")      # a typo in sandbox itself
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    count = _passed[name] = _passed.get(name, 0) + 1
    for item in wanted.split(","):
        point, _, nth = item.strip().partition("#")
        if point == name and (not nth or nth == str(count)):
            os.kill(os.getpid(), signal.SIGKILL)


class Operation:
    """The running operation's handle: :meth:`step` records progress (then passes its kill point)."""

    def __init__(self, registry: Registry, op: str, workspace: str | None, intent_id: int) -> None:
        self.registry = registry
        self.op = op
        self.workspace = workspace
        self.id = intent_id
        self.step_name = "begin"
        self.dirty = False          # something changed that the remaining steps must finish
        self.settled = False        # ended early (done, or left for recovery on purpose)

    def step(self, name: str, *, dirty: bool = True, **data: Any) -> None:
        if name not in STEPS[self.op]:
            raise ValueError(f"operation {self.op!r} has no step {name!r}")
        self.registry.update_intent(self.id, step=name, data=data or None)
        self.step_name = name
        self.dirty = self.dirty or dirty
        kill_point(f"{self.op}:{name}")

    def done(self) -> None:
        """Nothing is left to finish (a failure that already put everything right)."""
        if not self.settled:
            self.registry.end_intent(self.id)
            self.settled = True

    def leave(self, cause: str) -> None:
        """The operation returns, but a step is unfinished: the next command (or gc) retries it."""
        if not self.settled:
            self.registry.update_intent(self.id, status="failed", cause=cause)
            self.settled = True


@contextlib.contextmanager
def operation(registry: Registry, op: str, workspace: str | None, **data: Any) -> Iterator[Operation]:
    """Record the intent to run ``op`` before acting; clear it when done.

    An exception after a step that changed something leaves the intent ``failed`` (the next
    command finishes or undoes it); one before any such step clears it.
    """
    if op not in STEPS:
        raise ValueError(f"unknown operation {op!r}")
    handle = Operation(registry, op, workspace, registry.begin_intent(op, workspace, data))
    kill_point(f"{op}:begin")
    try:
        yield handle
    except BaseException as exc:
        if handle.dirty:
            handle.leave(f"{type(exc).__name__} at step {handle.step_name}: {exc}"[:500])
        else:
            handle.done()
        raise
    handle.done()


# -- recovery ---------------------------------------------------------------------------------------

@dataclass
class Recovery:
    """What was done (or, in a dry run, would be done) about one unfinished operation."""

    intent: IntentRecord
    action: str              # "roll-forward", "roll-back", "failed", "busy"
    detail: str
    done: bool = False

    def describe(self) -> str:
        it = self.intent
        who = f" of {it.workspace!r}" if it.workspace else ""
        return f"interrupted `{it.op}`{who} (at step {it.step}): {self.detail}"


def abandoned(it: IntentRecord) -> bool:
    """Whether nobody works on ``it`` any more: its process is gone, or it failed part-way."""
    return it.status == "failed" or not process_alive(it.pid, it.pid_start)


def lock_of(it: IntentRecord) -> str:
    """The registry lock that serialises ``it``'s operation (held while it ran)."""
    return it.op if it.op in PROJECT_OPS else f"ws-{it.workspace}"


def pending(registry: Registry, workspace: str | None = None) -> list[IntentRecord]:
    """Unfinished operations nobody works on (all, or those on ``workspace``)."""
    return [it for it in registry.intents()
            if abandoned(it) and (workspace is None or it.workspace == workspace)]


def recover(sb: "Sandbox", *, workspace: str | None = None, everything: bool = False,
            dry_run: bool = False) -> list[Recovery]:
    """Roll forward or back the operations that were left unfinished.

    ``everything`` (gc): all of them. Otherwise those on ``workspace`` and the project-wide
    ones (merge, deinit). Each is handled under its operation's lock, taken without waiting:
    a lock held means someone is at work on it, and it is left alone.
    """
    out: list[Recovery] = []
    for it in sb.registry.intents():
        if not abandoned(it):
            continue
        if not (everything or it.op in PROJECT_OPS or (workspace is not None and it.workspace == workspace)):
            continue
        if dry_run:
            out.append(Recovery(it, "roll-forward" if _forward(it) else "roll-back",
                                "would be finished" if _forward(it) else "would be undone"))
            continue
        try:
            with sb.registry.lock(lock_of(it), blocking=False):
                fresh = sb.registry.intent(it.id)
                if fresh is None or not abandoned(fresh):
                    continue
                sb.registry.update_intent(fresh.id, status="recovering", claim=True)
                try:
                    action, detail = _RECOVER[fresh.op](sb, fresh)
                except SandboxError as exc:
                    sb.registry.update_intent(fresh.id, status="failed", cause=f"recovery failed: {exc}"[:500])
                    out.append(Recovery(fresh, "failed", str(exc)))
                    sb.progress(f"warning: could not finish an {Recovery(fresh, '', str(exc)).describe()}")
                    continue
                if fresh.op != "deinit":                 # deinit took the registry with it
                    sb.registry.end_intent(fresh.id)
                rec = Recovery(fresh, action, detail, done=True)
                out.append(rec)
                sb.progress(rec.describe())
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


def _rec(sb: "Sandbox", it: IntentRecord) -> Any:
    return sb.registry.get(it.workspace) if it.workspace else None


def _start_again(sb: "Sandbox", name: str) -> None:
    """A ready workspace's database runs again (an interrupted step may have stopped it)."""
    rec = sb.registry.get(name)
    if rec is not None and rec.state == "ready" and rec.strategy and sb.db.exists(name):
        sb.db.start(name, rec.data.get("network"))


def _recover_up(sb: "Sandbox", it: IntentRecord) -> tuple[str, str]:
    from .gc import settle_creating
    rec = _rec(sb, it)
    if rec is None:
        return "roll-back", "nothing had been made"
    if rec.state != "creating":
        return "roll-forward", f"nothing left to do (the workspace is {rec.state})"
    if it.step in ("setup", "ready"):
        sb.registry.set_state(rec.name, "ready")
        return "roll-forward", "created and set up: marked ready"
    if it.step == "database" or it.data.get("existed"):
        cause = f"interrupted while creating (at step {it.step}): `sandbox up {rec.name}` finishes it"
        sb.registry.set_state(rec.name, "broken", cause)
        return "roll-forward", "kept as broken: `sandbox up` finishes it"
    action, detail, fn = settle_creating(sb, rec)
    fn()
    return ("roll-back" if action == "remove" else "roll-forward"), detail


def _recover_rm(sb: "Sandbox", it: IntentRecord) -> tuple[str, str]:
    rec = _rec(sb, it)
    if rec is None:
        return "roll-forward", "already removed"
    if rec.state != "removing":
        return "roll-back", "nothing had been removed"
    if not it.data.get("force"):
        try:
            reasons = sb.unsaved(rec) if Path(rec.path).exists() else []
        except SandboxError as exc:
            reasons = [str(exc)]
        if reasons:
            cause = (f"interrupted while removing; the worktree now holds work ({'; '.join(reasons)[:200]}): "
                     f"`sandbox rm {rec.name}` again, or --force")
            sb.registry.set_state(rec.name, "broken", cause)
            return "roll-back", "kept as broken: its worktree holds work"
    sb.remove_parts(rec, delete_branch=bool(it.data.get("delete_branch")), force=bool(it.data.get("force")))
    return "roll-forward", "removal finished"


def _recover_reset(sb: "Sandbox", it: IntentRecord) -> tuple[str, str]:
    rec = _rec(sb, it)
    if rec is None:
        return "roll-back", "the workspace is gone"
    if it.step == "begin":
        _start_again(sb, rec.name)
        return "roll-back", "the database was not changed"
    if it.step == "checkpointed":
        sb.db.reset(rec.name, rec.data.get("network"))
    sb.prune_auto(rec.name)
    kept = it.data.get("checkpoint")
    return "roll-forward", "reset to the baseline" + (f" (the data it replaced is in checkpoint {kept})" if kept else "")


def _recover_restore(sb: "Sandbox", it: IntentRecord) -> tuple[str, str]:
    rec = _rec(sb, it)
    label = str(it.data.get("label"))
    if rec is None:
        return "roll-back", "the workspace is gone"
    if it.step == "begin":
        _start_again(sb, rec.name)
        return "roll-back", "the database was not changed"
    if it.step == "checkpointed":
        sb.db.restore(rec.name, label, rec.data.get("network"))
    sb.prune_auto(rec.name)
    kept = it.data.get("checkpoint")
    return "roll-forward", f"restored to {label}" + (f" (the data it replaced is in checkpoint {kept})" if kept else "")


def _recover_checkpoint(sb: "Sandbox", it: IntentRecord) -> tuple[str, str]:
    rec = _rec(sb, it)
    if rec is None:
        return "roll-back", "the workspace is gone"
    label = it.data.get("label")
    if it.step == "taken":
        return "roll-forward", f"checkpoint {label} was taken"
    _start_again(sb, rec.name)
    return "roll-back", f"checkpoint {label} was not taken (`sandbox gc` removes a half-made copy)"


def _recover_coordinated(sb: "Sandbox", it: IntentRecord) -> tuple[str, str]:
    result: tuple[str, str] = sb.coordinator().finish(it)
    return result


def _recover_deinit(sb: "Sandbox", it: IntentRecord) -> tuple[str, str]:
    sb.deinit(force=bool(it.data.get("force")), resume=it.step)
    return "roll-forward", "deinit finished: the project is no longer initialised"


_RECOVER: dict[str, Callable[["Sandbox", IntentRecord], tuple[str, str]]] = {
    "up": _recover_up, "rm": _recover_rm, "db-reset": _recover_reset, "db-restore": _recover_restore,
    "db-checkpoint": _recover_checkpoint, "migrate-rebase": _recover_coordinated, "sync": _recover_coordinated,
    "merge": _recover_coordinated, "deinit": _recover_deinit,
}
