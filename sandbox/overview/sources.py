"""The overview's inputs, taken from a :class:`~sandbox.core.Project` (the facade calls these).

``overview`` and ``review`` read the project through :class:`~sandbox.overview.gather.Sources`;
``watched_paths`` is what a change of which makes the view stale (the dashboard and ``--watch``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core import Project
from ..registry import WorkspaceRecord
from ..requests import Requests
from .gather import Sources, gather
from .gather import review as review_of
from .model import Overview
from .schema import LayoutTool, SchemaReader


def sources(p: Project) -> Sources:
    """What the overview reads: main's repository, the registry's records, briefs and requests."""
    tool = p.tool     # schema facts need to know where a tree keeps its migrations
    reader = SchemaReader(p.root, tool, p.config.state_dir, p.config.migrations.config,
                          p.repos.export) if isinstance(tool, LayoutTool) else None
    requests = Requests(p.registry)
    briefs = requests.briefs()

    def request_for(name: str) -> dict[str, Any] | None:
        return next((r.to_json() for r in requests.open() if r.workspace == name), None)

    return Sources(p.root, p.git, p.registry.all(), p.collect, p.managed_files(), p.registry, reader,
                   p.base_env, p.git.common_dir / "sandbox" / "overview",
                   brief_for=briefs.get, request_for=request_for)


def overview(p: Project, *, workspace: str | None = None) -> Overview:
    """Every workspace against main and every pair against each other; ``workspace``: only the
    pairs that involve it."""
    p.recover_project()
    if workspace is not None:
        p.record(workspace)
    found = gather(sources(p))
    return found.for_workspace(workspace) if workspace is not None else found


def review(p: Project, name: str) -> dict[str, Any]:
    """What a reviewer needs before merging ``name`` (the dashboard's workspace page)."""
    p.record(name)
    return review_of(sources(p), name)


def watched_paths(p: Project) -> list[Path]:
    """What the overview reads: main's refs and index, the registry, every worktree."""
    common = p.git.common_dir
    paths = [common / "HEAD", common / "packed-refs", common / "refs" / "heads", common / "index",
             common / "worktrees", p.config.state_dir / "registry.db",
             p.config.state_dir / "registry.db-wal"]
    rec: WorkspaceRecord
    for rec in p.registry.all():
        tree = Path(rec.path)
        paths.append(tree)
        if p.isolated(rec):     # its own repository: the walk of the tree skips .git
            paths += [tree / ".git" / n for n in ("HEAD", "index", "packed-refs", "refs")]
    return paths
