"""The MCP tools' output models: each tool's ``outputSchema`` and structured result.

They mirror the CLI's ``--json`` shapes (CONTRACT.md); keys a model does not name pass through
(``extra="allow"``), so the library can add keys without breaking the schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class WorkspaceInfo(BaseModel):
    """A workspace as its agent sees it; ``brief`` comes first: it is the agent's task."""

    brief: str | None = Field(description="The workspace's goal and context, set by a person")
    name: str
    branch: str
    path: str = Field(description="The worktree: edit files here with your own tools")
    state: str
    runtime: str = Field(description="docker: commands run in the workspace's container; none: on the host")
    ports: list[int] = Field(default_factory=list, description="The workspace's own block of host ports")
    can: list[str] = Field(default_factory=list, description="What this server lets you do")
    cannot: list[str] = Field(default_factory=list, description="What stays with a person")


class WorkspaceList(BaseModel):
    workspaces: list[WorkspaceInfo]


class UpResult(_Open):
    name: str
    ok: bool
    state: str
    created: bool = False


class EnvResult(BaseModel):
    workspace: str
    variables: dict[str, str] = Field(description="DATABASE_URL, PG*, SANDBOX_* and the project's mapped names")


class ExecResult(BaseModel):
    """A finished command. A non-zero ``exit_code`` is a normal result, not an error."""

    exit_code: int
    stdout: str = Field(description="The tail of stdout")
    stderr: str = Field(description="The tail of stderr")
    truncated: bool = Field(description="True when earlier output was dropped from a tail")
    timed_out: bool = Field(description="True when the command was killed at timeout_s")
    duration_s: float


class JobChunk(BaseModel):
    """A background job's output from ``offset`` on (stdout and stderr, interleaved)."""

    id: str
    workspace: str
    argv: list[str]
    output: str
    offset: int = Field(description="Where this chunk starts (characters since the job started)")
    next_offset: int = Field(description="Pass this as offset to read on")
    skipped: int = Field(0, description="Characters dropped before offset (the job's buffer is bounded)")
    running: bool
    exit_code: int | None = None
    stopped: bool = False


class DbResetResult(BaseModel):
    workspace: str
    message: str
    checkpoint: str | None = None      # the automatic checkpoint holding what the reset replaced


class Checkpoint(_Open):
    label: str
    auto: bool = False


class CheckpointList(BaseModel):
    workspace: str
    checkpoints: list[Checkpoint]


class RestoreResult(BaseModel):
    workspace: str
    label: str
    message: str


class MigrateUp(BaseModel):
    workspace: str
    target: str
    before: list[str]
    heads: list[str] = Field(description="The version table of the workspace's database afterwards (verified)")
    applied: list[str] = Field(description="Revisions applied, oldest first")
    noop: bool
    message: str


class Overview(_Open):
    """Main, every workspace against main, and the pairs that involve the calling workspace (all of
    them for ``--lead``): textual conflicts (committed and uncommitted) and schema collisions, each
    with a risk and a sentence saying what will happen and what to do."""

    main: dict[str, Any] = Field(default_factory=dict)
    migrations: bool = True
    workspaces: list[dict[str, Any]] = Field(default_factory=list)
    pairs: list[dict[str, Any]] = Field(default_factory=list)


class MigrateStatus(_Open):
    main_head: str | None = None
    main_heads: list[str] = Field(default_factory=list)
    workspaces: list[dict[str, Any]] = Field(default_factory=list)


class GateReport(_Open):
    """The gate's (or the linter's) report: ``ok`` is false when a finding has severity error."""

    ok: bool
    workspace: str | None = None
    base_head: str | None = None
    revisions: list[str] = Field(default_factory=list)
    findings: list[dict[str, Any]] = Field(default_factory=list)


class Moved(_Open):
    """What ``migrate_rebase`` or ``sync`` did."""

    name: str
    message: str


class MergeRequest(_Open):
    """A recorded request for a person to merge; ``command`` is what they run."""

    id: int
    workspace: str
    branch: str
    commit: str
    note: str | None = None
    ok: bool = Field(description="The gate's result on the judged commit")
    at: str
    command: str
    stale: bool = False
    gate: dict[str, Any] = Field(default_factory=dict)
