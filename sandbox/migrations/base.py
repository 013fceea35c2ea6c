"""The migration tool protocol (alembic today; another tool can be added behind it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Revision:
    id: str
    down_revisions: tuple[str, ...]     # empty for a root revision; two or more for a merge revision
    path: Path                          # the revision's file
    message: str = ""

    @property
    def is_merge(self) -> bool:
        return len(self.down_revisions) > 1


class MigrationTool(Protocol):
    """Reads a tree's revisions and runs them. ``tree`` is a checkout (main or a worktree)."""

    name: str

    def available(self, tree: Path) -> bool:
        """True when the tree has this tool's config (e.g. alembic.ini)."""

    def revisions(self, tree: Path) -> dict[str, Revision]: ...

    def heads(self, tree: Path) -> list[str]: ...

    def branch_points(self, tree: Path) -> list[str]: ...

    def chain(self, tree: Path, base: str | None, head: str) -> list[Revision]:
        """Revisions after ``base`` up to ``head``, oldest first."""

    def offline_sql(self, tree: Path, revision: str) -> str:
        """The SQL that upgrading from the revision's parent to it emits (offline mode)."""

    def upgrade(self, tree: Path, url: str, target: str = "heads") -> None: ...

    def downgrade(self, tree: Path, url: str, target: str) -> None: ...

    def current(self, tree: Path, url: str) -> list[str]:
        """Revisions recorded in the database's version table (empty if none)."""

    def set_down_revision(self, revision: Revision, new_down: str) -> None:
        """Rewrite the revision file's down_revision (and its ``Revises:`` line), nothing else."""
