"""Helpers of the fault and load tests: projects, markers in workspace databases, and the
invariants that must hold after any crash (main never half-merged, the baseline at main's head,
nothing left half-done, no debris)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from sandbox import Sandbox

from e2e.conftest import GIT_ENV, add_revision, git, make_demo_repo

KILLED = -signal.SIGKILL


def report(test: str, **figures: Any) -> None:
    """Append one measured line to ``SANDBOX_RELIABILITY_REPORT`` (JSON lines; see figures.py)."""
    target = os.environ.get("SANDBOX_RELIABILITY_REPORT")
    if target:
        with open(target, "a") as fh:
            fh.write(json.dumps({"test": test, **figures}, sort_keys=True) + "\n")


def toml(strategy: str, port_base: int, *, runtime: str = "none", server: str = "local", extra: str = "") -> str:
    return (f'[workspace]\nruntime = "{runtime}"\nports = 5\nport_base = {port_base}\n\n'
            f'[database]\nstrategy = "{strategy}"\nserver = "{server}"\nseed = ["db/seed.sql"]\n{extra}')


def sandbox(repo: Path, *args: str, kill: str | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``kill`` names the kill point (``SANDBOX_KILL_AT``)."""
    extra = {"SANDBOX_KILL_AT": kill} if kill else {}
    return subprocess.run([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **GIT_ENV, "NO_COLOR": "1", "COLUMNS": "200", **extra, **(env or {})})


def ok(res: subprocess.CompletedProcess[str], *codes: int) -> subprocess.CompletedProcess[str]:
    allowed = codes or (0,)
    assert res.returncode in allowed, f"{res.args[5:]} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    return res


def new_project(dest: Path, text: str) -> Path:
    repo = make_demo_repo(dest, text)
    ok(sandbox(repo, "init"))
    return repo


def url(repo: Path, name: str) -> str:
    return Sandbox.open(repo).db_url(name)


def mark(repo: Path, name: str, value: int) -> None:
    with psycopg.connect(url(repo, name), autocommit=True, connect_timeout=5) as c:
        c.execute("CREATE TABLE IF NOT EXISTS marks (v int)")
        c.execute("INSERT INTO marks VALUES (%s)", (value,))


def marks(repo: Path, name: str) -> set[int]:
    with psycopg.connect(url(repo, name), connect_timeout=5) as c:
        if c.execute("SELECT to_regclass('marks')").fetchone() == (None,):
            return set()
        return {int(r[0]) for r in c.execute("SELECT v FROM marks").fetchall()}


def ls(repo: Path) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(ok(sandbox(repo, "ls", "--json")).stdout)}


def checkpoints(repo: Path, name: str) -> list[str]:
    return [str(c["label"]) for c in json.loads(ok(sandbox(repo, "db", "checkpoints", name, "--json")).stdout)]


def main_head_revs(repo: Path) -> list[str]:
    sb = Sandbox.open(repo)
    return sorted(sb.main_heads())


def assert_sound(repo: Path, *, bystanders: dict[str, set[int]] | None = None) -> None:
    """What must hold after any crash once `gc` has run."""
    sb = Sandbox.open(repo)
    # main is never half-merged
    status = git(repo, "status", "--porcelain", "--untracked-files=no")
    assert status == "", status
    assert subprocess.run(["git", "-C", str(repo), "rev-parse", "-q", "--verify", "MERGE_HEAD"],
                          capture_output=True).returncode != 0, "a half-done merge in main"
    # the baseline is at main's head, in the registry and in the database itself
    heads = sorted(sb.main_heads())
    assert [sb.registry.get_meta("baseline_head")] == heads, (sb.registry.get_meta("baseline_head"), heads)
    assert sorted(sb.tool.current(sb.db.baseline())) == heads
    # nothing left half-done, nothing left over
    assert sb.registry.intents() == [], sb.registry.intents()
    assert json.loads(ok(sandbox(repo, "gc", "--dry-run", "--json")).stdout) == []
    names = {r.name for r in sb.registry.all()}
    for res in sb.db.owned():
        assert res.workspace is None or res.workspace in names, res
        assert res.kind != "leftover" and not res.detail.startswith(("interrupted", "scratch", "unlabelled")), res
    rows = ls(repo)
    for name, data in (bystanders or {}).items():
        row = rows[name]
        assert row["state"] == "ready" and row["health"]["ok"] and row["database"]["answers"], row
        assert marks(repo, name) == data, name


def add_main_revision(repo: Path, rev: str) -> None:
    """A new revision on main (committed there), and the baseline rebuilt at it."""
    heads = main_head_revs(repo)
    add_revision(repo, rev, heads[0], f'op.create_table("t_{rev}", sa.Column("id", sa.Integer(), primary_key=True))')
    ok(sandbox(repo, "db", "baseline", "--refresh"))


def add_workspace_revision(repo: Path, name: str, rev: str) -> None:
    """A revision committed in the workspace, on top of main's head."""
    heads = main_head_revs(repo)
    tree = Path(Sandbox.open(repo).record(name).path)
    add_revision(tree, rev, heads[0], f'op.create_table("t_{rev}", sa.Column("id", sa.Integer(), primary_key=True))')
