"""Deprecated: git moved to :mod:`sandbox.git`. This module re-exports it so that code written
against the old names keeps working until every caller imports from ``sandbox.git``."""

from __future__ import annotations

from .git import (
                  EMPTY_TREE,
                  INITIALIZING,
                  LONG,
                  WS_REFS,
                  GitFailed,
                  IsolatedRepos,
                  UnsavedKind,
                  Worktrees,
                  find_project_root,
                  git_timeout,
)
from .git import Unsaved as TypedUnsaved
from .git.files import chown_tree as _chown_tree
from .git.runner import meaningful as _meaningful
from .git.unsaved import UNCOMMITTED, kind_of, what_of
from .git.unsaved import UnsavedLine as Unsaved

__all__ = [
    "EMPTY_TREE", "INITIALIZING", "LONG", "UNCOMMITTED", "WS_REFS", "GitFailed", "IsolatedRepos", "TypedUnsaved",
    "Unsaved", "UnsavedKind", "Worktrees", "_chown_tree", "_meaningful", "find_project_root", "git_timeout",
    "kind_of", "what_of",
]
