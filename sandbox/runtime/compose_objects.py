"""The Docker objects of workspaces' compose stacks, found by their labels.

Every container, volume and locally built image of a stack carries ``dev.sandbox.project``,
``dev.sandbox.workspace`` and ``dev.sandbox.role=compose`` (see :mod:`sandbox.compose.rewrite`),
and compose adds ``com.docker.compose.project``. Here they are listed (for ``gc`` and ``ls``),
their failures read (state and the logs' tail) and removed; compose itself starts and stops them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import translated
from .labels import LABEL_PROJECT, LABEL_ROLE, LABEL_WORKSPACE, ROLE_COMPOSE

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


@dataclass(frozen=True)
class StackObject:
    """A container, volume or image of some workspace's stack."""

    kind: str              # container | volume | image
    id: str
    workspace: str | None
    compose_project: str | None
    detail: str = ""


@dataclass(frozen=True)
class ServiceState:
    """A stack container's state, and the tail of its logs when it is not running."""

    service: str
    container: str
    status: str
    exit_code: int | None
    logs: str = ""

    @property
    def failed(self) -> bool:
        return (self.status in ("exited", "dead") and self.exit_code != 0) or self.status == "restarting"

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "container": self.container, "status": self.status,
                "exit_code": self.exit_code, **({"logs": self.logs} if self.logs else {})}


def _filters(project: str, workspace: str | None = None) -> dict[str, str | list[str] | bool]:
    labels = [f"{LABEL_PROJECT}={project}", f"{LABEL_ROLE}={ROLE_COMPOSE}"]
    if workspace is not None:
        labels.append(f"{LABEL_WORKSPACE}={workspace}")
    return {"label": labels}


def owned(project: str, workspace: str | None = None) -> list[StackObject]:
    """Every stack object of ``project`` (of one ``workspace`` when given)."""
    from .docker import shared_client    # the SDK: loaded when used, not at startup
    client = shared_client()
    found: list[StackObject] = []
    with translated("listing compose stacks"):
        for c in client.containers.list(all=True, filters=_filters(project, workspace)):
            labels = c.labels or {}
            found.append(StackObject("container", str(c.id), labels.get(LABEL_WORKSPACE),
                                     labels.get(COMPOSE_PROJECT), f"{c.name} ({c.status})"))
        for v in client.volumes.list(filters=_filters(project, workspace)):
            labels = v.attrs.get("Labels") or {}
            found.append(StackObject("volume", str(v.name), labels.get(LABEL_WORKSPACE),
                                     labels.get(COMPOSE_PROJECT), str(v.name)))
        for i in client.images.list(filters=_filters(project, workspace)):
            labels = i.labels or {}
            found.append(StackObject("image", str(i.id), labels.get(LABEL_WORKSPACE), None,
                                     ", ".join(i.tags) or str(i.short_id)))
    return found


def remove(obj: StackObject) -> None:
    """Remove one stack object (already gone is fine)."""
    import docker.errors

    from .docker import shared_client    # the SDK: loaded when used, not at startup
    client = shared_client()
    with translated(f"removing {obj.kind} {obj.detail or obj.id}"):
        try:
            if obj.kind == "container":
                client.containers.get(obj.id).remove(force=True, v=True)
            elif obj.kind == "volume":
                client.volumes.get(obj.id).remove(force=True)
            elif obj.kind == "image":
                client.images.remove(obj.id, force=True)
        except docker.errors.NotFound:
            pass


def remove_all(project: str, workspace: str | None) -> list[StackObject]:
    """Remove a workspace's stack objects (every workspace's: None): containers, then volumes and images."""
    objs = owned(project, workspace)
    order = {"container": 0, "volume": 1, "image": 2}
    for obj in sorted(objs, key=lambda o: order.get(o.kind, 3)):
        remove(obj)
    return objs


def states(project: str, workspace: str, *, tail: int = 20) -> list[ServiceState]:
    """Each stack container's state; the last ``tail`` lines of its logs when it failed.

    One list call; only containers that are not running are inspected (exit code, logs)."""
    from .docker import shared_client    # the SDK: loaded when used, not at startup
    client = shared_client()
    out: list[ServiceState] = []
    with translated("reading the compose stack's state"):
        for row in client.api.containers(all=True, filters=_filters(project, workspace)):
            labels = row.get("Labels") or {}
            name = str((row.get("Names") or ["?"])[0]).lstrip("/")
            st = ServiceState(labels.get(COMPOSE_SERVICE, "?"), name, str(row.get("State")), None)
            if st.status != "running":
                c = client.containers.get(row["Id"])
                state = c.attrs.get("State") or {}
                st = ServiceState(st.service, name, str(state.get("Status")), state.get("ExitCode"))
                if st.failed:
                    logs = c.logs(tail=tail).decode("utf-8", "replace").strip()
                    st = ServiceState(st.service, name, st.status, st.exit_code, logs)
            out.append(st)
    return sorted(out, key=lambda s: s.service)
