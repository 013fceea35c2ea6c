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

Tests kill the process at named steps (see :mod:`sandbox.faults`): ``SANDBOX_KILL_AT=merge:main-moved`` makes
:func:`kill_point` send SIGKILL to its own process when the operation reaches that step (after
the step is recorded). :data:`KILL_POINTS` lists every name; docs/reliability.md documents them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

from .faults import BACKEND_STEPS, KILL_ENV, KILL_POINTS, STEPS, kill_point
from .host import process_alive

__all__ = ["BACKEND_STEPS", "KILL_ENV", "KILL_POINTS", "PROJECT_OPS", "STEPS", "Journal", "Operation",
           "Recovery", "abandoned", "kill_point", "lock_of", "operation", "pending"]


class Intent(Protocol):
    """An intent as the journal keeps it (the registry's ``IntentRecord``)."""

    @property
    def op(self) -> str: ...
    @property
    def workspace(self) -> str | None: ...
    @property
    def step(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def pid_start(self) -> str | None: ...


class Journal(Protocol):
    """Where intents are kept (the registry)."""

    def begin_intent(self, op: str, workspace: str | None, data: dict[str, Any]) -> int: ...
    def update_intent(self, intent_id: int, *, step: str | None = ..., status: str | None = ...,
                      data: dict[str, Any] | None = ..., cause: str | None = ..., claim: bool = ...) -> None: ...
    def end_intent(self, intent_id: int) -> None: ...
    def intents(self) -> list[Any]: ...

PROJECT_OPS = ("merge", "deinit")           # serialised by a project-wide lock, not a workspace's


class Operation:
    """The running operation's handle: :meth:`step` records progress (then passes its kill point)."""

    def __init__(self, registry: Journal, op: str, workspace: str | None, intent_id: int) -> None:
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
def operation(registry: Journal, op: str, workspace: str | None, **data: Any) -> Iterator[Operation]:
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

    intent: Any
    action: str              # "roll-forward", "roll-back", "failed", "busy"
    detail: str
    done: bool = False

    def describe(self) -> str:
        it = self.intent
        who = f" of {it.workspace!r}" if it.workspace else ""
        return f"interrupted `{it.op}`{who} (at step {it.step}): {self.detail}"


def abandoned(it: Intent) -> bool:
    """Whether nobody works on ``it`` any more: its process is gone, or it failed part-way."""
    return it.status == "failed" or not process_alive(it.pid, it.pid_start)


def lock_of(it: Intent) -> str:
    """The registry lock that serialises ``it``'s operation (held while it ran)."""
    return it.op if it.op in PROJECT_OPS else f"ws-{it.workspace}"


def pending(registry: Journal, workspace: str | None = None) -> list[Any]:
    """Unfinished operations nobody works on (all, or those on ``workspace``)."""
    return [it for it in registry.intents()
            if abandoned(it) and (workspace is None or it.workspace == workspace)]
