"""The pytest plugin's database side on a real server: template, pool, and the sweep that tells a
killed run's databases from a live one's (pytest-xdist workers share one server)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import psycopg
import pytest

from sandbox.databases import testdbs
from sandbox.databases.testdbs import TestDatabases


@pytest.fixture
def admin(local_pg: Any) -> str:
    url = local_pg.url()
    yield url
    with psycopg.connect(url, autocommit=True) as c:       # nothing of one test reaches the next
        for (name,) in c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sbxt%'").fetchall():
            c.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _names(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as c:
        return {n for (n,) in c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sbxt%'")}


def _build(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t VALUES (1)")


def test_clones_are_fresh_and_the_template_is_reused(admin: str) -> None:
    builds: list[str] = []
    one = TestDatabases(admin, parts="a", build=_build, events=builds.append)
    tpl = one.prepare()
    a, b = one.take(), one.take()
    assert a.name != b.name
    with psycopg.connect(a.url, autocommit=True) as c:
        c.execute("DROP TABLE t")
    with psycopg.connect(b.url) as c:               # a's change is a's alone
        assert c.execute("SELECT count(*) FROM t").fetchone() == (1,)
    one.give_back(a)
    one.give_back(b)
    one.close()
    assert _names(admin) == {tpl}                   # nothing of the run remains but the template

    two = TestDatabases(admin, parts="a", build=_build, events=builds.append)
    assert two.prepare() == tpl
    two.close()
    assert [e.split()[0] for e in builds] == ["template-build", "template-built"]   # built once

    three = TestDatabases(admin, parts="b", build=_build)                         # a migration edit
    assert three.prepare() != tpl
    three.close()
    assert tpl not in _names(admin)                 # the old template went


def test_a_sweep_keeps_a_live_runs_databases_and_drops_a_killed_ones(admin: str) -> None:
    live = TestDatabases(admin, parts="a", build=_build, pool_size=0)
    live.prepare()
    mine = live.take()
    # a run killed in the middle: its process (and its session's lock) are gone, its clone is not
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from sandbox.databases.testdbs import TestDatabases
        d = TestDatabases({admin!r}, parts="a", build=lambda url: None, pool_size=0)
        d.prepare()
        print(d.take().name, flush=True)
        os._exit(0)
        """)], capture_output=True, text=True, check=True).stdout.strip()
    assert killed in _names(admin)

    other = TestDatabases(admin, parts="a", build=_build, pool_size=0)
    other.prepare()                                 # a second worker's start sweeps
    names = _names(admin)
    assert killed not in names
    assert mine.name in names
    with psycopg.connect(mine.url) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert testdbs.sweep(admin) == []               # both live runs hold their locks
    other.close()
    live.give_back(mine)
    live.close()


def test_a_kept_database_survives_the_run(admin: str) -> None:
    run = TestDatabases(admin, parts="a", build=_build, pool_size=0)
    run.prepare()
    db = run.take()
    run.give_back(db, keep=True)
    run.close()
    kept = testdbs.kept_name(db)
    assert kept.name in _names(admin) and db.name not in _names(admin)
    assert testdbs.sweep(admin) == []               # a kept database is out of the sweep's reach


def test_drop_refuses_a_database_that_is_not_a_test_database(admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as c:
        with pytest.raises(Exception, match="not a test database"):
            testdbs.drop(c, "postgres")


def test_a_run_keeps_its_lock_when_its_working_session_dies(admin: str) -> None:
    """The run's lock sits on a session that runs nothing else: a failure that ends the session
    doing the drops and clones (as concurrent drops by xdist workers did) cannot expose the run's
    databases to another worker's sweep."""
    run = TestDatabases(admin, parts="a", build=_build, pool_size=0)
    run.prepare()
    db = run.take()
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s)", [run._conn().info.backend_pid])
    assert testdbs.sweep(admin) == []
    assert db.name in _names(admin)
    run._admin = None                                   # (psycopg learns of the end only when used)
    run.close()
    assert db.name not in _names(admin)                 # close() still drops what the run made
