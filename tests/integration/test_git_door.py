"""sandbox.git on real git: the runner's error and hardening, batched reads, typed unsaved work,
and the in-container fast-forward (its exec here is a real shell in a real clone)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from sandbox import git as door
from sandbox.errors import WorkspaceError
from sandbox.git import AheadBehind, GitFailed, GitTimedOut, UnsavedKind, Worktrees

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=ENV).stdout


def commit(cwd: Path, name: str) -> None:
    (cwd / name).write_text(name + "\n")
    git(cwd, "add", "-A")
    git(cwd, "commit", "-qm", name)


@pytest.fixture(autouse=True)
def identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        if key != "PATH":
            monkeypatch.setenv(key, value)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(root, "base")
    return root


def test_run_raises_git_failed_with_args_and_stderr(repo: Path) -> None:
    with pytest.raises(GitFailed) as err:
        door.run(repo, "rev-parse", "--verify", "no-such-ref", trusted=True)
    assert err.value.args_run == ("rev-parse", "--verify", "no-such-ref")
    assert err.value.returncode != 0
    assert "fatal" in err.value.stderr


def test_untrusted_calls_run_no_hook(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    door.run(repo, "checkout", "-q", "-b", "x", trusted=False)
    assert not marker.exists()
    door.run(repo, "checkout", "-q", "main", trusted=True)
    assert marker.exists()


def test_timeout_kills_and_raises(repo: Path) -> None:
    fifo = repo / "blocked"
    os.mkfifo(fifo)
    with pytest.raises(GitTimedOut):
        door.call(repo, "hash-object", str(fifo), trusted=False, timeout=0.5)


def test_branch_shas_and_ahead_behind_match_rev_list(repo: Path) -> None:
    for name in ("a", "b", "c"):
        git(repo, "branch", name)
    commit(repo, "main1")
    commit(repo, "main2")
    git(repo, "checkout", "-q", "a")
    commit(repo, "a1")
    git(repo, "checkout", "-q", "-b", "d")
    commit(repo, "d1")
    git(repo, "merge", "-q", "--no-edit", "main")
    git(repo, "checkout", "-q", "--orphan", "lonely")
    git(repo, "rm", "-rfq", ".")
    commit(repo, "alone")
    git(repo, "checkout", "-q", "main")
    wt = Worktrees(repo)
    shas = wt.branch_shas()
    assert shas["a"] == git(repo, "rev-parse", "a").strip()
    assert wt.branch_shas(["a", "missing"]) == {"a": shas["a"]}
    names = ["a", "b", "c", "d", "lonely", "main", "missing"]
    got = wt.ahead_behind(names)
    for name in names[:-1]:
        left, right = git(repo, "rev-list", "--left-right", "--count", f"{name}...main").split()
        assert got[name] == AheadBehind(int(left), int(right)), name
    assert "missing" not in got


def test_ahead_behind_of_many_branches_is_a_fixed_number_of_processes(repo: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):
        git(repo, "checkout", "-q", "-b", f"b{i}", "main")
        commit(repo, f"c{i}")
    git(repo, "checkout", "-q", "main")
    commit(repo, "m")
    wt = Worktrees(repo)
    wt.main_branch()
    spawned: list[list[str]] = []
    real = door.runner._spawn
    monkeypatch.setattr(door.runner, "_spawn", lambda cmd, **kw: spawned.append(cmd) or real(cmd, **kw))
    got = wt.ahead_behind([f"b{i}" for i in range(30)], base="main")
    assert got == {f"b{i}": AheadBehind(1, 1) for i in range(30)}
    assert len(spawned) <= 3


def test_worktree_unsaved_is_typed(repo: Path) -> None:
    wt = Worktrees(repo)
    path = repo.parent / "w"
    wt.add(path, "w", None)
    assert wt.find_unsaved(path) == []
    (path / "base").write_text("changed\n")
    (path / "new").write_text("new\n")
    kinds = {u.subject: u.kind for u in wt.find_unsaved(path)}
    assert kinds == {"base": UnsavedKind.CHANGES, "new": UnsavedKind.UNTRACKED}
    git(path, "stash", "-q", "-u")
    assert [u.kind for u in wt.find_unsaved(path)] == [UnsavedKind.STASH]
    assert [u.what for u in wt.find_unsaved(path)] == ["stash: entries in the worktree's stash"]


def test_fast_forward_in_runs_through_exec(repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(repo, "clone", "-q", str(repo), str(clone))
    commit(repo, "next")
    git(clone, "fetch", "-q", "origin")
    target = git(repo, "rev-parse", "HEAD").strip()
    seen: list[Sequence[str]] = []

    def exec_(argv: Sequence[str], output: Callable[[str], None]) -> int:
        seen.append(argv)
        res = subprocess.run(list(argv), check=False, cwd=clone, capture_output=True, text=True, env=ENV)
        for line in (res.stdout + res.stderr).splitlines():
            output(line)
        return res.returncode

    door.fast_forward_in(exec_, "ws", "main", target)
    assert git(clone, "rev-parse", "HEAD").strip() == target
    assert seen and seen[0][0] == "sh"
    with pytest.raises(WorkspaceError):
        door.fast_forward_in(exec_, "ws", "main", "0" * 40)


def test_collect_many_fetches_only_what_it_must(repo: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Unchanged workspaces are mirrored from their ref files; new commits, and a ref file naming
    an object the workspace never had in main (another workspace's commit), go through git's fetch."""
    from sandbox.runtime.base import unprivileged_ids

    wt = Worktrees(repo)
    repos = door.IsolatedRepos(wt)
    owner = unprivileged_ids() if os.geteuid() == 0 else None
    paths = {n: tmp_path / n for n in ("a", "b", "c")}
    for name, path in paths.items():
        repos.add(path, name, None, owner=owner)

    def ws_git(name: str, *args: str) -> str:
        return git(paths[name], "-c", "safe.directory=*", *args)

    fetched: list[str] = []
    real = repos.collect
    monkeypatch.setattr(repos, "collect", lambda name, path, branch: fetched.append(name) or real(name, path, branch))
    items = [(n, p, n) for n, p in paths.items()]
    assert repos.collect_many(items) == {"a": None, "b": None, "c": None}
    assert fetched == []                                    # nothing new anywhere: no fetch at all
    base = git(repo, "rev-parse", "main").strip()
    assert git(repo, "rev-parse", f"{door.WS_REFS}/a/HEAD").strip() == base

    (paths["b"] / "work-b").write_text("b\n")
    ws_git("b", "add", "-A")
    ws_git("b", "commit", "-qm", "b")
    b_tip = ws_git("b", "rev-parse", "HEAD").strip()
    assert repos.collect_many(items) == {"a": None, "b": None, "c": None}
    assert fetched == ["b"]                                 # only the workspace with new commits
    assert git(repo, "rev-parse", "refs/heads/b").strip() == b_tip

    # c's ref file names b's commit (main has it now): not taken from the file, fetched instead
    (paths["c"] / ".git" / "refs" / "heads" / "c").write_text(b_tip + "\n")
    fetched.clear()
    repos.collect_many(items)
    assert fetched == ["c"]
