"""A workspace's compose stack (:mod:`sandbox.compose`) in its lifecycle: started by ``up``,
stopped by ``stop``, removed by the teardown and ``deinit``, listed by ``ls``/``env``, collected
by ``gc``, and ``sandbox compose NAME -- ARGS``.

A stack that fails is reported (the ``up`` result's error, with its services' logs' tail); the
workspace itself stays as it is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from ..compose import StackInfo, Stacks, StackWorkspace
from ..core import Project
from ..registry import WorkspaceRecord
from ..results import UpResult
from ..runtime.compose_objects import StackObject


def stacks(p: Project) -> Stacks:
    """The project's stacks; their progress and warnings are the project's events."""
    return Stacks(p.config, p.registry, progress=p.progress, warn=p.warn)


def up(p: Project, rec: WorkspaceRecord, result: UpResult) -> UpResult:
    """Start the workspace's stack after ``up`` made or started the workspace: ``result``, or
    it marked failed (the stack's error; the workspace stays)."""
    if rec.runtime == "none" or not stacks(p).files(Path(rec.path)):
        return result
    network = p.network(rec)
    db = p.db.info(rec.name, network)
    stack = stacks(p).up(StackWorkspace(rec.name, Path(rec.path), network,
                                        p.environment(rec, container=True, db=db), db.container))
    if stack is None or stack.ok:
        return result
    return dataclasses.replace(result, ok=False, error=f"compose: {stack.error}", exit_code=1)


def info(p: Project, name: str) -> StackInfo | None:
    """The stack last generated for the workspace (None: it has none)."""
    return stacks(p).info(name)


def env(p: Project, name: str) -> dict[str, str]:
    """Each published service's URL (``SANDBOX_SERVICE_WEB_8000=http://127.0.0.1:20012``)."""
    return stacks(p).env(name)


def stop(p: Project, name: str) -> None:
    stacks(p).stop(name)


def remove(p: Project, name: str) -> None:
    """``down -v --remove-orphans`` and whatever else carries the workspace's labels."""
    stacks(p).remove(name)


def remove_everything(p: Project) -> None:
    """Every workspace's stack objects (``deinit``)."""
    stacks(p).remove_everything()


def orphans(p: Project, known: set[str]) -> list[StackObject]:
    """Stack objects and generated files of workspaces the registry does not know (``gc``)."""
    return stacks(p).orphans(known)


def remove_object(obj: StackObject) -> None:
    Stacks.remove_object(obj)


def passthrough(p: Project, name: str, args: Sequence[str]) -> int:
    """``docker compose ARGS`` for the workspace's own stack; compose's exit code."""
    p.record(name)
    return stacks(p).passthrough(name, args)
