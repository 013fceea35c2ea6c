"""The migration tool protocol (alembic today; another tool can be added behind it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Protocol

if TYPE_CHECKING:
    from ..databases.base import ConnInfo


@dataclass(frozen=True)
class Revision:
    id: str
    down_revisions: tuple[str, ...]     # empty for a root revision; two or more for a merge revision
    path: Path                          # the revision's file
    message: str = ""
    branch_labels: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()

    @property
    def is_merge(self) -> bool:
        return len(self.down_revisions) > 1


class MigrationTool(Protocol):
    """Reads a tree's revisions (statically) and runs them (in the project's environment).

    ``tree`` is a checkout (main or a workspace's). Running verifies its effect: ``upgrade``
    reads the target database's version table afterwards.
    """

    name: str

    def available(self, tree: Path) -> bool:
        """True when the tree has this tool's config (e.g. alembic.ini)."""

    def revisions(self, tree: Path) -> dict[str, Revision]: ...

    def heads(self, tree: Path) -> list[str]: ...

    def branch_points(self, tree: Path) -> list[str]: ...

    def chain(self, tree: Path, base: str | None, head: str) -> list[Revision]:
        """Revisions after ``base`` up to ``head``, oldest first."""

    def offline_sql(self, tree: Path, revision: str, *, env: Mapping[str, str] | None = None,
                    timeout: float | None = None) -> str:
        """The SQL that upgrading from the revision's parent to it emits (offline mode)."""

    def upgrade(self, tree: Path, db: ConnInfo, target: str = "heads", *, env: Mapping[str, str] | None = None,
                workspace: str | None = None, what: str = "the workspace database",
                timeout: float | None = None) -> list[str]:
        """Upgrade ``db`` to ``target``; raise unless its version table then shows ``target``."""

    def downgrade(self, tree: Path, db: ConnInfo, target: str, *, env: Mapping[str, str] | None = None,
                  workspace: str | None = None) -> list[str]: ...

    def verify(self, db: ConnInfo, expected: list[str], *, what: str = "the workspace database") -> list[str]:
        """Raise unless ``db``'s version table holds exactly ``expected``; returns what it holds."""

    def current(self, db: ConnInfo) -> list[str]:
        """Revisions recorded in the database's version table (empty if none)."""
