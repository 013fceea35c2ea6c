"""What removing a workspace would lose besides its branch's unmerged commits, as typed values."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Self


class UnsavedKind(enum.Enum):
    CHANGES = "changes"                      # a tracked file differs from the last commit
    UNTRACKED = "untracked"                  # a file git does not track (and does not ignore)
    STASH = "stash"                          # entries in the stash
    DETACHED_COMMITS = "detached_commits"    # HEAD holds commits on neither the branch nor main
    OTHER_BRANCH = "other_branch"            # another branch holds commits on neither

    @property
    def uncommitted(self) -> bool:
        """Work in the files themselves (changes, untracked files), not in commits or stashes."""
        return self in (UnsavedKind.CHANGES, UnsavedKind.UNTRACKED)


@dataclass(frozen=True)
class Unsaved:
    """One thing a workspace holds beyond its branch. Decisions read ``kind``; ``what`` is the
    line people read; ``subject`` is the path, commit or branch it is about (None for a stash)."""

    kind: UnsavedKind
    what: str
    subject: str | None = None

    def __str__(self) -> str:
        return self.what

    def to_json(self) -> dict[str, str | None]:
        return {"kind": self.kind.value, "what": self.what, "subject": self.subject}


def from_porcelain(line: str) -> Unsaved:
    """A ``git status --porcelain`` line (``XY path``) as an :class:`Unsaved`."""
    if line.startswith("??"):
        return Unsaved(UnsavedKind.UNTRACKED, line, line[3:])
    return Unsaved(UnsavedKind.CHANGES, line, line[3:])


def stash(where: str) -> Unsaved:
    return Unsaved(UnsavedKind.STASH, f"stash: entries in the {where}'s stash")


# -- the previous shape, until every caller decides on kinds (the lead removes it with the shim) ----

class UnsavedLine(str):
    """Deprecated: an :class:`Unsaved` as the ``str`` subclass callers used to get (``kind`` is a
    word: ``changed``, ``untracked``, ``stash``, ``detached``, ``branch``)."""

    kind: str
    what: str | None

    def __new__(cls, text: str, kind: str, what: str | None = None) -> Self:
        obj = super().__new__(cls, text)
        obj.kind = kind
        obj.what = what
        return obj


_WORDS = {UnsavedKind.CHANGES: "changed", UnsavedKind.UNTRACKED: "untracked", UnsavedKind.STASH: "stash",
          UnsavedKind.DETACHED_COMMITS: "detached", UnsavedKind.OTHER_BRANCH: "branch"}
UNCOMMITTED = ("changed", "untracked")


def legacy(u: Unsaved) -> UnsavedLine:
    return UnsavedLine(u.what, _WORDS[u.kind], u.subject)


def kind_of(line: str) -> str:
    """Deprecated: an unsaved line's kind word (a plain line counts as uncommitted work)."""
    if isinstance(line, Unsaved):
        return _WORDS[line.kind]
    return line.kind if isinstance(line, UnsavedLine) else "changed"


def what_of(line: str) -> str:
    """Deprecated: the path, commit or branch an unsaved line is about (the line itself when unknown)."""
    if isinstance(line, (Unsaved, UnsavedLine)):
        subject = line.subject if isinstance(line, Unsaved) else line.what
        return subject or str(line)
    return line
