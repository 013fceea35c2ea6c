"""The replay's trace and data checks against a real PostgreSQL (host binaries, ``local_pg``)."""

from __future__ import annotations

import uuid
from typing import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from sandbox.databases.base import ConnInfo
from sandbox.migrations import trace
from sandbox.migrations.lint import lint_sql

pytestmark = pytest.mark.postgres

BASE = """
CREATE TABLE users (id integer PRIMARY KEY, email text, name varchar(50), score integer);
INSERT INTO users SELECT g, 'u' || g || '@example.com', 'n' || g, g FROM generate_series(1, 1500) g;
CREATE TABLE tiny (id integer PRIMARY KEY, label text);
INSERT INTO tiny VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE TABLE posts (id integer PRIMARY KEY, user_id integer, title text);
INSERT INTO posts VALUES (1, 1, 'hello'), (2, 2, 'world');
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('0001');
"""


class Databases:
    def __init__(self, pg) -> None:  # type: ignore[no-untyped-def]
        self.pg = pg
        self.made: list[str] = []

    def make(self, extra: str = "") -> ConnInfo:
        name = f"t_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.made.append(name)
        info = conninfo(self.pg.url(name))
        with psycopg.connect(**info.kwargs(), autocommit=True) as conn:
            for stmt in (BASE + extra).split(";\n"):
                if stmt.strip():
                    conn.execute(stmt)
        return info

    def drop(self) -> None:
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            for name in self.made:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def conninfo(url: str) -> ConnInfo:
    u = urlsplit(url)
    return ConnInfo(host=u.hostname or "127.0.0.1", port=u.port or 5432, user=u.username or "",
                    password=u.password or "", dbname=u.path.lstrip("/"))


@pytest.fixture
def dbs(local_pg) -> Iterator[Databases]:  # type: ignore[no-untyped-def]
    d = Databases(local_pg)
    yield d
    d.drop()


def test_volatile_default_rewrites_a_constant_default_does_not(dbs: Databases) -> None:
    base = dbs.make()
    tr = trace.trace(base, "BEGIN;\n-- Running upgrade 0001 -> a001\n"
                           "ALTER TABLE users ADD COLUMN r float DEFAULT random();\n"
                           "ALTER TABLE users ADD COLUMN c integer DEFAULT 0;\n"
                           "UPDATE alembic_version SET version_num='a001' WHERE alembic_version.version_num = '0001';\n"
                           "COMMIT;\n")
    assert tr.failure is None
    volatile, constant, _ = tr.statements
    assert volatile.rewrite and volatile.rewritten == ["public.users"]
    assert not constant.rewrite and constant.rewritten == []
    # the first ALTER takes the lock; the second finds it held already (locks are per transaction)
    assert ("AccessExclusiveLock", "public.users") in {(lk.mode, lk.relation) for lk in volatile.locks}
    assert "public.users" not in {lk.relation for lk in constant.locks}
    assert ("AccessExclusiveLock", "public.users") in {(lk.mode, lk.relation) for lk in constant.holding}
    for st in (volatile, constant):
        assert st.in_transaction and st.held_ms is not None and st.held_ms >= st.duration_ms
    # a later statement of the same transaction holds its locks for less of it (start → the one commit)
    assert volatile.held_ms is not None and constant.held_ms is not None and volatile.held_ms >= constant.held_ms
    assert tr.rows["public.users"] == 1500          # counted exactly: the table is small
    with psycopg.connect(**base.kwargs()) as conn:  # committed, as alembic would
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("a001",)


def test_lock_modes_per_statement_and_new_relations_left_out(dbs: Databases) -> None:
    base = dbs.make()
    tr = trace.trace(base, "CREATE INDEX ix_users_score ON users (score);\n"
                           "ALTER TABLE posts ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id);\n"
                           "CREATE TABLE drafts (id integer);\n"
                           "CREATE INDEX ix_drafts ON drafts (id);\n"
                           "ALTER TABLE users ALTER COLUMN name TYPE varchar(100);\n")
    assert tr.failure is None
    index, fk, create, draft_index, widen = tr.statements

    def modes(st: trace.StatementTrace) -> set[tuple[str, str]]:
        return {(lk.mode, lk.relation) for lk in st.locks}
    assert modes(index) == {("ShareLock", "public.users")}
    assert ("ShareRowExclusiveLock", "public.posts") in modes(fk)
    assert ("ShareRowExclusiveLock", "public.users") in modes(fk)
    assert modes(create) == set() and modes(draft_index) == set()   # nobody else can hold a new table
    assert ("AccessExclusiveLock", "public.users") in modes(widen)
    assert not widen.rewrite                        # varchar(50) → varchar(100) needs no rewrite
    assert index.tables == ["public.users"] and sorted(fk.tables) == ["public.posts", "public.users"]
    # no transaction statement in the SQL: wrapped in one, as alembic runs it online
    assert all(st.in_transaction for st in tr.statements)


def test_a_failing_statement_is_named_and_rolled_back(dbs: Databases) -> None:
    base = dbs.make("UPDATE users SET name = NULL WHERE id <= 3;\n")
    tr = trace.trace(base, "BEGIN;\nALTER TABLE users ADD COLUMN z integer;\n"
                           "ALTER TABLE users ALTER COLUMN name SET NOT NULL;\nCOMMIT;\n")
    assert tr.failure is not None
    assert tr.failure.index == 3 and tr.failure.statement == "ALTER TABLE users ALTER COLUMN name SET NOT NULL"
    assert "null values" in tr.failure.error and tr.failure.sqlstate == "23502" and not tr.failure.committed
    assert "statement 3 `ALTER TABLE users ALTER COLUMN name SET NOT NULL`" in tr.failure.describe()
    with psycopg.connect(**base.kwargs()) as conn:  # rolled back: the ADD COLUMN is gone too
        assert conn.execute("SELECT count(*) FROM information_schema.columns "
                            "WHERE table_name = 'users' AND column_name = 'z'").fetchone() == (0,)


def test_an_autocommit_block_runs_outside_the_transaction(dbs: Databases) -> None:
    base = dbs.make()
    tr = trace.trace(base, "BEGIN;\nALTER TABLE users ADD COLUMN n integer;\nCOMMIT;\n"
                           "CREATE INDEX CONCURRENTLY ix_users_n ON users (n);\n"
                           "BEGIN;\nALTER TABLE tiny ADD COLUMN m integer;\nCOMMIT;\n")
    assert tr.failure is None
    add, concurrently, tiny = tr.statements
    assert add.in_transaction and tiny.in_transaction
    assert not concurrently.in_transaction and concurrently.locks == []   # released before it returns
    assert concurrently.held_ms == concurrently.duration_ms
    with psycopg.connect(**base.kwargs()) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_users_n'").fetchone() == (1,)
    # a failure after a COMMIT says the clone has moved on
    tr = trace.trace(base, "BEGIN;\nALTER TABLE tiny ADD COLUMN q integer;\nCOMMIT;\n"
                           "CREATE UNIQUE INDEX CONCURRENTLY ux ON users ((id % 2));\n")
    assert tr.failure is not None and tr.failure.committed and tr.failure.index == 4


def test_data_checks_name_the_workspaces_whose_rows_break_them(dbs: Databases) -> None:
    base = dbs.make()
    d = dbs.make("UPDATE users SET email = NULL WHERE id IN (1, 2, 3);\n"
                 "UPDATE users SET name = 'dup' WHERE id IN (10, 11);\n"
                 "UPDATE users SET score = -5 WHERE id = 20;\n"
                 "INSERT INTO posts VALUES (3, 9999, 'orphan');\n"
                 "UPDATE users SET name = repeat('x', 30) WHERE id = 30;\n")
    e = dbs.make()
    gone = ConnInfo(host="127.0.0.1", port=1, user="x", password="x", dbname="x")
    sql_text = ("BEGIN;\n"
                "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n"
                "CREATE UNIQUE INDEX ux_users_name ON users (name);\n"
                "ALTER TABLE users ADD CONSTRAINT ck_score CHECK (score >= 0);\n"
                "ALTER TABLE posts ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users;\n"
                "ALTER TABLE users ALTER COLUMN name TYPE varchar(20);\n"
                "COMMIT;\n")
    tr = trace.trace(base, sql_text)
    assert tr.failure is None                       # the baseline itself is clean
    results, notes = trace.probe({"d": d, "e": e, "gone": gone}, tr)
    by_rule = {c.rules[0]: results[(st.index, i)] for st in tr.statements for i, c in enumerate(st.checks)}
    assert by_rule["set-not-null"].fails_on == {"d": 3}
    assert by_rule["add-unique-constraint"].fails_on == {"d": 2}
    assert by_rule["add-check-constraint"].fails_on == {"d": 1}
    assert by_rule["add-foreign-key-validated"].fails_on == {"d": 1}   # the referenced key read from the clone
    assert by_rule["narrow-column-type"].fails_on == {"d": 1}
    assert all(sorted(r.checked) == ["d", "e"] for r in by_rule.values())
    assert notes == ["workspace gone's database did not answer: its data was not checked"]

    # the lint findings of those statements carry the evidence, and say who breaks them
    findings = trace.annotate(lint_sql(sql_text, revision="a001"), "a001", tr, results)
    nn = next(f for f in findings if f.rule == "set-not-null")
    assert nn.evidence is not None and nn.evidence["fails_on"] == {"d": 3}
    assert nn.evidence["checked_on"] == ["d", "e"] and nn.evidence["rows"] == 1500
    assert "would fail on workspace d (3 rows)" in nn.message
    assert {"mode": "AccessExclusiveLock", "relation": "public.users"} in nn.evidence["locks"]
    # a lock-kind finding (validated FK) gets a destructive companion: d's data would break it
    extra = [f for f in findings if f.rule == "fails-on-workspace-data"]
    assert [f.object for f in extra] == ["public.posts"] and extra[0].severity == "error"
    assert extra[0].evidence is not None and extra[0].evidence["fails_on"] == {"d": 1}


def test_a_table_missing_in_a_workspace_is_not_applicable(dbs: Databases) -> None:
    base = dbs.make()
    other = dbs.make("DROP TABLE posts;\n")
    tr = trace.trace(base, "ALTER TABLE posts ALTER COLUMN title SET NOT NULL;\n")
    results, notes = trace.probe({"other": other}, tr)
    (res,) = results.values()
    assert res.checked == [] and res.fails_on == {} and notes == []


def test_expressions_it_cannot_vouch_for_are_not_probed(dbs: Databases) -> None:
    base = dbs.make("CREATE FUNCTION shout(t text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper(t)';\n")
    tr = trace.trace(base, "ALTER TABLE users ADD CONSTRAINT ck_shout CHECK (shout(email) <> '');\n"
                           "ALTER TABLE users ADD CONSTRAINT ck_len CHECK (length(lower(email)) > 3);\n"
                           "CREATE UNIQUE INDEX ux_part ON users (id) WHERE shout(email) <> '';\n")
    assert tr.failure is None
    shout, length, partial = (st.checks[0] for st in tr.statements)
    assert shout.skipped == "an expression it cannot probe safely"    # a user function: never run by sandbox
    assert length.skipped is None and length.build is not None
    assert partial.skipped == "a partial index predicate it cannot probe"
    results, _ = trace.probe({"base": base}, tr)
    assert results[(2, 0)].checked == ["base"] and results[(1, 0)].checked == []


def test_a_backfill_earlier_in_the_revision_stops_the_probe(dbs: Databases) -> None:
    base = dbs.make()
    tr = trace.trace(base, "UPDATE users SET email = '' WHERE email IS NULL;\n"
                           "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n")
    (check,) = tr.statements[1].checks
    assert check.skipped and "writes to public.users" in check.skipped
    assert "public.users" in tr.writes


def test_validate_constraint_is_probed_with_the_definition_on_the_clone(dbs: Databases) -> None:
    extra = "ALTER TABLE users ADD CONSTRAINT ck_score CHECK (score > 0) NOT VALID;\n"
    base = dbs.make(extra)
    d = dbs.make("UPDATE users SET score = 0 WHERE id IN (5, 6);\n" + extra)   # NOT VALID: old rows stay
    tr = trace.trace(base, "ALTER TABLE users VALIDATE CONSTRAINT ck_score;\n")
    assert tr.failure is None
    results, _ = trace.probe({"d": d}, tr)
    assert results[(1, 0)].fails_on == {"d": 2}
    # lint reports nothing for VALIDATE: the failing check becomes its own finding
    findings = trace.annotate([], "a001", tr, results)
    assert [(f.rule, f.object) for f in findings] == [("fails-on-workspace-data", "public.users")]
    assert "would fail on workspace d (2 rows)" in findings[0].message


def test_tiny_tables_are_called_out_on_lock_warnings(dbs: Databases) -> None:
    base = dbs.make()
    sql_text = "CREATE INDEX ix_tiny_label ON tiny (label);\nCREATE INDEX ix_users_email ON users (email);\n"
    tr = trace.trace(base, sql_text)
    findings = trace.annotate(lint_sql(sql_text, revision="r1"), "r1", tr, {})
    by_object = {f.object: f for f in findings if f.rule == "create-index-non-concurrently"}
    tiny, users = by_object["public.tiny"], by_object["public.users"]
    assert tiny.evidence is not None and tiny.evidence["rows"] == 3 and tiny.evidence.get("small_table")
    assert "public.tiny holds 3 rows" in tiny.message
    assert users.evidence is not None and users.evidence["rows"] == 1500 and "small_table" not in users.evidence
    assert tiny.evidence["locks"] == [{"mode": "ShareLock", "relation": "public.tiny"}]
