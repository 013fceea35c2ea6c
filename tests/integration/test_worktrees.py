"""Worktrees on real git: a `git worktree add` killed half-way is recognised and made afresh."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandbox.git import Worktrees

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=ENV).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for i in range(3):
        (root / f"f{i}.txt").write_text(f"{i}\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "files")
    return root


def killed_add(repo: Path, name: str) -> Path:
    """The state a SIGKILL during `git worktree add -b NAME` leaves (seen with git 2.39 on a
    3,000-file repository killed after 50 ms): the branch exists, the worktree is registered and
    still locked "initializing", and its checkout is partial, so every file shows as deleted."""
    path = repo / ".sandbox" / "worktrees" / name
    git(repo, "worktree", "add", "-q", "--no-checkout", "-b", name, str(path))
    (repo / ".git" / "worktrees" / name / "locked").write_text("initializing")
    return path


def test_a_killed_add_is_recognised_and_holds_no_work(repo: Path) -> None:
    path = killed_add(repo, "x")
    assert git(path, "status", "--porcelain").count("D  ") == 3    # what a naive dirty check sees
    wt = Worktrees(repo)
    assert wt.initializing(path)
    assert wt.dirty(path) == []


def test_add_over_a_killed_add_makes_the_worktree_afresh(repo: Path) -> None:
    path = killed_add(repo, "x")
    wt = Worktrees(repo)
    assert wt.add(path, "x", None) is False          # the branch existed already
    assert not wt.initializing(path)
    assert sorted(p.name for p in path.glob("f*.txt")) == ["f0.txt", "f1.txt", "f2.txt"]
    assert git(path, "status", "--porcelain") == ""
    assert wt.registered()[path.resolve()] == "x"


def test_remove_of_a_killed_add_leaves_no_registration(repo: Path) -> None:
    path = killed_add(repo, "x")
    wt = Worktrees(repo)
    wt.remove(path)
    assert not path.exists()
    assert path.resolve() not in wt.registered()      # prune skips locked entries: it was unlocked
    assert "worktrees/x" not in git(repo, "worktree", "list", "--porcelain")


def test_a_finished_worktree_with_changes_is_not_mistaken_for_a_killed_add(repo: Path) -> None:
    path = repo / ".sandbox" / "worktrees" / "y"
    wt = Worktrees(repo)
    assert wt.add(path, "y", None) is True
    (path / "f0.txt").write_text("changed\n")
    assert not wt.initializing(path)
    assert wt.dirty(path) == [" M f0.txt"]
    git(repo, "worktree", "lock", "--reason", "kept by hand", str(path))
    assert not wt.initializing(path)                  # only git's own add-in-progress lock counts
