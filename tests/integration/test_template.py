"""The template strategy on a real PostgreSQL (the ``local_pg`` fixture), through UrlServer."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sandbox.checks import OwnedResource
from sandbox.databases.base import ConnInfo
from sandbox.databases.template import TemplateStrategy
from sandbox.databases.urlserver import UrlServer
from sandbox.errors import DatabaseError, ServiceUnavailable
from tests.integration.backends import admin, q, seed, url_context

pytestmark = pytest.mark.postgres

SEED = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, mood mood DEFAULT 'happy');
INSERT INTO items (name) VALUES ('one'), ('two'), ('three');
"""


def make_strategy(local_pg, state: Path) -> TemplateStrategy:  # type: ignore[no-untyped-def]
    return TemplateStrategy(url_context(local_pg, state), UrlServer(local_pg.url()))


def cleanup(strategy: TemplateStrategy) -> None:
    for res in sorted(strategy.owned(), key=lambda r: r.kind != "database"):
        strategy.remove_owned(res)


@pytest.fixture(scope="module")
def tpl(local_pg, tmp_path_factory) -> Iterator[TemplateStrategy]:  # type: ignore[no-untyped-def]
    s = make_strategy(local_pg, tmp_path_factory.mktemp("tpl") / ".sandbox")
    s.build_baseline(seed(SEED))
    yield s
    cleanup(s)


def test_clone_has_baseline_data_and_writes_and_migrations_stay_local(tpl: TemplateStrategy) -> None:
    a, b = tpl.create("iso-a"), tpl.create("iso-b")
    assert a.dbname != b.dbname and a.user != b.user
    assert q(a, "SELECT name FROM items ORDER BY id") == [("one",), ("two",), ("three",)]
    # a migration: the workspace role owns its tables
    q(a, "ALTER TABLE items ADD COLUMN price int")
    q(a, "CREATE TABLE extra (x int)")
    q(a, "INSERT INTO items (name, price) VALUES ('four', 4)")
    q(a, "ALTER TABLE items DROP COLUMN mood")
    assert q(a, "SELECT count(*) FROM items") == [(4,)]
    assert q(b, "SELECT count(*) FROM items") == [(3,)]
    assert q(b, "SELECT to_regclass('extra') IS NULL") == [(True,)]
    assert q(b, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' "
                "AND column_name = 'price'") == [(0,)]
    base = tpl.baseline()
    assert q(base, "SELECT count(*) FROM items") == [(3,)]
    assert q(base, "SELECT to_regclass('extra') IS NULL") == [(True,)]
    # every object belongs to the workspace role; the role is not privileged
    assert q(a, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [(a.user,)]
    assert q(a, "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'public'") == [(a.user,)]
    assert q(a, "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user") \
        == [(False, False, False)]
    # idempotent: a second create keeps the data and the password
    again = tpl.create("iso-a")
    assert again.password == a.password
    assert q(again, "SELECT count(*) FROM items") == [(4,)]


def test_planned_info_is_what_create_returns(tpl: TemplateStrategy) -> None:
    planned = tpl.planned("pl-a")
    try:
        info = tpl.create("pl-a")
        assert info.env() == planned.env()
        assert q(info, "SELECT current_user, current_database()") == [(planned.user, planned.dbname)]
    finally:
        tpl.drop("pl-a")


def test_credentials_of_one_workspace_cannot_reach_another(tpl: TemplateStrategy, local_pg) -> None:  # type: ignore[no-untyped-def]
    a, b = tpl.create("cred-a"), tpl.create("cred-b")
    with pytest.raises(psycopg.OperationalError, match="permission denied|not permitted"):
        q(a.with_db(b.dbname), "SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        q(a.with_db(tpl.baseline_db), "SELECT 1")
    with admin(local_pg) as conn:   # PUBLIC has no CONNECT on the workspace database
        row = conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (b.dbname,)).fetchone()
    assert row == (False,)
    with pytest.raises(psycopg.OperationalError):
        q(ConnInfo(a.host, a.port, a.user, "wrong", a.dbname), "SELECT 1")


def test_reset_restores_data_and_keeps_the_password(tpl: TemplateStrategy) -> None:
    a = tpl.create("reset-a")
    q(a, "DELETE FROM items")
    q(a, "CREATE TABLE junk (x int)")
    fresh = tpl.reset("reset-a")
    assert fresh.password == a.password
    assert q(fresh, "SELECT count(*) FROM items") == [(3,)]
    assert q(fresh, "SELECT to_regclass('junk') IS NULL") == [(True,)]
    assert q(fresh, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [(a.user,)]


def test_checkpoint_round_trip(tpl: TemplateStrategy) -> None:
    a = tpl.create("ckpt-a")
    q(a, "INSERT INTO items (name) VALUES ('saved')")
    info = tpl.checkpoint("ckpt-a", "before-migration")
    assert info.label == "before-migration" and info.size_bytes and info.size_bytes > 0
    q(a, "DROP TABLE items")
    q(a, "CREATE TABLE later (x int)")
    tpl.restore("ckpt-a", "before-migration")
    assert q(a, "SELECT count(*) FROM items") == [(4,)]
    assert q(a, "SELECT to_regclass('later') IS NULL") == [(True,)]
    q(a, "ALTER TABLE items ADD COLUMN after_restore int")   # still owned by the workspace role
    assert [c.label for c in tpl.checkpoints("ckpt-a")] == ["before-migration"]
    assert tpl.checkpoints("iso-a") == []
    tpl.checkpoint("ckpt-a", "before-migration")             # same label: replaced
    assert len(tpl.checkpoints("ckpt-a")) == 1
    with pytest.raises(Exception, match="no checkpoint"):
        tpl.restore("ckpt-a", "nope")


def test_a_checkpoint_cannot_be_opened_with_workspace_credentials(tpl: TemplateStrategy, local_pg) -> None:  # type: ignore[no-untyped-def]
    a = tpl.create("ckpt-b")
    tpl.checkpoint("ckpt-b", "one")
    name = tpl._checkpoint_db("ckpt-b", "one")
    with pytest.raises(psycopg.OperationalError):
        q(a.with_db(name), "SELECT 1")


def test_eight_concurrent_creates(tpl: TemplateStrategy) -> None:
    names = [f"par-{i}" for i in range(8)]
    results: dict[str, ConnInfo] = {}
    errors: list[BaseException] = []

    def up(name: str) -> None:
        try:
            results[name] = tpl.create(name)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=up, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({r.dbname for r in results.values()}) == 8
    for name, info in results.items():
        q(info, "INSERT INTO items (name) VALUES (%s)", (name,))
    for name, info in results.items():
        assert q(info, "SELECT name FROM items WHERE id > 3") == [(name,)]


def test_open_session_on_the_baseline_does_not_break_create(tpl: TemplateStrategy, local_pg) -> None:  # type: ignore[no-untyped-def]
    with admin(local_pg) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(tpl.baseline_db)))
    lingering = admin(local_pg, tpl.baseline_db)
    lingering.execute("BEGIN")
    lingering.execute("SELECT count(*) FROM items")
    try:
        info = tpl.create("busy-base")
        assert q(info, "SELECT count(*) FROM items") == [(3,)]
    finally:
        lingering.close()
        with admin(local_pg) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(tpl.baseline_db)))
    # a reader of baseline() does not get in the way either
    with psycopg.connect(**tpl.baseline().kwargs()) as reader:
        reader.execute("SELECT 1")
        info = tpl.create("busy-base-2")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("INSERT INTO items (name) VALUES ('x')")


def test_update_baseline_reaches_new_clones_only(tpl: TemplateStrategy) -> None:
    old = tpl.create("upd-old")
    tpl.update_baseline(seed("ALTER TABLE items ADD COLUMN added int; INSERT INTO items (name) VALUES ('new')"))
    try:
        new = tpl.create("upd-new")
        assert q(new, "SELECT count(*) FROM items") == [(4,)]
        assert q(old, "SELECT count(*) FROM items") == [(3,)]
        assert q(tpl.baseline(), "SELECT count(*) FROM items") == [(4,)]
        q(new, "ALTER TABLE items DROP COLUMN added")       # owned by the workspace role
    finally:
        tpl.update_baseline(seed("ALTER TABLE items DROP COLUMN added; DELETE FROM items WHERE name = 'new'"))


def test_failed_build_keeps_the_old_baseline(tpl: TemplateStrategy, local_pg) -> None:  # type: ignore[no-untyped-def]
    def broken(info: ConnInfo) -> None:
        seed("CREATE TABLE half (x int)")(info)
        raise RuntimeError("migration failed")

    with pytest.raises(RuntimeError):
        tpl.build_baseline(broken)
    with pytest.raises(RuntimeError):
        tpl.update_baseline(broken)
    info = tpl.create("after-failure")
    assert q(info, "SELECT count(*) FROM items") == [(3,)]
    assert q(info, "SELECT to_regclass('half') IS NULL") == [(True,)]
    assert not [r for r in tpl.owned() if "_tmp_" in r.id or "_old_" in r.id]


def test_scratch_is_a_fresh_clone_removed_on_exit(tpl: TemplateStrategy) -> None:
    with tpl.scratch("gate") as info:
        assert q(info, "SELECT count(*) FROM items") == [(3,)]
        q(info, "DROP TABLE items")
        name = info.dbname
    assert name not in {r.id for r in tpl.owned()}


def test_drop_removes_database_role_checkpoints_and_secret(tpl: TemplateStrategy) -> None:
    a = tpl.create("gone")
    tpl.checkpoint("gone", "x")
    secret = tpl.ctx.state_dir / "secrets" / f"{a.user}.json"
    assert secret.exists() and oct(secret.stat().st_mode & 0o777) == "0o600"
    tpl.drop("gone")
    ids = {r.id for r in tpl.owned()}
    assert a.dbname not in ids and tpl._checkpoint_db("gone", "x") not in ids
    assert not secret.exists() and not tpl.exists("gone")
    tpl.drop("gone")                                         # missing is fine


def test_gc_lists_and_removes_orphans_but_never_foreign_databases(tpl: TemplateStrategy, local_pg) -> None:  # type: ignore[no-untyped-def]
    orphan = tpl.create("orphan")
    tpl.checkpoint("orphan", "c1")
    with admin(local_pg) as conn:
        conn.execute("DROP DATABASE IF EXISTS keepme")
        conn.execute("CREATE DATABASE keepme")
        conn.execute("DROP DATABASE IF EXISTS sbx_otherprj_ws_x")
        conn.execute("CREATE DATABASE sbx_otherprj_ws_x")
    owned = tpl.owned()
    mine = [r for r in owned if r.workspace == "orphan"]
    assert {(r.kind, r.id) for r in mine} >= {("database", orphan.dbname), ("role", orphan.user)}
    assert all(r.id.startswith(f"sbx_{tpl.ctx.project_id}_") for r in owned)
    for r in sorted(mine, key=lambda r: r.kind != "database"):
        tpl.remove_owned(r)
    assert not [r for r in tpl.owned() if r.workspace == "orphan"]
    for bad in ("keepme", "sbx_otherprj_ws_x", "postgres"):
        with pytest.raises(DatabaseError, match="refusing"):
            tpl.remove_owned(OwnedResource(kind="database", id=bad, workspace="x"))
    with admin(local_pg) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        conn.execute("DROP DATABASE keepme")
        conn.execute("DROP DATABASE sbx_otherprj_ws_x")
    assert {"keepme", "sbx_otherprj_ws_x", "postgres"} <= names


def test_names_differing_in_case_get_separate_databases(tpl: TemplateStrategy) -> None:
    upper, lower = tpl.create("Case"), tpl.create("case")
    assert upper.dbname != lower.dbname


def test_import_baseline_plain_and_custom(local_pg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = make_strategy(local_pg, tmp_path / ".sandbox")
    try:
        with admin(local_pg) as conn:
            conn.execute("DROP DATABASE IF EXISTS src_import")
            conn.execute("CREATE DATABASE src_import")
        with admin(local_pg, "src_import") as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b');"
                         "CREATE VIEW tv AS SELECT v FROM t; GRANT SELECT ON t TO pg_monitor;")
        env = {"PGPASSWORD": local_pg.password, "PATH": "/usr/bin:/bin"}
        for fmt, name in (("plain", "d.sql"), ("custom", "d.dump")):
            out = tmp_path / name
            subprocess.run([str(local_pg.bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", str(local_pg.port),
                            "-U", "postgres", f"--format={fmt}", "-f", str(out), "src_import"], check=True, env=env)
            s.import_baseline(out)
            info = s.create(f"imp-{fmt}")
            assert q(info, "SELECT v FROM tv ORDER BY v") == [("a",), ("b",)]
            q(info, "ALTER TABLE t ADD COLUMN w int")
    finally:
        cleanup(s)
        with admin(local_pg) as conn:
            conn.execute("DROP DATABASE IF EXISTS src_import")


def test_unreachable_server_is_service_unavailable(tmp_path: Path) -> None:
    server = UrlServer("postgresql://postgres:s3cret-pw@127.0.0.1:1/postgres")
    with pytest.raises(ServiceUnavailable) as err:
        server.ensure_running()
    assert "s3cret-pw" not in str(err.value) and "s3cret-pw" not in repr(server)
    assert server.attach("net") is None and server.owned() == []
    assert not server.doctor()[0].ok


def test_doctor_reports_the_server(tpl: TemplateStrategy) -> None:
    checks = {c.name: c for c in tpl.doctor()}
    assert checks["template: server"].ok and checks["template: baseline"].ok
    assert checks["template: FILE_COPY"].ok
    assert "template: copy-on-write clone" in checks
