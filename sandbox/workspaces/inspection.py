"""Reading workspaces: ``ls``, ``env``, ``exec``, ``shell``, ``db url``, ``db psql``."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Callable, Sequence

from ..core import Project
from ..errors import (
    SandboxError,
    ServiceUnavailable,
    UnknownWorkspace,
    UnsafeToTell,
    UsageError,
    WorkspaceError,
)
from ..health import baseline_state, check_all
from ..registry import WorkspaceRecord
from ..results import WorkspaceInfo


def ls(p: Project, summary: Callable[[WorkspaceRecord], Any]) -> list[WorkspaceInfo]:
    """Every workspace and its state (JSON shape of the contract; no secrets).

    ``state`` is the registry's, except that a ``ready`` workspace whose database does not
    answer, whose container is not running, or that an interrupted operation left behind is
    reported ``broken`` (``health`` says why; ``registry_state`` keeps the row's own).
    """
    out: list[WorkspaceInfo] = []
    if None not in p._recovered:
        p.recover(None)            # a killed merge's baseline, a killed deinit (workspaces: only reported)
    recs = p.registry.all()
    statuses: list[str] = []
    for rec in recs:
        try:
            statuses.append(p.runtime_for(rec.runtime).status(p.config.project_id, rec.name)
                            if rec.runtime != "none" else "none")
        except ServiceUnavailable:
            statuses.append("unknown")
    healths = check_all(p, list(zip(recs, statuses)))
    baseline = baseline_state(p)
    for rec, status, health in zip(recs, statuses, healths):
        git_error, unsafe = None, None
        try:
            p.collect(rec)        # commits made inside are on its branch before it is read
        except UnsafeToTell as exc:  # a hostile or unreadable repository: reported, never followed
            git_error = unsafe = exc.message
        except SandboxError as exc:
            git_error = str(exc)
        url = None
        if rec.strategy:
            try:
                url = p.db.info(rec.name, p._network(rec)).url(secret=False)
            except SandboxError:
                url = None
        ports = p.registry.ports(rec.name, "workspace")
        state, cause = rec.state, rec.cause
        if not health.ok and state in ("ready", "stopped"):
            state, cause = "broken", "; ".join(health.problems)
        if unsafe:
            state, cause = "broken", f"unsafe: {unsafe}" + (f"; {cause}" if cause else "")
        out.append(WorkspaceInfo(
            name=rec.name, branch=rec.branch, path=rec.path, state=state, cause=cause,
            registry_state=rec.state, runtime=rec.runtime, ports=[ports[0], ports[-1]] if ports else None,
            container={"status": status},
            database={"strategy": rec.strategy, "url": url, "answers": health.database_answers,
                      **({"error": health.database_error} if health.database_error else {})},
            health={**health.to_json(), "baseline": baseline.to_json(),
                    **({"baseline_problem": baseline.problem()} if baseline.problem() else {})},
            migrations=summary(rec),
            git={"behind_main": p.behind(rec), **({"error": git_error} if git_error else {}),
                 **({"unsafe": True} if unsafe else {})}))
    return out


def env(p: Project, name: str) -> dict[str, str]:
    """The workspace's environment as seen from the host."""
    return p.environment(p.record(name), container=False)


def exec_in(p: Project, name: str, argv: Sequence[str], *, interactive: bool = False) -> int:
    """Run argv in the workspace and return its exit code."""
    if not argv:
        raise UsageError("no command given: sandbox exec NAME -- CMD...")
    rec = p.record(name)
    if rec.state == "creating":
        raise WorkspaceError(f"workspace {name!r} is still being created")
    runtime = p.runtime_for(rec.runtime)
    if rec.runtime != "none" and runtime.status(p.config.project_id, name) != "running":
        raise WorkspaceError(f"workspace {name!r} is not running: run `sandbox up {name}`")
    spec = p.spec(rec)
    if rec.strategy and "DATABASE_URL" not in spec.env:
        # never run the command without its database: say why instead (removed meanwhile, lost secret)
        if p.registry.get(name) is None:
            raise UnknownWorkspace(name)
        p.db.info(name, p._network(rec))
    return runtime.exec(spec, argv, env=spec.env, interactive=interactive)


def shell(p: Project, name: str) -> int:
    return exec_in(p, name, ["bash", "-l"] if p.record(name).runtime != "none"
                     else [os.environ.get("SHELL", "/bin/bash")], interactive=True)


def db_url(p: Project, name: str) -> str:
    return p.conninfo(name).url()


def db_psql(p: Project, name: str) -> int:
    """Run psql against the workspace's database (the host's psql, else the workspace's); its exit code."""
    info = p.conninfo(name)
    if shutil.which("psql"):
        return subprocess.call(["psql"], env={**os.environ, **info.env()})
    return exec_in(p, name, ["psql"], interactive=True)

