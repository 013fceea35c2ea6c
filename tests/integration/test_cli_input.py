"""Bad input: one clear line, exit 2, and nothing changes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def sandbox(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=cwd, capture_output=True, text=True,
                          input=stdin, env={**os.environ, "NO_COLOR": "1"})


def snapshot(repo: Path) -> dict[str, float]:
    return {str(p.relative_to(repo)): p.stat().st_mtime for p in repo.rglob("*") if ".git/" not in str(p)}


def git_state(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "for-each-ref"], capture_output=True, text=True).stdout + \
        subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True, text=True).stdout


@pytest.mark.parametrize("argv", [
    ["up", "x;rm -rf ~"],
    ["up", "../../etc"],
    ["up", "ok", "bad name"],
    ["up", ""],
    ["up", "-- -a"],
    ["env", "../x"],
    ["rm", "a/b"],
    ["db", "url", "$(id)"],
    ["migrate", "check", "x" * 49],
])
def test_invalid_names_exit_2_without_side_effects(git_repo: Path, argv: list[str]) -> None:
    before, refs = snapshot(git_repo), git_state(git_repo)
    res = sandbox(git_repo, *argv)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert snapshot(git_repo) == before
    assert git_state(git_repo) == refs
    assert not (git_repo / ".sandbox").exists()


@pytest.mark.parametrize("toml, key", [
    ("[workspace]\nports = -1\n", "ports"),
    ("[workspace]\nbogus = 1\n", "bogus"),
    ("[database]\nseed = ['../../outside.sql']\n", "seed"),
    ("not toml at all [", "TOML"),
])
def test_invalid_config_exits_2_naming_file_and_key(git_repo: Path, toml: str, key: str) -> None:
    (git_repo / "sandbox.toml").write_text(toml)
    for argv in (["init"], ["up", "a"], ["ls"]):
        res = sandbox(git_repo, *argv)
        assert res.returncode == 2, (argv, res.stderr)
        assert "sandbox.toml" in res.stderr and key in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not (git_repo / ".sandbox").exists()
    assert git_state(git_repo).count("worktree") <= 1


def test_not_initialised_is_exit_2(git_repo: Path) -> None:
    res = sandbox(git_repo, "up", "a")
    assert res.returncode == 2 and "sandbox init" in res.stderr
    assert not (git_repo / ".sandbox").exists()


def test_outside_git_is_exit_2(tmp_path: Path) -> None:
    res = sandbox(tmp_path, "ls")
    assert res.returncode == 2 and "git" in res.stderr


def test_usage_errors_exit_2(git_repo: Path) -> None:
    assert sandbox(git_repo, "init", "--strategy", "zfs").returncode == 2
    assert sandbox(git_repo, "env", "a", "--format", "xml").returncode == 2
    assert sandbox(git_repo, "nope").returncode == 2


def test_lint_needs_no_workspace(tmp_path: Path) -> None:
    res = sandbox(tmp_path, "migrate", "lint", "-", "--json", stdin="ALTER TABLE users DROP COLUMN email;")
    assert res.returncode == 1
    import json
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["workspace"] is None
    assert "drop-column" in [f["rule"] for f in data["findings"]]
    ok = sandbox(tmp_path, "migrate", "lint", "--json", stdin="CREATE TABLE t (id int);")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    missing = sandbox(tmp_path, "migrate", "lint", "nope.sql")
    assert missing.returncode == 2
