"""Workspace lifecycle without containers: hooks, crash repair by gc, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from sandbox import Sandbox

from .conftest import GIT_ENV, cli, git, toml_for


@pytest.mark.postgres
def test_setup_hook_failure_leaves_broken_workspace_that_up_retries(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template") + '\n')
    toml = (repo / "sandbox.toml").read_text().replace(
        'ports = 5\n', 'ports = 5\nsetup = ["echo preparing $SANDBOX_WORKSPACE", "test -f ready.flag"]\n'
                        'teardown = ["test -f ready.flag"]\n')
    (repo / "sandbox.toml").write_text(toml)
    git(repo, "commit", "-qam", "hooks")
    res = cli(repo, "up", "a", check=1)
    assert "test -f ready.flag" in res.stderr
    sb = Sandbox.open(repo)
    rec = sb.record("a")
    assert rec.state == "broken" and "ready.flag" in (rec.cause or "")
    log = repo / ".sandbox" / "logs" / "a.setup.log"
    assert "preparing a" in log.read_text()
    assert Path(rec.path).is_dir() and sb.db.exists("a")     # not half-deleted
    (Path(rec.path) / "ready.flag").write_text("")
    git(Path(rec.path), "add", "ready.flag")
    git(Path(rec.path), "commit", "-qm", "flag")
    cli(repo, "up", "a")
    assert sb.record("a").state == "ready"
    # a failing teardown refuses rm (nothing removed) unless --force
    git(Path(rec.path), "rm", "-q", "ready.flag")
    git(Path(rec.path), "commit", "-qm", "unflag")
    git(repo, "merge", "-q", "a")
    res = cli(repo, "rm", "a", check=1)
    assert "teardown" in res.stderr and sb.record("a").state == "ready"
    cli(repo, "rm", "a", "--force")
    assert sb.registry.get("a") is None


@pytest.mark.postgres
def test_sigkilled_up_is_repaired_by_gc(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    sb = Sandbox.open(repo)
    env = {**os.environ, **GIT_ENV}
    for i, delay in enumerate([0.2, 0.5, 0.9, 1.4, 2.0]):
        name = f"k{i}"
        proc = subprocess.Popen([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), "up", name],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        actions = json.loads(cli(repo, "gc", "--json").stdout)
        assert all(a["action"] != "kept" for a in actions), actions
        rec = sb.registry.get(name)
        assert rec is None or rec.state in ("ready", "broken"), rec
        # nothing orphaned: every owned database object belongs to a registered workspace or the baseline
        names = {r.name for r in sb.registry.all()}
        for res in sb.db.owned():
            assert res.workspace is None or res.workspace in names, res
            assert res.detail.split(" ")[0] not in ("scratch", "unlabelled", "baseline-building"), res
        registered = {p for p in sb.git.registered() if p.is_relative_to(sb.config.worktrees_dir)}
        assert registered == {Path(r.path).resolve() for r in sb.registry.all()}
        assert json.loads(cli(repo, "gc", "--dry-run", "--json").stdout) == []
        # and the name can be used again
        cli(repo, "up", name)
        with psycopg.connect(**sb.conninfo(name).kwargs()) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (3,)
        cli(repo, "rm", name, "--delete-branch")


@pytest.mark.postgres
def test_gc_removes_what_the_registry_does_not_know(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    cli(repo, "up", "a", "b")
    sb = Sandbox.open(repo)
    # simulate a registry that lost b (e.g. edited by hand): its database and worktree are orphans
    sb.registry.delete("b")
    dry = json.loads(cli(repo, "gc", "--dry-run", "--json").stdout)
    kinds = {(a["kind"], a["workspace"]) for a in dry}
    assert ("database", "b") in kinds and any(k == "worktree" for k, _ in kinds)
    assert sb.db.exists("b")                        # dry run touched nothing
    cli(repo, "gc")
    assert not sb.db.exists("b")
    assert sb.db.exists("a") and sb.record("a").state == "ready"
    assert json.loads(cli(repo, "gc", "--json").stdout) == []


@pytest.mark.postgres
def test_concurrent_up_processes_get_disjoint_ports_and_databases(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    env = {**os.environ, **GIT_ENV}
    procs = [subprocess.Popen([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), "up", f"p{i}", f"q{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    rows = json.loads(cli(repo, "ls", "--json").stdout)
    assert len(rows) == 8 and all(r["state"] == "ready" for r in rows)
    blocks = [set(range(r["ports"][0], r["ports"][1] + 1)) for r in rows]
    assert sum(len(b) for b in blocks) == len(set().union(*blocks)) == 40
    sb = Sandbox.open(repo)
    for i, r in enumerate(rows):
        with psycopg.connect(**sb.conninfo(r["name"]).kwargs()) as conn:
            conn.execute("CREATE TABLE mine (v int)")
            conn.execute("INSERT INTO mine VALUES (%s)", (i,))
    for i, r in enumerate(rows):
        with psycopg.connect(**sb.conninfo(r["name"]).kwargs()) as conn:
            assert conn.execute("SELECT v FROM mine").fetchall() == [(i,)]
