"""``sandbox git NAME -- ARGS`` on the host (runtime "none"): git runs hardened (the workspace's
hooks never run) and its exit code is returned; no arguments is bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandbox.errors import UsageError
from sandbox.git.user import in_container, on_host


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "ws"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for key, value in (("user.name", "t"), ("user.email", "t@example.com")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)
    return repo


def test_host_git_runs_without_the_workspace_hooks(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    marker = tmp_path / "hook-ran"
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    assert on_host(repo, ["commit", "-q", "--allow-empty", "-m", "from the host"]) == 0
    assert not marker.exists()
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], check=True, capture_output=True, text=True)
    assert log.stdout.strip() == "from the host"
    assert on_host(repo, ["rev-parse", "--verify", "no-such-ref"]) != 0


def test_container_git_goes_through_the_given_exec(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    assert in_container(lambda argv: seen.append(list(argv)) or 3, ["status", "--short"]) == 3
    assert seen == [["git", "status", "--short"]]


def test_no_arguments_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        on_host(tmp_path, [])
    with pytest.raises(UsageError):
        in_container(lambda argv: 0, [])
