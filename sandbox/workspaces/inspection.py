"""Reading workspaces: ``ls``, ``env``, ``exec``, ``shell``, ``db url``, ``db psql``."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from ..core import Project
from ..git import user as git_user
from ..errors import (
    SandboxError,
    ServiceUnavailable,
    UnknownWorkspace,
    UnsafeToTell,
    UsageError,
    WorkspaceError,
)
from ..registry import WorkspaceRecord
from ..results import WorkspaceInfo
from . import stacks
from ..runtime.base import OutputSink

# How many workspaces' repositories ``ls`` fetches at once (those whose refs main lacks).
PARALLEL_READS = 8


@runtime_checkable
class ListsStatuses(Protocol):
    """A runtime that lists every workspace's container status in one call."""

    def statuses(self, project: str) -> dict[str, str]: ...


def container_statuses(p: Project, recs: Sequence[WorkspaceRecord]) -> list[str]:
    """Each workspace's container status: one list call per runtime kind (``unknown`` when the
    runtime does not answer)."""
    by_kind: dict[str, dict[str, str] | None] = {}
    unavailable: set[str] = set()
    for kind in {rec.runtime for rec in recs if rec.runtime != "none"}:
        try:
            runtime = p.runtime_for(kind)
            by_kind[kind] = runtime.statuses(p.config.project_id) if isinstance(runtime, ListsStatuses) else None
        except ServiceUnavailable:
            unavailable.add(kind)
    out = []
    for rec in recs:
        if rec.runtime == "none":
            out.append("none")
        elif rec.runtime in unavailable:
            out.append("unknown")
        elif (listed := by_kind[rec.runtime]) is not None:
            out.append(listed.get(rec.name, "none"))
        else:                                   # a runtime without a list call: one call each
            try:
                out.append(p.runtime_for(rec.runtime).status(p.config.project_id, rec.name))
            except ServiceUnavailable:
                out.append("unknown")
    return out


def _collect_all(p: Project, recs: Sequence[WorkspaceRecord]) -> list[tuple[str | None, str | None]]:
    """Bring every isolated workspace's commits into main's repository (batched: only those whose
    refs main does not already have are fetched, several at once): (git error, unsafe) of each."""
    items = [(rec.name, Path(rec.path), rec.branch) for rec in recs if p.isolated(rec) and Path(rec.path).exists()]
    found = p.repos.collect_many(items, PARALLEL_READS) if items else {}
    out: list[tuple[str | None, str | None]] = []
    for rec in recs:
        exc = found.get(rec.name)
        if isinstance(exc, UnsafeToTell):   # a hostile or unreadable repository: reported, never followed
            out.append((exc.message, exc.message))
        else:
            out.append((str(exc) if exc is not None else None, None))
    return out


def _behind_all(p: Project, recs: Sequence[WorkspaceRecord]) -> list[int]:
    """How many of main's commits each branch lacks: one batched read for all of them."""
    try:
        found = p.git.ahead_behind([rec.branch for rec in recs])
    except SandboxError:
        return [p.behind(rec) for rec in recs]
    return [found[rec.branch].behind if rec.branch in found else 0 for rec in recs]


def ls(p: Project, summaries: Callable[[list[WorkspaceRecord]], list[Any]], *,
       briefs: Mapping[str, str] | None = None) -> list[WorkspaceInfo]:
    """Every workspace and its state (JSON shape of the contract; no secrets).

    ``state`` is the registry's, except that a ``ready`` workspace whose database does not
    answer, whose container is not running, or that an interrupted operation left behind is
    reported ``broken`` (``health`` says why; ``registry_state`` keeps the row's own).
    Batched for many workspaces: one container list per runtime, repositories read in
    parallel, one git read for every branch, health probed in parallel. ``summaries``: the
    migration summary of each record (the gate's, batched too); ``briefs``: each one's brief.
    """
    from ..health import (  # psycopg: only for the commands that probe
        baseline_state,
        check_all,
    )
    out: list[WorkspaceInfo] = []
    p.recover_project()            # a killed merge's baseline, a killed deinit (workspaces: only reported)
    recs = p.registry.all()
    statuses = container_statuses(p, recs)
    # the probes (the databases' work, mostly) run while the repositories are read here
    with ThreadPoolExecutor(max_workers=1) as probing:
        probed = probing.submit(check_all, p, list(zip(recs, statuses)))
        collected = _collect_all(p, recs)
        behind = _behind_all(p, recs)
        migrations = summaries(recs)
        healths = probed.result()
    baseline = baseline_state(p)
    for rec, status, health, (git_error, unsafe), late, summary in zip(recs, statuses, healths, collected,
                                                                       behind, migrations):
        url = None
        if health.database is not None:
            url = health.database.url(secret=False)       # the probe's own (host) address: not asked twice
        elif rec.strategy:
            try:
                url = p.db.info(rec.name, p.network(rec)).url(secret=False)
            except SandboxError:
                url = None
        ports = p.registry.ports(rec.name, "workspace")
        state, cause = rec.state, rec.cause
        if not health.ok and state in ("ready", "stopped"):
            state, cause = "broken", "; ".join(health.problems)
        if unsafe:
            state, cause = "broken", f"unsafe: {unsafe}" + (f"; {cause}" if cause else "")
        out.append(WorkspaceInfo(
            name=rec.name, brief=(briefs or {}).get(rec.name), branch=rec.branch, path=rec.path, state=state, cause=cause,
            registry_state=rec.state, runtime=rec.runtime, ports=[ports[0], ports[-1]] if ports else None,
            container={"status": status},
            database={"strategy": rec.strategy, "url": url, "answers": health.database_answers,
                      **({"error": health.database_error} if health.database_error else {})},
            health={**health.to_json(), "baseline": baseline.to_json(),
                    **({"baseline_problem": baseline.problem()} if baseline.problem() else {})},
            migrations=summary,
            compose=(stack.to_json() if (stack := stacks.info(p, rec.name)) else None),
            git={"behind_main": late, **({"error": git_error} if git_error else {}),
                 **({"unsafe": True} if unsafe else {})}))
    return out


def env(p: Project, name: str) -> dict[str, str]:
    """The workspace's environment as seen from the host (and its stack's service URLs)."""
    return {**p.environment(p.record(name), container=False), **stacks.env(p, name)}


def exec_in(p: Project, name: str, argv: Sequence[str], *, interactive: bool = False,
            output: OutputSink | None = None, errors: OutputSink | None = None) -> int:
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
        p.db.info(name, p.network(rec))
    return runtime.exec(spec, argv, env=spec.env, interactive=interactive, output=output, errors=errors)


def git_in(p: Project, name: str, args: Sequence[str]) -> int:
    """``sandbox git NAME -- ARGS``: git inside a Docker workspace's container (through the runtime's
    exec), or hardened on the host in a ``runtime = "none"`` worktree; git's exit code."""
    rec = p.record(name)
    if rec.runtime == "none":
        if rec.state == "creating":
            raise WorkspaceError(f"workspace {name!r} is still being created")
        return git_user.on_host(Path(rec.path), args)
    return git_user.in_container(lambda argv: exec_in(p, name, argv), args)


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

