"""The registry's records: a workspace and an unfinished operation (intent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATES = ("creating", "ready", "stopped", "broken", "removing")


@dataclass
class WorkspaceRecord:
    name: str
    branch: str
    path: str
    state: str
    runtime: str
    cause: str | None = None
    strategy: str | None = None
    base_ref: str | None = None
    branch_created: bool = False
    pid: int | None = None
    created_at: str = ""
    updated_at: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    pid_start: str | None = None      # with ``pid``, names one process (see sandbox.host.process_alive)


@dataclass
class IntentRecord:
    """An operation that said what it was about to do (see :mod:`sandbox.intents`).

    ``status`` is ``running`` while its process works on it, ``failed`` when it raised with a
    step left unfinished, ``recovering`` while another command finishes or undoes it.
    """

    id: int
    op: str
    workspace: str | None
    step: str
    status: str
    pid: int
    pid_start: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    cause: str | None = None
    started_at: str = ""
    updated_at: str = ""
