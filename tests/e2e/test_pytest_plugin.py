"""The pytest plugin inside a real workspace: a database per test, cloned from a template built
from the workspace's migrations and seeds, in the workspace's own snapshot cluster."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import add_revision, cli, toml_for

pytest_plugins = ["pytester"]

TESTS = '''
import pytest

def _one(conn):
    conn.execute("INSERT INTO audit_log (event) VALUES ('x')")
    conn.commit()
    return conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]

def test_a(sandbox_conn):
    assert _one(sandbox_conn) == 1
    assert sandbox_conn.execute("SELECT count(*) FROM users").fetchone()[0] == 3   # the seeds

def test_b(sandbox_conn):
    assert _one(sandbox_conn) == 1

def test_ddl_and_commit(sandbox_db):
    import psycopg
    with psycopg.connect(sandbox_db.url, autocommit=True) as c:
        c.execute("CREATE TABLE mine (x int)")
        c.execute("DROP TABLE users CASCADE")

@pytest.mark.sandbox_db(readonly=True)
def test_read_1(sandbox_db_url):
    assert sandbox_db_url.startswith("postgresql://")

@pytest.mark.sandbox_db(readonly=True)
def test_read_2(sandbox_db_url):
    assert sandbox_db_url.startswith("postgresql://")
'''


@pytest.fixture
def workspace(demo_factory: Any, need_pg: None) -> tuple[Path, Path, dict[str, str]]:
    # ports of their own: other projects on this machine allocate from the default base too
    toml = toml_for("snapshot").replace("ports = 5\n", f"ports = 5\nport_base = {random.randrange(21000, 40000, 10)}\n")
    repo = demo_factory(toml)
    cli(repo, "up", "t1")
    env = json.loads(cli(repo, "env", "t1", "--format", "json").stdout)
    assert "SANDBOX_TEST_DATABASE_URL" in env
    ls = json.loads(cli(repo, "ls", "--json").stdout)
    rows = ls if isinstance(ls, list) else ls.get("workspaces", [])
    tree = Path(next(r for r in rows if r["name"] == "t1")["path"])
    return repo, tree, env


def _plugin_args() -> list[str]:
    """``-p sandbox.pytest_plugin`` unless the installed package already registers it (pytest11)."""
    from importlib.metadata import entry_points
    installed = any(ep.name == "sandbox" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "sandbox.pytest_plugin"]


def _run(pytester: pytest.Pytester, tree: Path, env: dict[str, str], events: Path, *args: str) -> Any:
    for k, v in env.items():
        pytester._monkeypatch.setenv(k, v)
    pytester._monkeypatch.setenv("SANDBOX_TEST_EVENTS", str(events))
    pytester._monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parents[2]),
                                                                 os.environ.get("PYTHONPATH", "")]))
    pytester._monkeypatch.chdir(tree)
    return pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider",
                                         f"--rootdir={tree}", str(tree / "tests_pl"), *args)


def _builds(events: Path) -> list[str]:
    return [line for line in events.read_text().splitlines() if line.startswith("template-built")] \
        if events.exists() else []


def _test_dbs(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as c:
        return [n for (n,) in c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sbxt%'")]


def test_plugin_in_a_workspace(pytester: pytest.Pytester, workspace: tuple[Path, Path, dict[str, str]],
                               tmp_path: Path) -> None:
    repo, tree, env = workspace
    (tree / "tests_pl").mkdir()
    (tree / "tests_pl" / "test_db.py").write_text(TESTS)
    events = tmp_path / "events"
    url = env["SANDBOX_TEST_DATABASE_URL"]

    first = _run(pytester, tree, env, events)
    first.assert_outcomes(passed=5)
    assert len(_builds(events)) == 1
    templates = [n for n in _test_dbs(url) if n.startswith("sbxt_tpl_")]
    assert len(templates) == 1
    assert _test_dbs(url) == templates          # nothing of the run remains but the template

    second = _run(pytester, tree, env, events)
    second.assert_outcomes(passed=5)
    assert len(_builds(events)) == 1           # the template is reused

    # a migration edit rebuilds it: a new table the tests can see
    add_revision(tree, "0002", "0001", 'op.create_table("extra", sa.Column("id", sa.Integer()))')
    (tree / "tests_pl" / "test_extra.py").write_text(
        "def test_extra(sandbox_conn):\n    sandbox_conn.execute('SELECT * FROM extra')\n")
    third = _run(pytester, tree, env, events, "-n", "2")
    third.assert_outcomes(passed=6)
    builds = _builds(events)
    assert len(builds) == 2 and builds[0] != builds[1]       # -n 2: built once, by one worker
    left = _test_dbs(url)
    assert len(left) == 1 and left[0] == builds[1].split()[1]   # the old template is gone too

    # what a killed run leaves (its advisory lock went with its session): gc drops it
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE DATABASE sbxt_0badc0de_1")
    cli(repo, "gc")
    assert _test_dbs(url) == left


def test_keep_failed_keeps_and_names_the_database(pytester: pytest.Pytester,
                                                  workspace: tuple[Path, Path, dict[str, str]],
                                                  tmp_path: Path) -> None:
    repo, tree, env = workspace
    (tree / "tests_pl").mkdir()
    (tree / "tests_pl" / "test_fail.py").write_text(
        "def test_fails(sandbox_conn):\n"
        "    sandbox_conn.execute(\"INSERT INTO audit_log (event) VALUES ('evidence')\")\n"
        "    sandbox_conn.commit()\n"
        "    assert False\n")
    res = _run(pytester, tree, env, tmp_path / "events", "--sandbox-keep-failed")
    res.assert_outcomes(failed=1)
    kept = [n for n in _test_dbs(env["SANDBOX_TEST_DATABASE_URL"]) if n.startswith("sbxt_kept_")]
    assert len(kept) == 1
    res.stdout.fnmatch_lines([f"*kept the database of this test: postgresql://*/{kept[0]}*"])
    assert "@" in res.stdout.str() and env["SANDBOX_TEST_DATABASE_URL"].split("@")[0] not in res.stdout.str()
    with psycopg.connect(env["SANDBOX_TEST_DATABASE_URL"].rsplit("/", 1)[0] + "/" + kept[0]) as c:
        assert c.execute("SELECT event FROM audit_log").fetchall() == [("evidence",)]


@pytest.mark.docker
def test_outside_sandbox_a_throwaway_container(pytester: pytest.Pytester, docker_client: Any,
                                               tmp_path: Path) -> None:
    """No workspace around (CI): the tests run on a container of the local image, then it goes."""
    import shutil

    from tests.e2e.conftest import DEMO
    project = tmp_path / "ci"
    shutil.copytree(DEMO, project)
    (project / "tests_pl").mkdir()
    (project / "tests_pl" / "test_db.py").write_text(TESTS)
    before = {c.id for c in docker_client.containers.list(all=True, ignore_removed=True)}
    pytester._monkeypatch.delenv("SANDBOX_TEST_DATABASE_URL", raising=False)
    res = _run(pytester, project, {}, tmp_path / "events")
    res.assert_outcomes(passed=5)
    assert len(_builds(tmp_path / "events")) == 1
    mine = [c for c in docker_client.containers.list(all=True, ignore_removed=True) if c.id not in before
            and any(k.startswith("org.testcontainers") for k in c.labels)
            and any("sandbox/postgres" in t for t in (c.image.tags if c.image else []))]
    assert mine == []
