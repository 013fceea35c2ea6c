"""Runtime ``none``: no container; commands run in the worktree on the host."""

from __future__ import annotations

import os
import subprocess
from typing import Mapping, Sequence

from ..checks import Check, OwnedResource
from ..errors import UsageError
from .base import OutputSink, WorkspaceSpec


class HostRuntime:
    """Runs a workspace's commands on the host, in its worktree, with its environment."""

    name = "none"

    def ensure_network(self, project: str, name: str) -> str | None:
        return None

    def up(self, spec: WorkspaceSpec) -> None:
        return None

    def stop(self, project: str, name: str) -> None:
        return None

    def remove(self, project: str, name: str) -> None:
        return None

    def status(self, project: str, name: str) -> str:
        return "none"

    def statuses(self, project: str) -> dict[str, str]:
        return {}

    def exec(self, spec: WorkspaceSpec, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
             interactive: bool = False, output: OutputSink | None = None) -> int:
        full_env = {**os.environ, **spec.env, **(env or {})}
        try:
            if output is None:
                return subprocess.call(list(argv), cwd=spec.worktree, env=full_env)
            proc = subprocess.Popen(list(argv), cwd=spec.worktree, env=full_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                output(line.rstrip("\n"))
            return proc.wait()
        except FileNotFoundError as exc:
            raise UsageError(f"command not found: {argv[0]}") from exc
        except PermissionError as exc:
            raise UsageError(f"command not executable: {argv[0]}") from exc

    def owned(self, project: str) -> list[OwnedResource]:
        return []

    def remove_owned(self, resource: OwnedResource) -> None:
        return None

    def doctor(self) -> list[Check]:
        return [Check("runtime", True, "runtime none: commands run on the host in the worktree", required=False)]
