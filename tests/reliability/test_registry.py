"""A registry that cannot be misread: emptied, garbage, missing, rolled back or locked is exit 3
with one line saying how to recover; nothing is removed on its strength; doctor --repair
restores the backup, and gc adopts or keeps what the restored registry does not know."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import psycopg
import pytest

from sandbox import Sandbox
from sandbox.registry import Registry, WorkspaceRecord

from .conftest import cli, rtoml


def sandbox(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})})


def tree(repo: Path) -> dict[str, bytes]:
    """Every file outside .git and the registry's own files, with its content."""
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
            if p.is_file() and ".git/" not in str(p) and "registry" not in p.name and "/locks/" not in str(p)}


@pytest.fixture
def project(git_repo: Path) -> Path:
    # a server nobody runs: doctor reports it, and no test leaves a cluster behind
    (git_repo / "sandbox.toml").write_text('[workspace]\nruntime = "none"\n[database]\nstrategy = "template"\n'
                                           'server = "url"\nurl = "postgresql://u@127.0.0.1:9/postgres"\n')
    subprocess.run(["git", "-C", str(git_repo), "add", "sandbox.toml"], check=True)
    subprocess.run(["git", "-C", str(git_repo), "commit", "-qm", "config"], check=True)
    reg = Registry(git_repo / ".sandbox", create=True)
    reg.set_meta("project_id", "test")
    reg.insert(WorkspaceRecord(name="a", branch="a", path=str(git_repo / ".sandbox/worktrees/a"),
                               state="ready", runtime="none"))
    return git_repo


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _garbage(p: Path) -> None:
    p.write_bytes(os.urandom(8192))


def _missing(p: Path) -> None:
    p.unlink()


def _torn(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[:100] + os.urandom(3000) + data[3100:])


def _rows_deleted(p: Path) -> None:
    import sqlite3
    with sqlite3.connect(p) as conn:
        conn.execute("DELETE FROM workspaces")


DAMAGE: dict[str, Callable[[Path], None]] = {"emptied": _empty, "garbage": _garbage, "missing": _missing,
                                             "torn": _torn, "rows-deleted": _rows_deleted}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_registry_is_exit_3_for_every_command_until_repaired(project: Path, damage: str) -> None:
    DAMAGE[damage](project / ".sandbox" / "registry.db")
    before = tree(project)
    for argv in (["ls", "--json"], ["up", "b"], ["gc"], ["gc", "--dry-run"], ["rm", "a", "--force"],
                 ["db", "checkpoint", "a", "x"], ["migrate", "status"], ["env", "a"]):
        res = sandbox(project, *argv)
        assert res.returncode == 3, (argv, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, (argv, res.stderr)
        assert "registry" in lines[0] and "sandbox doctor --repair" in lines[0], lines[0]
        assert res.stdout == ""
    assert tree(project) == before
    doctor = sandbox(project, "doctor")
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr + doctor.stdout
    assert "FAIL registry" in doctor.stdout and "sandbox doctor --repair" in doctor.stdout
    repaired = sandbox(project, "doctor", "--repair")
    assert "ok registry: repaired" in repaired.stdout, repaired.stdout + repaired.stderr
    assert list((project / ".sandbox").glob("registry.db.damaged-*")) or damage == "missing"
    ls = sandbox(project, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    assert Registry(project / ".sandbox").get("a") is not None
    assert Registry(project / ".sandbox").restored


def test_a_registry_rolled_back_behind_its_backup_is_refused(project: Path) -> None:
    state = project / ".sandbox"
    shutil.copy(state / "registry.db", state / "old.db")
    Registry(state).set_meta("x", "1")                      # one more write: the backup moves on
    shutil.copy(state / "old.db", state / "registry.db")
    res = sandbox(project, "ls")
    assert res.returncode == 3 and "older than its backup" in res.stderr


def test_init_does_not_replace_a_damaged_registry(project: Path) -> None:
    _empty(project / ".sandbox" / "registry.db")
    res = sandbox(project, "init")
    assert res.returncode == 3 and "doctor --repair" in res.stderr
    assert (project / ".sandbox" / "registry.db").stat().st_size == 0


def test_a_registry_locked_for_long_is_exit_3_after_a_bounded_wait(project: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(project / '.sandbox' / 'registry.db')!r}, isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        res = sandbox(project, "db", "drop-checkpoint", "a", "x", env={"SANDBOX_REGISTRY_TIMEOUT": "1"})
        res = sandbox(project, "up", "b", env={"SANDBOX_REGISTRY_TIMEOUT": "1"}) if res.returncode != 3 else res
        assert res.returncode == 3, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert "locked by another process" in res.stderr and "waited 1 s" in res.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.postgres
def test_gc_never_removes_on_an_emptied_registry_and_adopts_after_a_restore(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(rtoml("template"))
    cli(repo, "up", "w1")
    state = repo / ".sandbox"
    shutil.copy(state / "registry.backup.db", state / "lagging.db")   # the backup as it was before w2
    cli(repo, "up", "w2")
    sb = Sandbox.open(repo)
    urls = {w: sb.db_url(w) for w in ("w1", "w2")}
    with psycopg.connect(urls["w2"], autocommit=True) as c:
        c.execute("CREATE TABLE keep (v int)")
        c.execute("INSERT INTO keep VALUES (42)")

    (state / "registry.db").write_bytes(b"")                 # the issue's `: > .sandbox/registry.db`
    for argv in (["gc"], ["ls", "--json"]):
        res = cli(repo, *argv, check=3)
        assert len(res.stderr.strip().splitlines()) == 1
    for url in urls.values():                                 # nothing was removed
        with psycopg.connect(url) as c:
            c.execute("SELECT 1")

    # a restore can miss the last operation: make the backup lag behind by `up w2`
    shutil.copy(state / "lagging.db", state / "registry.backup.db")
    cli(repo, "doctor", "--repair", check=None)
    assert [w["name"] for w in __import__("json").loads(cli(repo, "ls", "--json").stdout)] == ["w1"]
    dry = cli(repo, "gc", "--dry-run", "--json")
    actions = __import__("json").loads(dry.stdout)
    assert not [a for a in actions if a["workspace"] == "w2" and a["action"] in ("remove", "release")]
    cli(repo, "gc")
    rec = Sandbox.open(repo).record("w2")                     # adopted, not removed
    assert rec.state == "broken" and "adopted" in (rec.cause or "")
    with psycopg.connect(urls["w2"]) as c:
        assert c.execute("SELECT v FROM keep").fetchone() == (42,)
    cli(repo, "rm", "w2", "--force")
    cli(repo, "gc", "--trust-registry")
    assert not Sandbox.open(repo).registry.restored
