"""AlembicTool against real alembic projects in git repositories and a real PostgreSQL.

Reading is static (nothing imported); running goes through the host runner (the project's
interpreter in a subprocess: here this test run's own, which has alembic). The Docker runner
is covered in tests/e2e and tests/security.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from alembic_project import (
    INITIAL_REVISION,
    add_revision,
    git_commit,
    make_alembic_project,
)
from psycopg import sql

from sandbox.config import parse
from sandbox.databases.base import ConnInfo
from sandbox.errors import DatabaseError, MigrationError, MigrationsMisdirected
from sandbox.migrations.alembic import AlembicTool, rewrite_down_revision, scrub_secrets
from sandbox.migrations.base import MigrationTool, Revision
from sandbox.project import HostProjectRunner

ADD_BIO = 'op.add_column("users", sa.Column("bio", sa.Text()))'
DROP_BIO = 'op.drop_column("users", "bio")'


def ci(url: str) -> ConnInfo:
    """A URL of the test server as the ConnInfo sandbox passes around."""
    from urllib.parse import unquote, urlsplit
    u = urlsplit(url)
    options = None
    if "options=" in u.query:
        options = unquote(u.query.split("options=", 1)[1])
    return ConnInfo(host=u.hostname or "127.0.0.1", port=u.port or 5432, user=unquote(u.username or ""),
                    password=unquote(u.password or ""), dbname=u.path.lstrip("/"), options=options)


@pytest.fixture
def tool(tmp_path: Path) -> AlembicTool:
    config = parse(tmp_path, {"migrations": {"python": sys.executable}}, environ={})
    return AlembicTool(runner=HostProjectRunner(config))


@pytest.fixture
def project(git_repo: Path) -> Path:
    make_alembic_project(git_repo)
    return git_repo


@pytest.fixture
def db(local_pg):  # type: ignore[no-untyped-def]
    """A fresh empty database; yields its URL."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(local_pg.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield local_pg.url(name)
    with psycopg.connect(local_pg.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def worktree(repo: Path, name: str) -> Path:
    path = repo.parent / name
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", name, str(path)], check=True)
    return path


def query(url: str, text: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(text).fetchall()


# -- the revision graph -----------------------------------------------------------------------

def test_is_a_migration_tool(tool: AlembicTool) -> None:
    assert isinstance(tool, AlembicTool)
    _: MigrationTool = tool   # structural check for mypy
    assert tool.name == "alembic"


def test_available(tool: AlembicTool, project: Path, tmp_path: Path) -> None:
    assert tool.available(project)
    assert not tool.available(tmp_path)
    # issue #19: a config that exists but cannot be resolved is never "no migrations": every use
    # of it fails with the reason
    (tmp_path / "alembic.ini").write_text("[alembic]\nsqlalchemy.url = x\n")
    assert tool.available(tmp_path)
    with pytest.raises(MigrationError, match="no script_location"):
        tool.revisions(tmp_path)


def test_linear_history(tool: AlembicTool, project: Path) -> None:
    p1 = add_revision(project, "a1", INITIAL_REVISION, ADD_BIO, DROP_BIO, message="add bio")
    add_revision(project, "a2", "a1", 'op.execute("CREATE TABLE tags (id int)")', message="tags")

    revs = tool.revisions(project)
    assert set(revs) == {INITIAL_REVISION, "a1", "a2"}
    assert revs["a1"] == Revision("a1", (INITIAL_REVISION,), p1, "add bio")
    assert revs[INITIAL_REVISION].down_revisions == ()
    assert tool.heads(project) == ["a2"]
    assert tool.branch_points(project) == []
    assert [r.id for r in tool.chain(project, None, "a2")] == [INITIAL_REVISION, "a1", "a2"]
    assert [r.id for r in tool.chain(project, INITIAL_REVISION, "a2")] == ["a1", "a2"]
    assert tool.chain(project, "a2", "a2") == []


def test_branched_history_and_merge(tool: AlembicTool, project: Path) -> None:
    add_revision(project, "b1", INITIAL_REVISION, ADD_BIO)
    add_revision(project, "c1", INITIAL_REVISION, 'op.execute("CREATE TABLE c (id int)")')
    add_revision(project, "c2", "c1", 'op.execute("CREATE TABLE c2 (id int)")')
    assert tool.heads(project) == ["b1", "c2"]
    assert tool.branch_points(project) == [INITIAL_REVISION]
    assert [r.id for r in tool.chain(project, INITIAL_REVISION, "c2")] == ["c1", "c2"]
    # base on another branch: what head's history has and base's lacks
    assert [r.id for r in tool.chain(project, "b1", "c2")] == ["c1", "c2"]

    add_revision(project, "m1", ("b1", "c2"), "pass", message="merge")
    assert tool.heads(project) == ["m1"]
    assert tool.revisions(project)["m1"].is_merge
    ids = [r.id for r in tool.chain(project, None, "m1")]
    assert ids[0] == INITIAL_REVISION and ids[-1] == "m1"
    assert ids.index("c1") < ids.index("c2")
    merge_sql = tool.offline_sql(project, "m1")
    assert "Running upgrade b1, c2 -> m1" in merge_sql


def test_chain_unknown_revision(tool: AlembicTool, project: Path) -> None:
    with pytest.raises(MigrationError, match="zzz"):
        tool.chain(project, None, "zzz")


def test_new_revisions_in_a_worktree(tool: AlembicTool, project: Path) -> None:
    ws = worktree(project, "ws-a")
    add_revision(ws, "f2", "f1", 'op.execute("CREATE TABLE f2 (id int)")', commit=True)
    add_revision(ws, "f1", INITIAL_REVISION, ADD_BIO, commit=True)
    add_revision(project, "e1", INITIAL_REVISION, 'op.execute("CREATE TABLE e (id int)")', commit=True)

    new = tool.new_revisions(project, ws)
    assert [r.id for r in new] == ["f1", "f2"]
    assert all(r.path.is_relative_to(ws) for r in new)
    assert tool.heads(project) == ["e1"]
    assert tool.heads(ws) == ["f2"]
    assert [r.id for r in tool.new_revisions(ws, project)] == ["e1"]


def test_config_paths_resolve_against_the_tree_not_the_cwd(
        tool: AlembicTool, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "migrations" / "versions").mkdir(parents=True)   # a decoy in the CWD
    monkeypatch.chdir(elsewhere)
    assert set(tool.revisions(project)) == {INITIAL_REVISION}


def test_config_in_a_subdirectory(project: Path) -> None:
    sub = project / "db"
    (sub / "alembic.ini").write_text((project / "alembic.ini").read_text())
    (project / "migrations").rename(sub / "migrations")
    assert set(AlembicTool("db/alembic.ini").revisions(project)) == {INITIAL_REVISION}


# -- offline SQL ------------------------------------------------------------------------------

def test_offline_sql(tool: AlembicTool, project: Path) -> None:
    add_revision(project, "a1", INITIAL_REVISION, ADD_BIO, DROP_BIO)
    add_revision(project, "a2", "a1", 'op.execute("CREATE INDEX ix_users_email ON users (email)")')

    root = tool.offline_sql(project, INITIAL_REVISION)
    assert "CREATE TABLE users" in root and "CREATE TABLE posts" in root

    one = tool.offline_sql(project, "a1")
    assert "ALTER TABLE users ADD COLUMN bio TEXT" in one
    assert "CREATE TABLE users" not in one and "ix_users_email" not in one
    assert "ix_users_email" in tool.offline_sql(project, "a2")
    assert os.environ.get("DATABASE_URL") != "postgresql://sandbox@localhost/offline"


def test_offline_sql_unknown_revision(tool: AlembicTool, project: Path) -> None:
    with pytest.raises(MigrationError):
        tool.offline_sql(project, "nope")


# -- running against PostgreSQL ---------------------------------------------------------------

def test_upgrade_downgrade_current(tool: AlembicTool, project: Path, db: str) -> None:
    add_revision(project, "a1", INITIAL_REVISION, ADD_BIO, DROP_BIO)
    assert tool.current(ci(db)) == []

    assert tool.upgrade(project, ci(db)) == ["a1"]
    assert tool.current(ci(db)) == ["a1"]
    assert ("bio",) in query(db, "SELECT column_name FROM information_schema.columns "
                                 "WHERE table_name = 'users'")
    with psycopg.connect(db) as conn:   # the project's seed applies to the migrated schema
        conn.execute((project / "db" / "seed.sql").read_text())

    tool.downgrade(project, ci(db), INITIAL_REVISION)
    assert tool.current(ci(db)) == [INITIAL_REVISION]
    assert ("bio",) not in query(db, "SELECT column_name FROM information_schema.columns "
                                     "WHERE table_name = 'users'")
    tool.upgrade(project, ci(db), "a1")
    tool.downgrade(project, ci(db), "base")
    assert tool.current(ci(db)) == []


def test_search_path_option_puts_the_version_table_in_that_schema(
        tool: AlembicTool, project: Path, db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA ws_a")
    ws_url = db + "?options=" + quote("-csearch_path=ws_a", safe="")

    tool.upgrade(project, ci(ws_url))
    assert query(db, "SELECT table_schema FROM information_schema.tables "
                     "WHERE table_name IN ('alembic_version', 'users') ORDER BY 1") == [("ws_a",), ("ws_a",)]
    assert tool.current(ci(ws_url)) == [INITIAL_REVISION]
    assert tool.current(ci(db)) == []   # public has no version table


def test_nothing_of_the_project_runs_in_sandbox_s_process(
        tool: AlembicTool, project: Path, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading never imports a revision; running happens in a subprocess whose env.py sees the URL."""
    marker = tmp_path / "imported"
    add_revision(project, "a1", INITIAL_REVISION, ADD_BIO, DROP_BIO)
    rev = next((project / "migrations" / "versions").glob("a1_*"))
    rev.write_text(f"import pathlib, os\npathlib.Path({str(marker)!r}).write_text(str(os.getpid()))\n"
                   + rev.read_text())
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone-else/db")
    modules = set(sys.modules)
    assert tool.heads(project) == ["a1"] and "a1" in tool.revisions(project)
    assert not marker.exists()                       # ls / migrate status: read with ast only
    tool.upgrade(project, ci(db))
    assert marker.exists() and marker.read_text() != str(os.getpid())   # ran, in another process
    assert os.environ["DATABASE_URL"] == "postgresql://someone-else/db"
    assert not {m for m in set(sys.modules) - modules if m.startswith(("alembic", "migrations", "env"))}
    assert not list(project.rglob("__pycache__"))


def test_revision_ids_must_be_literals(tool: AlembicTool, project: Path) -> None:
    add_revision(project, "a1", INITIAL_REVISION, ADD_BIO, DROP_BIO)
    rev = next((project / "migrations" / "versions").glob("a1_*"))
    rev.write_text(rev.read_text().replace("revision: str = 'a1'", "revision: str = 'a' + '1'"))
    with pytest.raises(MigrationError, match="literals"):
        tool.revisions(project)


def test_a_symlinked_revision_outside_the_tree_is_not_read(tool: AlembicTool, project: Path,
                                                           tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.py"
    secret.write_text('revision = "stolen"\ndown_revision = None\n')
    (project / "migrations" / "versions" / "evil.py").symlink_to(secret)
    with pytest.raises(MigrationError, match="outside"):
        tool.revisions(project)


def test_an_env_py_that_ignores_the_url_is_caught(tool: AlembicTool, project: Path, db: str,
                                                   local_pg) -> None:  # type: ignore[no-untyped-def]
    """The migrations land in another database: the target's version table says so, exit 1."""
    other = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(local_pg.url(), autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(other)))
    env_py = project / "migrations" / "env.py"
    env_py.write_text(env_py.read_text().replace("from alembic import context",
                                                 "from alembic import context\n"
                                                 f"context.config.set_main_option('sqlalchemy.url', "
                                                 f"{local_pg.url(other)!r})", 1)
                      .replace('os.environ.get("DATABASE_URL")', "None"))
    with pytest.raises(MigrationsMisdirected) as info:
        tool.upgrade(project, ci(db))
    assert "did not reach" in str(info.value) and info.value.exit_code == 1
    assert "DATABASE_URL" in (info.value.hint or "") and "[workspace.env]" in (info.value.hint or "")
    assert tool.current(ci(db)) == []
    assert tool.current(ci(local_pg.url(other))) == [INITIAL_REVISION]


def test_offline_sql_is_cached_per_file_hash(project: Path, tmp_path: Path) -> None:
    config = parse(tmp_path, {"migrations": {"python": sys.executable}}, environ={})
    runner = HostProjectRunner(config)
    calls: list[int] = []
    original = runner.run

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    runner.run = counting  # type: ignore[method-assign]
    tool = AlembicTool(runner=runner, cache_dir=tmp_path / "cache")
    add_revision(project, "a1", INITIAL_REVISION, ADD_BIO, DROP_BIO)
    first = tool.offline_sql(project, "a1")
    assert tool.offline_sql(project, "a1") == first and len(calls) == 1
    rev = next((project / "migrations" / "versions").glob("a1_*"))
    rev.write_text(rev.read_text().replace('"bio"', '"bio2"'))
    assert "bio2" in tool.offline_sql(project, "a1") and len(calls) == 2


def test_the_offline_cache_follows_helpers_a_revision_imports(project: Path, tmp_path: Path) -> None:
    """The gate replays the SQL it rendered: a helper changed after one check must not leave the
    next check with the old SQL (the revision file itself unchanged, its mtime set back)."""
    config = parse(tmp_path, {"migrations": {"python": sys.executable}}, environ={})
    tool = AlembicTool(runner=HostProjectRunner(config), cache_dir=tmp_path / "cache")
    helper = project / "mig_helpers.py"
    helper.write_text('COL = "bio"\n')
    add_revision(project, "a1", INITIAL_REVISION,
                 'from mig_helpers import COL\nop.add_column("users", sa.Column(COL, sa.Text()))')
    assert 'ADD COLUMN bio ' in tool.offline_sql(project, "a1")
    stat = helper.stat()
    helper.write_text('COL = "xyz"\n')
    os.utime(helper, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert 'ADD COLUMN xyz ' in tool.offline_sql(project, "a1")


def test_two_trees_do_not_share_stale_project_modules(
        tool: AlembicTool, project: Path, local_pg) -> None:  # type: ignore[no-untyped-def]
    env_py = project / "migrations" / "env.py"
    env_py.write_text("from myapp.settings import TABLE\n" + env_py.read_text())
    (project / "myapp").mkdir()
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "settings.py").write_text('TABLE = "from_main"\n')
    add_revision(project, "a1", INITIAL_REVISION,
                 'from myapp.settings import TABLE\nop.execute(f"CREATE TABLE {TABLE} (id int)")')
    git_commit(project, [env_py, project / "myapp", *(project / "migrations" / "versions").glob("a1_*")],
               "myapp")
    ws = worktree(project, "ws-b")
    (ws / "myapp" / "settings.py").write_text('TABLE = "from_ws"\n')

    urls = []
    for tree in (project, ws, project):
        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(local_pg.url(), autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        urls.append(local_pg.url(name))
        tool.upgrade(tree, ci(urls[-1]))
        assert "myapp" not in sys.modules and "myapp.settings" not in sys.modules
    tables = [{r[0] for r in query(u, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'from_%'")}
              for u in urls]
    assert tables == [{"from_main"}, {"from_ws"}, {"from_main"}]


def test_failures_become_migration_errors_without_the_password(
        tool: AlembicTool, project: Path, db: str, local_pg) -> None:  # type: ignore[no-untyped-def]
    add_revision(project, "bad1", INITIAL_REVISION, 'op.execute("SELEC nonsense")')
    with pytest.raises(MigrationError) as info:
        tool.upgrade(project, ci(db))
    assert "syntax error" in str(info.value)
    assert f":{local_pg.password}@" not in str(info.value)

    wrong = ci(db.replace(f":{local_pg.password}@", ":Sup3r-s3cret%25pw@"))
    for call in (lambda: tool.upgrade(project, wrong), lambda: tool.current(wrong)):
        with pytest.raises((MigrationError, DatabaseError)) as info:
            call()
        assert "Sup3r" not in str(info.value) and "s3cret" not in str(info.value)


def test_broken_env_py_is_a_migration_error(tool: AlembicTool, project: Path, db: str) -> None:
    (project / "migrations" / "env.py").write_text("import no_such_module_here\n")
    with pytest.raises(MigrationError, match="no_such_module_here"):
        tool.upgrade(project, ci(db))


def test_scrub_secrets() -> None:
    text = "could not connect to postgresql+psycopg://bob:hunter2@db:5432/x (password=hunter2 host=db)"
    scrubbed = scrub_secrets(text, "postgresql://bob:hunter2@db/x")
    assert "hunter2" not in scrubbed
    assert "postgresql+psycopg://bob:***@db:5432/x" in scrubbed


# -- rewriting down_revision ------------------------------------------------------------------

def _changed_lines(before: bytes, after: bytes) -> list[tuple[bytes, bytes]]:
    b, a = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(b, a) if x != y]


def test_set_down_revision_plain_style(tool: AlembicTool, project: Path) -> None:
    add_revision(project, "a1", INITIAL_REVISION, ADD_BIO)
    path = add_revision(project, "b1", INITIAL_REVISION, 'op.execute("CREATE TABLE b (id int)")',
                        typed=False)
    assert tool.heads(project) == ["a1", "b1"]
    before = path.read_bytes()

    path.write_bytes(rewrite_down_revision(path.read_bytes(), "a1"))
    after = path.read_bytes()
    assert _changed_lines(before, after) == [
        (f"Revises: {INITIAL_REVISION}\n".encode(), b"Revises: a1\n"),
        (f"down_revision = '{INITIAL_REVISION}'\n".encode(), b"down_revision = 'a1'\n")]
    assert tool.heads(project) == ["b1"]
    assert tool.revisions(project)["b1"].down_revisions == ("a1",)


def test_set_down_revision_typed_style_keeps_every_other_byte(tool: AlembicTool, project: Path) -> None:
    add_revision(project, "a1", INITIAL_REVISION, ADD_BIO)
    path = project / "migrations" / "versions" / "b2_typed.py"
    text = (
        '"""typed revision — ünïcode before the value\r\n\r\n'
        f'Revision ID: b2\r\nRevises: {INITIAL_REVISION}\r\nCreate Date: 2024-01-01\r\n\r\n"""\r\n'
        "from typing import Sequence, Union\r\n\r\nfrom alembic import op\r\n\r\n"
        "# a comment mentioning down_revision = 'ba5e0001' and Revises: ba5e0001\r\n"
        'revision: str = "b2"\r\n'
        f'down_revision: Union[str, None] = "{INITIAL_REVISION}"  # the parent\r\n'
        "branch_labels: Union[str, Sequence[str], None] = None\r\n"
        "depends_on: Union[str, Sequence[str], None] = None\r\n\r\n\r\n"
        "def upgrade() -> None:\r\n    op.execute(\"CREATE TABLE b2 (id int)\")  # Revises: x\r\n\r\n\r\n"
        "def downgrade() -> None:\r\n    pass\r\n")
    path.write_bytes(text.encode("utf-8"))
    assert tool.heads(project) == ["a1", "b2"]

    path.write_bytes(rewrite_down_revision(path.read_bytes(), "a1"))
    expected = (text.replace(f"Revises: {INITIAL_REVISION}\r\nCreate", "Revises: a1\r\nCreate")
                .replace(f'None] = "{INITIAL_REVISION}"  # the parent', 'None] = "a1"  # the parent'))
    assert path.read_bytes() == expected.encode("utf-8")
    assert tool.heads(project) == ["b2"]


def test_rewrite_down_revision_of_a_root_and_of_a_merge() -> None:
    root = b'"""root\n\nRevision ID: r\nRevises: \n"""\nrevision = "r"\ndown_revision = None\n'
    assert rewrite_down_revision(root, "p") == (
        b'"""root\n\nRevision ID: r\nRevises: p\n"""\nrevision = "r"\ndown_revision = "p"\n')
    merge = b'"""m\n\nRevises: a, b\n"""\ndown_revision = (\n    "a",\n    "b",\n)\nx = 1\n'
    assert rewrite_down_revision(merge, "c") == b'"""m\n\nRevises: c\n"""\ndown_revision = "c"\nx = 1\n'
    with pytest.raises(ValueError):
        rewrite_down_revision(b"revision = 'x'\n", "c")


def test_a_wrong_view_of_the_revisions_is_not_blamed_on_the_url(project: Path, db: str, tmp_path: Path) -> None:
    """Issue #19: the database is at the real head, but sandbox read the revisions from the wrong
    place (here: a recorded layout pointing at an empty folder). The error says that sandbox's view is
    wrong and where it looked, not "did not reach … honour DATABASE_URL"."""
    import json
    (project / "elsewhere").mkdir()
    layout_file = tmp_path / "alembic-layout.json"
    layout_file.write_text(json.dumps({"config": "alembic.ini", "script_location": "migrations",
                                       "version_locations": ["elsewhere"]}))
    config = parse(tmp_path, {"migrations": {"python": sys.executable}}, environ={})
    tool = AlembicTool(runner=HostProjectRunner(config), layout_file=layout_file)
    with pytest.raises(MigrationError) as info:
        tool.upgrade(project, ci(db))
    assert not isinstance(info.value, MigrationsMisdirected)
    message = str(info.value)
    assert "view of the revisions is wrong" in message and "elsewhere" in message, message
    assert INITIAL_REVISION in message and "DATABASE_URL" not in message
