"""``sandbox mcp``: an MCP server over stdio, on the official SDK (``mcp`` 2.x, ``MCPServer``).

This is the only module that imports ``mcp`` (the ``mcp`` extra), and only ``sandbox mcp``
imports it. Each tool is a thin, synchronous wrapper (the SDK runs it in a worker thread, so
calls from one client run concurrently) over :class:`~sandbox.agents.tools.AgentTools`, with a
pydantic output model (its ``outputSchema``) and annotations where they hold.

Errors: a :class:`~sandbox.errors.SandboxError` (gate errors, an unknown workspace, bad input)
becomes a ``ToolError`` carrying sandbox's one-line message; anything else is logged to stderr
with its traceback and answered as a ``ToolError``; the server keeps serving.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

import anyio
import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.stdio import stdio_server
from mcp.types import ToolAnnotations

from ..errors import SandboxError
from . import models
from .stdio import Wire
from .tools import AgentTools

log = logging.getLogger("sandbox.mcp")
T = TypeVar("T")

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
RUN = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
# destructive for the workspace's own database (the state replaced is kept as an automatic checkpoint)
DESTROY = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)
DESTROY_IDEMPOTENT = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                     open_world_hint=False)

NAME_HELP = "The workspace (omit it: the server's own; with --lead: required)"


def _call(what: str, fn: Callable[[], T]) -> T:
    """Expected failures become ToolError with sandbox's message; others are logged, never fatal."""
    try:
        return fn()
    except ToolError:
        raise
    except SandboxError as exc:
        raise ToolError(str(exc)) from exc
    except Exception as exc:
        log.exception("%s failed unexpectedly", what)
        raise ToolError(f"{what}: unexpected error ({type(exc).__name__}: {exc}); the server's stderr has the "
                        "traceback") from exc


def _progress(ctx: Context | None) -> Callable[[str], None]:
    """Report sandbox's progress lines to the client (when it sent a progress token) and to stderr."""
    count = 0
    lock = threading.Lock()

    def report(message: str) -> None:
        nonlocal count
        log.info("%s", message)
        if ctx is None:
            return
        with lock:
            count += 1
            n = count
        try:
            anyio.from_thread.run(ctx.report_progress, n, None, message)
        except Exception:  # noqa: BLE001 - progress is best effort; the work goes on
            log.debug("progress not delivered", exc_info=True)

    return report


Table = list[tuple[Callable[..., Any], str, ToolAnnotations]]


def build(tools: AgentTools) -> MCPServer[Any]:
    """The server with every tool (``overview`` comes with the coordination view)."""
    server: MCPServer[Any] = MCPServer("sandbox", instructions=tools.instructions(), version="0.1.0")
    for fn, name, hints in _workspace_tools(tools) + (_lead_tools(tools) if tools.lead else []):
        server.add_tool(fn, name=name, annotations=hints, structured_output=True)
    return server


def _workspace_tools(tools: AgentTools) -> Table:
    """The tools about one workspace (the bound one, or the one a lead names)."""
    def workspace_info(name: str | None = None) -> models.WorkspaceInfo:
        """The workspace's brief (its goal: read it first), branch, worktree path, state and ports."""
        return _call("workspace_info", lambda: tools.workspace_info(name))

    def env(name: str | None = None) -> models.EnvResult:
        """The workspace's environment as seen from the host: DATABASE_URL, PG*, SANDBOX_* and mapped names."""
        return _call("env", lambda: tools.env(name))

    def exec_(argv: list[str], timeout_s: float = 30.0, name: str | None = None) -> models.ExecResult:
        """Run argv (a list, no shell) in the workspace: its container, or its worktree without one.

        Capped at 50 s (timeout_s); on time-out the command's processes are killed and timed_out is
        true. A non-zero exit_code is a normal result. Use job_start for longer work."""
        return _call("exec", lambda: tools.exec(argv, timeout_s, name))

    def job_start(argv: list[str], name: str | None = None) -> models.JobChunk:
        """Start argv in the background in the workspace; read it with job_read(id, offset)."""
        return _call("job_start", lambda: tools.job_start(argv, name))

    def job_read(id: str, offset: int = 0, wait_s: float = 0.0) -> models.JobChunk:  # noqa: A002
        """A job's output from offset on (pass next_offset to go on), whether it runs, its exit code.

        wait_s (at most 30) waits for new output or the end before answering."""
        return _call("job_read", lambda: tools.job_read(id, offset, wait_s))

    def job_stop(id: str) -> models.JobChunk:  # noqa: A002
        """Stop a job: TERM its process group, KILL it after 5 s."""
        return _call("job_stop", lambda: tools.job_stop(id))

    def db_reset(ctx: Context, name: str | None = None) -> models.DbResetResult:
        """The workspace's database becomes a fresh clone of the baseline (the old state is kept as an
        automatic checkpoint)."""
        return _call("db_reset", lambda: tools.db_reset(name, _progress(ctx)))

    def db_checkpoint(label: str, force: bool = False, name: str | None = None) -> models.Checkpoint:
        """Save the workspace's database as checkpoint LABEL (force: replace an existing one)."""
        return _call("db_checkpoint", lambda: tools.db_checkpoint(label, force, name))

    def db_restore(ctx: Context, label: str, name: str | None = None) -> models.RestoreResult:
        """The workspace's database becomes checkpoint LABEL (the state replaced is kept automatically)."""
        return _call("db_restore", lambda: tools.db_restore(label, name, _progress(ctx)))

    def db_checkpoints(name: str | None = None) -> models.CheckpointList:
        """The workspace database's checkpoints."""
        return _call("db_checkpoints", lambda: tools.db_checkpoints(name))

    def migrate_up(ctx: Context, to: str | None = None, name: str | None = None) -> models.MigrateUp:
        """Apply the workspace's own revisions (its worktree's) to its own database, verified against the
        version table. Never run alembic against another database yourself."""
        return _call("migrate_up", lambda: tools.migrate_up(to, name, _progress(ctx)))

    def migrate_status() -> models.MigrateStatus:
        """Main's migration head and the workspace's new revisions, how far behind it is, conflicts."""
        return _call("migrate_status", tools.migrate_status)

    def overview() -> models.Overview:
        """Which workspaces will collide with yours before anyone merges: overlapping files, predicted
        textual conflicts (uncommitted work included) and schema collisions, with a risk and what to do."""
        return _call("overview", tools.overview)

    def migrate_check(ctx: Context, name: str | None = None) -> models.GateReport:
        """Run the merge gate on the workspace's committed branch, without merging."""
        return _call("migrate_check", lambda: tools.migrate_check(name, _progress(ctx)))

    def migrate_lint(sql: str) -> models.GateReport:
        """Lint raw PostgreSQL migration SQL (alembic --sql output is linted revision by revision)."""
        return _call("migrate_lint", lambda: tools.migrate_lint(sql))

    def migrate_rebase(ctx: Context, name: str | None = None) -> models.Moved:
        """Move the workspace's new revisions onto main's head; its database is rebuilt (old data checkpointed)."""
        return _call("migrate_rebase", lambda: tools.migrate_rebase(name, _progress(ctx)))

    def sync(ctx: Context, name: str | None = None) -> models.Moved:
        """Bring main's new commits and migrations into the workspace and its database."""
        return _call("sync", lambda: tools.sync(name, _progress(ctx)))

    def merge_request(ctx: Context, note: str | None = None, name: str | None = None) -> models.MergeRequest:
        """Run the gate on the committed branch and ask a person to merge it. Never moves main."""
        return _call("merge_request", lambda: tools.merge_request(note, name, _progress(ctx)))

    return [
        (workspace_info, "workspace_info", READ), (env, "env", READ), (exec_, "exec", RUN),
        (job_start, "job_start", RUN), (job_read, "job_read", READ), (job_stop, "job_stop", RUN),
        (db_reset, "db_reset", DESTROY), (db_checkpoint, "db_checkpoint", WRITE),
        (db_restore, "db_restore", DESTROY_IDEMPOTENT), (db_checkpoints, "db_checkpoints", READ),
        (migrate_up, "migrate_up", DESTROY_IDEMPOTENT), (migrate_status, "migrate_status", READ),
        (migrate_check, "migrate_check", READ), (migrate_lint, "migrate_lint", READ),
        (migrate_rebase, "migrate_rebase", DESTROY), (sync, "sync", DESTROY),
        (merge_request, "merge_request", WRITE), (overview, "overview", READ),
    ]


def _lead_tools(tools: AgentTools) -> Table:
    """What only ``--lead`` adds: every workspace, and making new ones."""
    def workspace_list() -> models.WorkspaceList:
        """Every workspace with its brief."""
        return _call("workspace_list", tools.workspace_list)

    def workspace_up(ctx: Context, name: str, brief: str | None = None) -> models.UpResult:
        """Create a workspace (or start it again), optionally with its brief."""
        return _call("workspace_up", lambda: tools.workspace_up(name, brief, _progress(ctx)))

    return [(workspace_list, "workspace_list", READ),
            (workspace_up, "workspace_up", ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                                           idempotent_hint=True, open_world_hint=False))]


async def _serve(server: MCPServer[Any], wire: Wire) -> None:
    reader = io.TextIOWrapper(io.FileIO(wire.input_fd, "rb", closefd=True), encoding="utf-8", errors="replace")
    writer = io.TextIOWrapper(io.FileIO(wire.output_fd, "wb", closefd=True), encoding="utf-8",
                              line_buffering=True, write_through=True)
    async with stdio_server(stdin=anyio.wrap_file(reader), stdout=anyio.wrap_file(writer)) as (read, write):
        low = server._lowlevel_server    # the SDK's run_stdio_async claims fd 0/1 itself; ours are claimed
        await low.run(read, write, low.create_initialization_options())


def serve(project: Path | None, *, workspace: str | None, lead: bool, wire: Wire) -> None:
    """Run the server until the client closes stdin."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="sandbox mcp: %(message)s")
    tools = AgentTools.open(project, workspace=workspace, lead=lead)
    server = build(tools)
    try:
        anyio.run(_serve, server, wire)
    finally:
        tools.close()
