"""sandbox.git.refread: a workspace repository's refs read from its files, or None when unsure
(the caller then fetches). Real git makes the repositories; nothing here runs git on them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.git.refread import read_refs

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


def repo(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "ws"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "f").write_text("x")
    git(path, "add", "f")
    git(path, "commit", "-qm", "one")
    return path, git(path, "rev-parse", "HEAD")


def test_loose_packed_and_head(tmp_path: Path) -> None:
    path, one = repo(tmp_path)
    git(path, "branch", "side")
    git(path, "pack-refs", "--all")
    (path / "f").write_text("y")
    git(path, "commit", "-qam", "two")
    two = git(path, "rev-parse", "HEAD")
    snap = read_refs(path)
    assert snap is not None
    assert snap.refs == {"refs/heads/main": two, "refs/heads/side": one}   # the loose ref wins
    assert snap.head == two
    git(path, "checkout", "-q", "--detach", one)
    assert read_refs(path).head == one  # type: ignore[union-attr]


def test_unborn_head(tmp_path: Path) -> None:
    path, _ = repo(tmp_path)
    git(path, "checkout", "-q", "--orphan", "new")
    snap = read_refs(path)
    assert snap is not None and snap.head is None


def test_unsure_means_none(tmp_path: Path) -> None:
    path, one = repo(tmp_path)
    git(path, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    assert read_refs(path) is None                   # a symbolic ref below refs/
    os.unlink(path / ".git" / "refs" / "heads" / "alias")
    os.symlink("/etc/hostname", path / ".git" / "refs" / "heads" / "link")
    assert read_refs(path) is None                   # a link is never read
    os.unlink(path / ".git" / "refs" / "heads" / "link")
    (path / ".git" / "refs" / "heads" / "main.lock").write_text(one + "\n")
    assert read_refs(path) is None                   # a name git would not take
    os.unlink(path / ".git" / "refs" / "heads" / "main.lock")
    os.mkfifo(path / ".git" / "refs" / "heads" / "fifo")
    assert read_refs(path) is None                   # a FIFO is never opened
    os.unlink(path / ".git" / "refs" / "heads" / "fifo")
    assert read_refs(path) is not None
    (path / ".git" / "reftable").mkdir()
    assert read_refs(path) is None                   # another ref format
