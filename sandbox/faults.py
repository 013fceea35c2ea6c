"""Named kill points: where tests SIGKILL sandbox to prove that every operation recovers.

``SANDBOX_KILL_AT=merge:main-moved`` makes :func:`kill_point` send SIGKILL to its own process when
the operation reaches that step (after the step is recorded). :data:`KILL_POINTS` lists every
name; docs/reliability.md documents them. A leaf: it imports nothing of sandbox.
"""

from __future__ import annotations

import os
import signal

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
