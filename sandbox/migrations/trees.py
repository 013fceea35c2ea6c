"""The trees the gate reads: main's checkout, and a workspace's *committed* tree exported from main's
object store into a folder sandbox owns (``.sandbox/gate/``), never the workspace's checkout.

:class:`CommittedTrees` caches, for one command, main's revisions and the exported trees; a
workspace's *new* revisions are those its committed tree has and main's does not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import weakref
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ..errors import MigrationError
from ..git.files import chown_tree
from ..host import process_alive
from ..registry import WorkspaceRecord
from ..runtime.base import unprivileged_ids
from .base import MigrationTool, Revision

# ``(branch) -> sha or None`` for many branches at once (one git call)
BranchShas = Callable[[list[str]], Mapping[str, str]]
# ``"<commit>:<path>"`` -> the object id it names (missing: left out), for many at once (one git call)
ObjectIds = Callable[[list[str]], Mapping[str, str]]


class CommittedTrees:
    """Main's revisions and the committed trees of workspaces, read once per command."""

    def __init__(self, root: Path, tool: Callable[[], MigrationTool], export: Callable[..., None],
                 branch_shas: BranchShas, object_ids: ObjectIds, gate_dir: Path, alembic_config: str) -> None:
        self.root = root
        self._tool = tool
        self._export = export
        self._branch_shas = branch_shas
        self._object_ids = object_ids
        self._same: dict[str, str] = {}            # sha -> an earlier sha with the same migrations
        self.gate_dir = gate_dir
        self.alembic_config = alembic_config
        self._main_cache: tuple[dict[str, Revision], list[str]] | None = None
        self._judged: dict[str, Path] = {}        # workspace -> the exported commit a running check judges
        self._views: dict[str, Path | None] = {}  # sha -> its exported migrations (status, other workspaces)
        self._shas: dict[str, str | None] = {}    # branch -> sha, when read in one batch (status)

    @property
    def tool(self) -> MigrationTool:
        return self._tool()

    def main(self) -> tuple[dict[str, Revision], list[str]]:
        """Main's revisions and heads, read once per command (:meth:`forget_main` after main moved)."""
        if self._main_cache is None:
            self._main_cache = (self.tool.revisions(self.root), self.tool.heads(self.root))
        return self._main_cache

    def main_head(self) -> str | None:
        heads = self.main()[1]
        return heads[0] if len(heads) == 1 else None

    def forget_main(self) -> None:
        self._main_cache = None

    def tree(self, rec: WorkspaceRecord) -> Path:
        """The tree being judged: while a check of ``rec`` runs, its judged commit exported from main's
        object store (:meth:`judging`); otherwise the workspace's checkout (rebase and sync upgrade
        the workspace's own database from its own files; status reads :meth:`revisions_tree`)."""
        return self._judged.get(rec.name) or Path(rec.path)

    def revisions_tree(self, rec: WorkspaceRecord) -> Path | None:
        """Where the workspace's revisions are read: the judged tree during its check, else its
        branch's committed migrations (never its checkout: uncommitted files and a detached HEAD
        do not count). None when the branch does not exist."""
        if rec.name in self._judged:
            return self._judged[rec.name]
        sha = self.branch_sha(rec)
        return self.committed_view(sha) if sha else None

    # -- the committed tree, read from main's object store ------------------------------------------
    def read_branches(self, branches: list[str]) -> None:
        """Resolve many branches in one git call; later :meth:`branch_sha` calls answer from it.

        Commits whose alembic config and migration folders are the same git objects (as main's
        layout places them) share one export (:meth:`committed_view`): one more git call."""
        found = self._branch_shas(branches)
        self._shas.update({b: found.get(b) for b in branches})
        shas = sorted(set(found.values()))
        paths = self._migration_paths()
        if len(shas) < 2 or paths is None:
            return
        ids = self._object_ids([f"{sha}:{p}" for sha in shas for p in paths])
        first: dict[tuple[str | None, ...], str] = {}
        for sha in shas:
            key = tuple(ids.get(f"{sha}:{p}") for p in paths)
            if key[0] is None:
                continue                    # no alembic config on that commit: nothing to share
            self._same[sha] = first.setdefault(key, sha)

    def _migration_paths(self) -> list[str] | None:
        """The alembic config and migration folders main's layout names (relative), or None."""
        tool = self.tool
        try:
            layout = tool.layout(self.root) if hasattr(tool, "layout") else None
        except MigrationError:
            return None
        if layout is None:
            return None
        base = self.root.resolve()
        rels = sorted({os.path.relpath(p, base) for p in (layout.script_location, *layout.version_locations)})
        if any(r == ".." or r.startswith("../") for r in rels):
            return None
        return [self.alembic_config, *("" if r == "." else r for r in rels)]

    def branch_sha(self, rec: WorkspaceRecord, *, fresh: bool = False) -> str | None:
        """The commit ``refs/heads/<branch>`` names in main's repository (after collecting it)."""
        if fresh or rec.branch not in self._shas:
            return self._branch_shas([rec.branch]).get(rec.branch)
        return self._shas[rec.branch]

    def _gate_root(self) -> Path:
        """``.sandbox/gate/``: exported commits, one folder each, named ``…-<pid>``. A folder a killed
        process left behind (its pid gone) is removed here."""
        root = self.gate_dir
        root.mkdir(parents=True, exist_ok=True)
        for left in root.iterdir():
            pid = left.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
                shutil.rmtree(left, ignore_errors=True)
        return root

    def fresh(self, label: str) -> Path:
        dest = self._gate_root() / f"{label}-{os.getpid()}"
        if dest.exists() or dest.is_symlink():
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
        return dest

    def committed_view(self, sha: str) -> Path | None:
        """``sha``'s alembic config and migration folders, exported once per command (cheap: a tree
        listing and the few blobs under those folders). Removed when these trees go."""
        if sha in self._views:
            return self._views[sha]
        same = self._same.get(sha, sha)
        if same != sha:                 # the same migrations as a commit already read
            self._views[sha] = self.committed_view(same)
            return self._views[sha]
        dest = self.fresh(f"view-{sha[:12]}")
        weakref.finalize(self, shutil.rmtree, str(dest), True)
        self._export(sha, dest, only=(self.alembic_config,))
        layout = None
        tool = self.tool
        if hasattr(tool, "layout"):
            try:
                layout = tool.layout(dest)
            except MigrationError:
                layout = None               # a location outside the tree: available() says no, as before
        if layout is not None:          # none: no migrations on the branch (available() says so)
            base = dest.resolve()
            rels = {os.path.relpath(p, base) for p in (layout.script_location, *layout.version_locations)}
            self._export(sha, dest, only=None if "." in rels else tuple(sorted(rels)))
        self._views[sha] = dest
        return dest

    @contextlib.contextmanager
    def judging(self, rec: WorkspaceRecord, sha: str) -> Iterator[Path]:
        """``sha``'s whole tree in a fresh folder sandbox owns, as :meth:`tree` of ``rec`` while it is held."""
        dest = self.fresh(f"{rec.name}-{sha[:12]}")
        try:
            self._export(sha, dest)
            if os.geteuid() == 0:
                # the gate's tests run as the unprivileged container user with the tree writable
                chown_tree(dest, *unprivileged_ids())
            self._judged[rec.name] = dest
            yield dest
        finally:
            self._judged.pop(rec.name, None)
            shutil.rmtree(dest, ignore_errors=True)

    def new_revisions(self, rec: WorkspaceRecord, main_revs: Mapping[str, Revision]) -> list[Revision]:
        """The workspace's revisions that main does not have, oldest first (committed ones only)."""
        tree = self.revisions_tree(rec)
        if tree is None or not tree.exists() or not self.tool.available(tree):
            return []
        return chain_order({k: v for k, v in self.tool.revisions(tree).items() if k not in main_revs})


def chain_order(new: Mapping[str, Revision]) -> list[Revision]:
    """``new``'s revisions, each after the revisions it revises (ids sorted among equals)."""
    ordered: list[Revision] = []
    seen: set[str] = set()

    def visit(rid: str) -> None:
        if rid in seen or rid not in new:
            return
        seen.add(rid)
        for d in new[rid].down_revisions:
            visit(d)
        ordered.append(new[rid])

    for rid in sorted(new):
        visit(rid)
    return ordered


def roots(new: list[Revision]) -> list[Revision]:
    """The new revisions that revise none of the others."""
    ids = {r.id for r in new}
    return [r for r in new if not any(d in ids for d in r.down_revisions)]


def behind_count(main_revs: Mapping[str, Revision], main_head: str | None, base: str | None) -> int:
    """How many main revisions lie after ``base`` up to main's head."""
    if not main_head or base == main_head or (base is not None and base not in main_revs):
        return 0                      # at the head, or on a revision main does not have (no count)
    count = 0
    cur: str | None = main_head
    seen: set[str] = set()
    while cur and cur != base and cur in main_revs and cur not in seen:
        seen.add(cur)
        count += 1
        downs = main_revs[cur].down_revisions
        cur = downs[0] if downs else None
    return count
