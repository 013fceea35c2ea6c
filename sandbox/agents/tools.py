"""What the MCP tools do: one call into :class:`~sandbox.api.Sandbox` each, scoped and typed.

A server is bound to one workspace (the one owning the current directory, or ``--workspace``),
and a call naming any other is refused; ``--lead`` serves every workspace. Expected failures are
:class:`~sandbox.errors.SandboxError`; ``mcp.py`` turns them into ``ToolError``.

There are deliberately no tools for files (the agent edits its worktree with its own tools), and
none for ``merge``, ``--allow-destructive``, ``rm``, ``deinit``, ``gc`` or ``db baseline``: those
stay with a person. ``merge_request`` asks one.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..api import Sandbox
from ..errors import UnknownWorkspace, UsageError, WorkspaceError
from ..names import validate_name
from ..requests import Requests
from . import models
from .jobs import Chunk, Jobs

Progress = Callable[[str], None]
EXEC_CAP_S = 50.0          # clients drop tool calls after about 60 s; longer work is a job
TAIL_CHARS = 16_000        # of stdout and of stderr, each

CAN = ["read the workspace's brief, environment and database URL (workspace_info, env)",
       "run commands in the workspace: exec (up to 50 s), job_start/job_read/job_stop for longer ones",
       "reset, checkpoint and restore the workspace's own database",
       "apply the workspace's own migrations to its own database (migrate_up) and check them with the "
       "merge gate (migrate_check, migrate_lint, migrate_status)",
       "bring main's changes in (sync, migrate_rebase)",
       "ask a person to merge (merge_request)"]
CANNOT = ["merge into main, allow destructive migrations, remove or garbage-collect workspaces, rebuild the "
          "baseline: a person does that",
          "touch any other workspace or its database",
          "edit files through this server: use your own file tools in the worktree"]


class _Tail:
    """The last :data:`TAIL_CHARS` characters of a stream, line by line."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque()
        self.size = 0
        self.dropped = False

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1
        while self.size > TAIL_CHARS and len(self.lines) > 1:
            self.size -= len(self.lines.popleft()) + 1
            self.dropped = True

    def text(self) -> str:
        text = "\n".join(self.lines) + ("\n" if self.lines else "")
        if len(text) > TAIL_CHARS:
            self.dropped = True
            return text[-TAIL_CHARS:]
        return text


def owning_workspace(sb: Sandbox, cwd: Path) -> str | None:
    """The workspace whose worktree holds ``cwd`` (None: none does)."""
    here = cwd.resolve()
    for rec in sb.registry.all():
        path = Path(rec.path)
        if here == path or path in here.parents:
            return rec.name
    return None


class AgentTools:
    """The tools of one server: bound to ``workspace``, or to every workspace with ``lead``."""

    def __init__(self, root: Path, *, workspace: str | None, lead: bool) -> None:
        self.root = root
        self.workspace = workspace
        self.lead = lead
        self.jobs = Jobs(self._job_exec)

    @classmethod
    def open(cls, project: Path | None, *, workspace: str | None, lead: bool,
             cwd: Path | None = None) -> "AgentTools":
        """Find the project and the workspace the server is bound to (exit 2 when there is none)."""
        sb = Sandbox.open(project)
        if lead:
            sb.registry  # noqa: B018 - fails now when the project is not initialised
            return cls(sb.root, workspace=None, lead=True)
        if workspace is None:
            workspace = owning_workspace(sb, cwd or Path.cwd())
            if workspace is None:
                raise UsageError("the current directory is in no workspace: pass --workspace NAME (or --lead to "
                                 "serve every workspace)")
        sb.record(workspace)
        return cls(sb.root, workspace=workspace, lead=False)

    def sandbox(self, progress: Progress | None = None) -> Sandbox:
        """A fresh ``Sandbox`` per call: calls run concurrently, each with its own progress."""
        return Sandbox.open(self.root, progress=progress)

    def resolve(self, name: str | None) -> str:
        """The workspace a call is about; another than the bound one is refused."""
        if self.lead:
            if not name:
                raise UsageError("name the workspace: this server serves every workspace (--lead)")
            validate_name(name)
            return name
        if name is not None and name != self.workspace:
            raise UsageError(f"this server is bound to workspace {self.workspace!r}; {name!r} is not yours")
        assert self.workspace is not None
        return self.workspace

    # -- information ------------------------------------------------------------------------------
    def _info(self, sb: Sandbox, name: str, briefs: dict[str, str] | None = None) -> models.WorkspaceInfo:
        rec = sb.registry.get(name)
        if rec is None:
            raise UnknownWorkspace(name)
        brief = (briefs if briefs is not None else Requests(sb.registry).briefs()).get(name)
        return models.WorkspaceInfo(brief=brief, name=rec.name, branch=rec.branch, path=rec.path, state=rec.state,
                                    runtime=rec.runtime, ports=sb.registry.ports(name, "workspace"),
                                    can=CAN, cannot=CANNOT)

    def workspace_info(self, name: str | None = None) -> models.WorkspaceInfo:
        ws = self.resolve(name)
        sb = self.sandbox()
        sb.record(ws)
        return self._info(sb, ws)

    def instructions(self) -> str:
        """The server's instructions: the brief first, then where to work and what this server does."""
        if self.lead:
            return ("sandbox (lead): every workspace of this project. Tools take the workspace's `name`; "
                    "workspace_list shows them with their briefs, workspace_up creates one. Files are edited "
                    "in each workspace's worktree with your own tools. Merging stays with a person: "
                    "merge_request asks one.")
        info = self.workspace_info()
        parts = []
        if info.brief:
            parts.append(f"Your brief (workspace {info.name}):\n{info.brief}\n")
        parts.append(f"You work in sandbox workspace {info.name!r}, branch {info.branch!r}. Your worktree is "
                     f"{info.path}: edit files there with your own file tools (this server has none). "
                     "Run commands with exec (up to 50 s) or, for longer work, job_start and job_read. "
                     "Your database is your own: migrate_up applies your revisions to it, db_checkpoint and "
                     "db_restore save and restore it. Never point alembic at another database. When your "
                     "work is committed, migrate_check runs the merge gate and merge_request asks a person "
                     "to merge; you cannot merge.")
        return "\n".join(parts)

    def workspace_list(self) -> models.WorkspaceList:
        sb = self.sandbox()
        briefs = Requests(sb.registry).briefs()
        return models.WorkspaceList(workspaces=[self._info(sb, r.name, briefs) for r in sb.registry.all()])

    def workspace_up(self, name: str, brief: str | None = None, progress: Progress | None = None) -> models.UpResult:
        validate_name(name)
        res = self.sandbox(progress).up([name], brief=brief)[0]
        if not res.ok:
            message = res.error or f"{name}: not ready"
            raise UsageError(message) if res.exit_code == 2 else WorkspaceError(message)
        return models.UpResult(**res.to_json())

    def env(self, name: str | None = None) -> models.EnvResult:
        ws = self.resolve(name)
        return models.EnvResult(workspace=ws, variables=self.sandbox().env(ws))

    # -- commands -------------------------------------------------------------------------------
    def exec(self, argv: Sequence[str], timeout_s: float = 30.0, name: str | None = None) -> models.ExecResult:
        ws = self.resolve(name)
        if not argv:
            raise UsageError("argv is empty: give the command as a list, e.g. [\"pytest\", \"-q\"]")
        if not 0 < timeout_s <= EXEC_CAP_S:
            raise UsageError(f"timeout_s must be above 0 and at most {EXEC_CAP_S:g} (clients drop calls after "
                             "about 60 s): use job_start for longer work")
        out, err = _Tail(), _Tail()
        # `timeout` runs inside the container: on expiry it TERMs the command's process group, then KILLs it
        wrapped = ["timeout", "--kill-after=2", f"{timeout_s:g}", *argv]
        started = time.monotonic()
        code = self.sandbox().exec(ws, wrapped, output=out.add, errors=err.add)
        duration = time.monotonic() - started
        timed_out = code in (124, 137) and duration >= timeout_s - 0.05
        stdout, stderr = out.text(), err.text()
        return models.ExecResult(exit_code=code, stdout=stdout, stderr=stderr, truncated=out.dropped or err.dropped,
                                 timed_out=timed_out, duration_s=round(duration, 3))

    def _job_exec(self, workspace: str, argv: Sequence[str], sink: Callable[[str], None]) -> int:
        return self.sandbox().exec(workspace, argv, output=sink)

    def _kill(self, workspace: str, argv: Sequence[str]) -> None:
        self.sandbox().exec(workspace, argv, output=lambda line: None, errors=lambda line: None)

    def close(self) -> None:
        """The server is ending: stop the jobs still running."""
        self.jobs.stop_all(self._kill)

    @staticmethod
    def _chunk(c: Chunk) -> models.JobChunk:
        return models.JobChunk(id=c.job.id, workspace=c.job.workspace, argv=c.job.argv, output=c.output,
                               offset=c.offset, next_offset=c.next_offset, skipped=c.skipped, running=c.running,
                               exit_code=c.exit_code, stopped=c.job.stopped)

    def job_start(self, argv: Sequence[str], name: str | None = None) -> models.JobChunk:
        ws = self.resolve(name)
        self.sandbox().record(ws)
        job = self.jobs.start(ws, argv)
        return self._chunk(self.jobs.read(job, 0))

    def job_read(self, job_id: str, offset: int = 0, wait_s: float = 0.0) -> models.JobChunk:
        job = self.jobs.get(job_id, None if self.lead else self.workspace)
        return self._chunk(self.jobs.read(job, offset, wait_s))

    def job_stop(self, job_id: str) -> models.JobChunk:
        job = self.jobs.get(job_id, None if self.lead else self.workspace)
        return self._chunk(self.jobs.stop(job, self._kill))

    # -- the workspace's own database ------------------------------------------------------------
    def db_reset(self, name: str | None = None, progress: Progress | None = None) -> models.DbResetResult:
        ws = self.resolve(name)
        res = self.sandbox(progress).db_reset(ws)
        return models.DbResetResult(workspace=ws, checkpoint=res.checkpoint,
                                    message=f"{ws}: database reset to the baseline (the previous state is kept "
                                    f"as the automatic checkpoint {res.checkpoint!r})" if res.checkpoint else
                                    f"{ws}: database reset to the baseline")

    def db_checkpoint(self, label: str, force: bool = False, name: str | None = None) -> models.Checkpoint:
        ws = self.resolve(name)
        cp = self.sandbox().db_checkpoint(ws, label, force=force)
        return models.Checkpoint(**cp.to_json())

    def db_restore(self, label: str, name: str | None = None, progress: Progress | None = None) -> models.RestoreResult:
        ws = self.resolve(name)
        self.sandbox(progress).db_restore(ws, label)
        return models.RestoreResult(workspace=ws, label=label, message=f"{ws}: database restored to {label!r} "
                                    "(the state it replaced is kept as an automatic checkpoint)")

    def db_checkpoints(self, name: str | None = None) -> models.CheckpointList:
        ws = self.resolve(name)
        return models.CheckpointList(workspace=ws, checkpoints=[models.Checkpoint(**c.to_json()) for c in
                                                                self.sandbox().db_checkpoints(ws)])

    # -- migrations ----------------------------------------------------------------------------------
    def migrate_up(self, to: str | None = None, name: str | None = None,
                   progress: Progress | None = None) -> models.MigrateUp:
        ws = self.resolve(name)
        return models.MigrateUp(**self.sandbox(progress).migrate_up(ws, to).to_json())

    def migrate_status(self) -> models.MigrateStatus:
        data = self.sandbox().migrate_status().to_json()
        if not self.lead:
            data["workspaces"] = [w for w in data.get("workspaces", []) if w.get("name") == self.workspace]
        return models.MigrateStatus(**data)

    def overview(self) -> models.Overview:
        """The overview, filtered to the pairs that involve the bound workspace (every pair: --lead)."""
        found = self.sandbox().overview(workspace=None if self.lead else self.resolve(None))
        return models.Overview(**_jsonable(found.to_json()))

    def migrate_check(self, name: str | None = None, progress: Progress | None = None) -> models.GateReport:
        ws = self.resolve(name)
        return models.GateReport(**_jsonable(self.sandbox(progress).migrate_check(ws).to_json()))

    def migrate_lint(self, sql: str) -> models.GateReport:
        from ..migrations.gate.static import lint_report
        return models.GateReport(**_jsonable(lint_report(sql).to_json()))

    def migrate_rebase(self, name: str | None = None, progress: Progress | None = None) -> models.Moved:
        ws = self.resolve(name)
        return models.Moved(**self.sandbox(progress).migrate_rebase(ws).to_json())

    def sync(self, name: str | None = None, progress: Progress | None = None) -> models.Moved:
        ws = self.resolve(name)
        return models.Moved(**self.sandbox(progress).sync(ws).to_json())

    def merge_request(self, note: str | None = None, name: str | None = None,
                      progress: Progress | None = None) -> models.MergeRequest:
        ws = self.resolve(name)
        return models.MergeRequest(**_jsonable(self.sandbox(progress).merge_request(ws, note).to_json()))


def _jsonable(data: Any) -> Any:
    """Dataclasses and other objects inside a result, as JSON values."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return _jsonable(dataclasses.asdict(data))
    if isinstance(data, dict):
        return {str(k): _jsonable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_jsonable(v) for v in data]
    if data is None or isinstance(data, (str, int, float, bool)):
        return data
    return str(data)
