"""Typed results and events: what the library's public methods return and report.

Every public :class:`~sandbox.api.Sandbox` method returns one of these (or a list of them);
``to_json()`` is what ``--json`` prints, in the shapes of CONTRACT.md (fields may be added,
never renamed). Progress and warnings are :class:`Event` objects: the CLI renders their
``kind``; nothing reads their text to decide anything.

A leaf: it imports nothing of sandbox.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Callable


class EventKind(str, enum.Enum):
    PROGRESS = "progress"
    WARNING = "warning"


@dataclass(frozen=True)
class Event:
    """One line of what an operation is doing (``PROGRESS``) or of what its user should know (``WARNING``)."""

    kind: EventKind
    message: str
    workspace: str | None = None

    def text(self) -> str:
        """The line as the CLI shows it."""
        head = f"{self.workspace}: " if self.workspace else ""
        return head + ("warning: " if self.kind is EventKind.WARNING else "") + self.message

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "message": self.message, "workspace": self.workspace}


EventSink = Callable[[Event], None]


class _Json:
    """``to_json()``: the dataclass's fields, as CONTRACT.md names them."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass
class UpResult(_Json):
    name: str
    ok: bool
    state: str
    created: bool = False
    error: str | None = None
    exit_code: int = 0


@dataclass
class RmResult(_Json):
    name: str
    removed: bool
    branch_deleted: bool
    teardown_error: str | None = None


@dataclass
class ResetResult(_Json):
    """``db reset``: the database's new URL and the automatic checkpoint holding what it replaced."""

    name: str
    url: str
    checkpoint: str | None = None


@dataclass
class CheckpointInfo(_Json):
    label: str
    created_at: str
    size_bytes: int | None = None
    auto: bool = False

    @classmethod
    def of(cls, cp: Any, *, auto: bool) -> "CheckpointInfo":
        data = dataclasses.asdict(cp)
        return cls(label=data.pop("label"), created_at=data.pop("created_at"),
                   size_bytes=data.pop("size_bytes", None), auto=auto)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class GcKind(str, enum.Enum):
    """What gc does with what it found."""

    REMOVE = "remove"
    MARK_BROKEN = "mark-broken"
    RELEASE = "release"
    KEPT = "kept"


@dataclass
class GcAction(_Json):
    kind: str
    id: str
    workspace: str | None
    action: str            # a GcKind value: "remove", "mark-broken", "release", "kept"
    detail: str = ""
    done: bool = False


@dataclass
class GcResult(_Json):
    actions: list[GcAction] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"actions": [a.to_json() for a in self.actions]}


@dataclass
class DeinitResult(_Json):
    removed_workspaces: list[str]
    kept_branches: list[str]
    removed_images: list[str] = field(default_factory=list)     # tags of the project images sandbox built


@dataclass
class InitResult(_Json):
    config: str
    wrote_config: bool
    strategy: str
    state_dir: str
    env_file: str
    baseline_head: str | None
    baseline_verified: bool
    # what init found (sandbox.migrations.discover.Discovery; this module imports nothing of sandbox)
    migrations: Any = None

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "migrations"}
        data["migrations"] = self.migrations.to_json() if self.migrations is not None else None
        return data


@dataclass
class BaselineResult(_Json):
    strategy: str
    baseline_head: str | None
    baseline_commit: str | None


@dataclass
class StorageResult(_Json):
    pool: str
    kind: str
    created: bool
    size: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.size is None:
            data.pop("size")
        return data


@dataclass
class GrowResult(_Json):
    """``storage grow``: what the pool was and is (bytes), plus whatever the backend reported."""

    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.data)


@dataclass
class WorkspaceInfo(_Json):
    """One row of ``sandbox ls`` (no secrets: the URL is shown without its password)."""

    name: str
    branch: str
    path: str
    state: str
    cause: str | None
    registry_state: str
    runtime: str
    ports: list[int] | None
    container: dict[str, Any]
    database: dict[str, Any]
    health: dict[str, Any]
    migrations: Any
    git: dict[str, Any]
    compose: dict[str, Any] | None = None     # the workspace's compose stack (None: it has none)
    brief: str | None = None       # the workspace's brief (``up --brief``, ``sandbox brief``)
