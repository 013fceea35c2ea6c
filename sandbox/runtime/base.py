"""The runtime protocol: where a workspace's commands run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from ..checks import Check, OwnedResource
from .labels import LABEL_PROJECT, LABEL_ROLE, LABEL_WORKSPACE  # noqa: F401  (re-exported)

OutputSink = Callable[[str], None]   # receives output lines of hooks as they arrive

# The user that workspace and project containers run as when sandbox itself runs as root:
# a workspace is untrusted, and root in a container is one kernel bug away from root outside.
UNPRIVILEGED_UID = 1000


def unprivileged_ids() -> tuple[int, int]:
    """(uid, gid) for workspace containers: the invoking user's, or 1000 when that is root."""
    import os
    uid = int(os.environ.get("SUDO_UID", os.getuid()))
    gid = int(os.environ.get("SUDO_GID", os.getgid()))
    if uid == 0:
        return UNPRIVILEGED_UID, UNPRIVILEGED_UID
    return uid, gid


@dataclass(frozen=True)
class WorkspaceSpec:
    """Everything a runtime needs to create one workspace's container."""

    project: str                 # project id (Config.project_id): value of dev.sandbox.project
    name: str                    # workspace name (already validated)
    worktree: Path               # absolute host path of the worktree
    git_common_dir: Path         # absolute host path of the main repository's .git directory
    image: str
    env: Mapping[str, str]       # environment as seen from inside the workspace
    ports: Sequence[int]         # this workspace's host port block, published 1:1 on 127.0.0.1
    uid: int                     # files the container writes are owned by this host user
    gid: int
    memory: str = "2g"
    cpus: float = 2.0
    pids: int = 1024
    labels: Mapping[str, str] = field(default_factory=dict)
    # True: the worktree is a repository of its own (untrusted); only main's object store is
    # mounted, read-only, for its alternates. False: a git worktree of the user's own, which
    # needs main's whole .git (read-write).
    isolated: bool = True


class Runtime(Protocol):
    """A place to run a workspace: Docker (``docker``) or the host (``none``)."""

    name: str

    def ensure_network(self, project: str, name: str) -> str | None:
        """Create (idempotently) the workspace's private network; return its name, or None."""

    def up(self, spec: WorkspaceSpec) -> None:
        """Create the workspace's container, or start it again if it exists (idempotent)."""

    def stop(self, project: str, name: str) -> None:
        """Stop the container; keep everything."""

    def remove(self, project: str, name: str) -> None:
        """Remove the container and the network. Missing pieces are not an error."""

    def status(self, project: str, name: str) -> str:
        """``running``, ``exited`` or ``none``."""

    def exec(self, spec: WorkspaceSpec, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
             interactive: bool = False, output: OutputSink | None = None) -> int:
        """Run argv in the workspace (cwd = worktree) and return its exit code.

        With ``output`` the combined stdout/stderr is passed line by line to it;
        otherwise the process inherits the caller's terminal (stdin too if interactive).
        """

    def owned(self, project: str) -> list[OwnedResource]:
        """Every labelled object of this project (for gc)."""

    def remove_owned(self, resource: OwnedResource) -> None:
        """Remove one object listed by :meth:`owned`."""

    def doctor(self) -> list[Check]:
        """Checks of the engine this runtime needs."""
