"""Is each workspace what the registry says it is? ``ls`` and ``doctor`` ask, and never trust the row alone.

A row that says ``ready`` is only reported ready when its database answers on its URL with its
own credentials (a short ``connect_timeout``), its container runs (Docker runtime), and no
operation on it was left unfinished (see :mod:`sandbox.intents`). Project-wide: the baseline must
be at main's migration head (a merge killed after main moved leaves it behind until the next
command brings it forward).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .databases.base import ConnInfo
from .databases.probe import answers
from .errors import SandboxError
from .intents import abandoned
from .registry import IntentRecord, WorkspaceRecord

if TYPE_CHECKING:
    from .core import Project as Sandbox

@dataclass
class BaselineState:
    """Where the baseline's migrations stand against main's head (registry meta ``baseline_head``)."""

    head: str | None
    main_heads: list[str]
    current: bool | None            # None: cannot tell (an imported dump, or migrations off)
    interrupted_merge: bool = False

    def problem(self) -> str | None:
        if self.interrupted_merge:
            return "a merge was interrupted before the baseline was brought forward (the next command or " \
                   "`sandbox gc` finishes it)"
        if self.current is False:
            return (f"the baseline is at {self.head or 'nothing'} but main's head is {', '.join(self.main_heads)}: "
                    "new workspaces would start behind main (`sandbox db baseline --refresh`)")
        return None

    def to_json(self) -> dict[str, Any]:
        return {"head": self.head, "main_heads": self.main_heads, "current": self.current}


def baseline_state(sb: "Sandbox", intents: list[IntentRecord] | None = None) -> BaselineState:
    reg = sb.registry
    intents = reg.intents() if intents is None else intents
    merging = any(it.op == "merge" and abandoned(it) and it.step in ("checked", "main-moved", "recorded") for it in intents)
    try:
        main = sb.main_heads()
    except SandboxError:
        return BaselineState(reg.get_meta("baseline_head") or None, [], None, merging)
    head = reg.get_meta("baseline_head")
    if head is None or (not head and reg.get_meta("baseline_source")):
        return BaselineState(head or None, main, None, merging)
    return BaselineState(head or None, main, sorted(main) == sorted([head] if head else []), merging)


@dataclass
class Health:
    """One workspace's health: ``ok`` unless a problem was found (``problems`` say which)."""

    problems: list[str] = field(default_factory=list)
    database_answers: bool | None = None
    database_error: str | None = None
    interrupted: list[dict[str, Any]] = field(default_factory=list)
    running: dict[str, Any] | None = None     # an operation at work on it right now
    database: ConnInfo | None = field(default=None, repr=False)   # where it was probed (not in JSON)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "database_answers": self.database_answers,
                "interrupted": self.interrupted, "running": self.running}


def workspace_health(sb: "Sandbox", rec: WorkspaceRecord, container_status: str,
                     intents: list[IntentRecord]) -> Health:
    h = Health()
    for it in intents:
        if it.workspace != rec.name:
            continue
        entry = {"op": it.op, "step": it.step, "status": it.status, "pid": it.pid, "since": it.started_at,
                 **({"cause": it.cause} if it.cause else {})}
        if abandoned(it):
            h.interrupted.append(entry)
            cause = f" ({it.cause})" if it.cause else ""
            h.problems.append(f"`{it.op}` was interrupted at step {it.step}{cause}: the next command on it, "
                              "or `sandbox gc`, finishes or undoes it")
        else:
            h.running = entry
    if rec.strategy and rec.state in ("ready", "stopped", "broken"):
        info: ConnInfo | None
        why: str | None
        try:
            info = sb.db.info(rec.name, None)     # the host's view: no Docker call, no attaching
            why = answers(info)
        except SandboxError as exc:
            info, why = None, str(exc)
        h.database_answers = why is None
        h.database = info
        h.database_error = why
        if why is not None and rec.state == "ready" and h.running is None:
            where = f" (container {info.container})" if info is not None and info.container else ""
            h.problems.append(f"its database does not answer{where}: {why}; `sandbox up {rec.name}` starts it, "
                              f"`sandbox db reset {rec.name}` rebuilds it")
    if rec.runtime == "docker" and rec.state == "ready" and container_status not in ("running", "unknown") \
            and h.running is None:
        h.problems.append(f"its container is {container_status}: `sandbox up {rec.name}` starts it")
    return h


def check_all(sb: "Sandbox", rows: list[tuple[WorkspaceRecord, str]]) -> list[Health]:
    """Every workspace's health, probed concurrently (a database that hangs costs one timeout)."""
    intents = sb.registry.intents()
    if not rows:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(rows))) as pool:
        return list(pool.map(lambda row: workspace_health(sb, row[0], row[1], intents), rows))
