"""What the migration gate, the merge queue and rebase/sync work with: :class:`GateContext`.

A small set of collaborators (config, registry, main's git repository, the database strategy, the
migration tool, the project runner, progress) plus the few workspace operations the gate needs,
as callables (:class:`WorkspaceOps`). Never the whole ``Sandbox``: the gate cannot reach for
anything it was not given, and a test can hand it fakes.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

from ..config import Config
from ..databases.base import Strategy
from ..intents import Operation
from ..registry import Registry, WorkspaceRecord
from ..git import LONG, GitFailed, IsolatedRepos, Worktrees, git_timeout
from ..git import call as git_call
from .base import MigrationTool
from .trees import CommittedTrees

_OID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")

if TYPE_CHECKING:
    from ..project import ProjectRunner


class GitResult(NamedTuple):
    """What one git command in main's repository answered."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class WorkspaceOps:
    """The workspace operations the gate needs, given by whoever owns the workspaces' lifecycle."""

    record: Callable[[str], WorkspaceRecord]                 # the record, after recovery; unknown: exit 2
    locked: Callable[[str], contextlib.AbstractContextManager[WorkspaceRecord]]
    operation: Callable[..., contextlib.AbstractContextManager[Operation]]
    collect: Callable[[WorkspaceRecord], None]               # its commits into main's repository
    advance: Callable[[WorkspaceRecord, str], None]          # fast-forward its checkout to a commit
    base_env: Callable[[WorkspaceRecord | None], dict[str, str]]
    managed_files: Callable[[], tuple[str, ...]]
    # ``[workspace] copy`` again (rebase, sync): the generated, git-ignored files the database step may import
    recopy: Callable[[WorkspaceRecord], list[str]] = lambda rec: []


@dataclass
class GateContext:
    """The collaborators of the gate (see the module's docstring). ``tool``, ``db`` and ``runner``
    are made on first use: a status that needs no database never starts one."""

    config: Config
    registry: Registry
    git: Worktrees
    repos: IsolatedRepos
    ws: WorkspaceOps
    progress: Callable[[str], None]
    who: Callable[[], str]
    make_tool: Callable[[], MigrationTool]
    make_db: Callable[[], Strategy]
    make_runner: Callable[[], "ProjectRunner"]
    trees: CommittedTrees = field(init=False)

    def __post_init__(self) -> None:
        self.trees = CommittedTrees(self.root, self.make_tool, self.repos.export, self.branch_shas, self.object_ids,
                                    self.config.state_dir / "gate", self.config.migrations.config)

    @classmethod
    def from_project(cls, project: Any, *,
                     advance: Callable[[WorkspaceRecord, str], None] | None = None) -> "GateContext":
        """The context of a project (``sandbox.core.Project`` or the ``Sandbox`` facade over it): its
        collaborators, read lazily as the project makes them, and its workspace helpers. ``advance``:
        how a workspace's checkout is fast-forwarded (default: the project's ``advance``)."""
        p = project
        ops = WorkspaceOps(record=p.record, locked=p.locked, operation=p.operation, collect=p.collect,
                           advance=advance or p.advance, base_env=p.base_env, managed_files=p.managed_files,
                           recopy=p.recopy)
        return cls(config=p.config, registry=p.registry, git=p.git, repos=p.repos, ws=ops, progress=p.progress,
                   who=_who, make_tool=lambda: p.tool, make_db=lambda: p.db, make_runner=lambda: p.runner)

    from_sandbox = from_project

    # -- the collaborators --------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.git.root

    @property
    def tool(self) -> MigrationTool:
        return self.make_tool()

    @property
    def db(self) -> Strategy:
        return self.make_db()

    @property
    def runner(self) -> "ProjectRunner":
        return self.make_runner()

    @staticmethod
    def isolated(rec: WorkspaceRecord) -> bool:
        """Whether the workspace's checkout is a repository of its own (Docker workspaces)."""
        return bool(rec.data.get("isolated"))

    def enabled(self) -> bool:
        """Whether main has the migration tool's config (else migrations are not coordinated)."""
        return self.tool.available(self.root)

    # -- git in main's repository (trusted) ---------------------------------------------------------
    def run_git(self, *args: str, check: bool = True, input: str | None = None, long: bool = False) -> GitResult:
        """git in MAIN's checkout only (trusted), through the git door; a workspace's repository is
        never read here. ``check``: a non-zero exit raises :class:`GitFailed`. ``long``: a command
        that writes main's checkout (merge) gets the door's longer deadline."""
        res = git_call(self.root, *args, trusted=True, input=input, timeout=git_timeout() * LONG if long else None)
        if check and res.returncode != 0:
            raise GitFailed(tuple(args), res.returncode, str(res.stderr or res.stdout), where=str(self.root))
        return GitResult(res.returncode, str(res.stdout), str(res.stderr))

    def branch_shas(self, branches: list[str]) -> Mapping[str, str]:
        """``<branch>`` → its commit, for every branch asked that exists: one git call."""
        return self.git.branch_shas(branches) if branches else {}

    def object_ids(self, specs: list[str]) -> Mapping[str, str]:
        """``"<commit>:<path>"`` → the id of the object it names, for every one that exists: one git call."""
        if not specs:
            return {}
        res = self.run_git("cat-file", "--batch-check=%(objectname)", check=False, input="\n".join(specs) + "\n")
        lines = res.stdout.splitlines()
        if res.returncode != 0 or len(lines) != len(specs):
            return {}
        return {spec: line for spec, line in zip(specs, lines) if _OID.fullmatch(line)}

    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        return self.run_git("merge-base", "--is-ancestor", ancestor, commit, check=False).returncode == 0


def _who() -> str:
    """Who allowed a destructive merge: the agent, else the user."""
    agent = os.environ.get("SANDBOX_AGENT") or os.environ.get("USER")
    if agent:
        return agent
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no name for this uid: its number
        return str(os.getuid())
