"""Linting alembic ``--sql`` dumps revision by revision, and ``migrate lint``'s handling of its input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.errors import UsageError
from sandbox.migrations.gate.static import lint_report
from sandbox.migrations.lint import decode_sql, lint_dump, lint_sql

# What `alembic upgrade --sql base:c3` writes with transaction_per_migration (Prefect's env.py).
DUMP = """BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> a1

CREATE TABLE worker (id UUID NOT NULL, name VARCHAR NOT NULL, CONSTRAINT pk_worker PRIMARY KEY (id));

CREATE INDEX idx_heartbeat ON worker (name);

INSERT INTO alembic_version (version_num) VALUES ('a1') RETURNING alembic_version.version_num;

COMMIT;

BEGIN;

-- Running upgrade a1 -> b2

ALTER TABLE worker ADD COLUMN pool VARCHAR;

ALTER TABLE worker DROP COLUMN pool;

UPDATE alembic_version SET version_num='b2' WHERE alembic_version.version_num = 'a1';

COMMIT;

BEGIN;

-- Running upgrade b2 -> c3

DROP INDEX idx_heartbeat;

DROP TABLE worker;

UPDATE alembic_version SET version_num='c3' WHERE alembic_version.version_num = 'b2';

COMMIT;
"""


def rules(findings: list) -> list[tuple[str, str | None, str | None]]:
    return [(f.rule, f.revision, f.object) for f in findings]


# -- splitting --------------------------------------------------------------------------------

def test_dump_is_linted_revision_by_revision() -> None:
    dump = lint_dump(DUMP)
    assert dump.split and dump.revisions == ["a1", "b2", "c3"]
    # the table created by a1 is an existing table for c3; the column added by b2 is new in b2
    assert rules(dump.findings) == [("missing-lock-timeout", "b2", "public.worker"),
                                    ("missing-lock-timeout", "c3", "public.worker"),
                                    ("drop-table", "c3", "public.worker")]
    # in one piece, everything was "created in this migration": the drop is missed
    assert lint_sql(DUMP) == []


def test_dump_findings_match_linting_each_revision_alone() -> None:
    parts = DUMP.split("-- Running upgrade")
    alone = []
    for part, rev in zip(parts[1:], ["a1", "b2", "c3"]):
        alone += lint_sql(part.split("\n", 1)[1], revision=rev)
    # alone, c3 cannot know which table idx_heartbeat belongs to (its name does not say): the dump can
    assert [(r, rev) for r, rev, _ in rules(alone) if r != "drop-index-non-concurrently"] == \
        [(r, rev) for r, rev, _ in rules(lint_dump(DUMP).findings)]
    assert ("drop-index-non-concurrently", "c3", "public.idx_heartbeat") in rules(alone)


def test_merge_root_and_downgrade_markers() -> None:
    sql = ("-- Running upgrade  -> r0\nCREATE TABLE t (a int);\n"
           "-- Running upgrade r0, x9 -> m1\nSET lock_timeout = '1s';\nDROP TABLE t;\n"
           "-- Running downgrade m1 -> r0\nCREATE TABLE t (a int);\nALTER TABLE t RENAME TO u;\n")
    dump = lint_dump(sql)
    assert dump.revisions == ["r0", "m1"]
    assert rules(dump.findings) == [("drop-table", "m1", "public.t")]


def test_session_state_carries_across_revisions() -> None:
    sql = ("SET lock_timeout = '3s';\nBEGIN;\n-- Running upgrade  -> a\nCREATE TABLE t (x int);\nCOMMIT;\n"
           "BEGIN;\n-- Running upgrade a -> b\nCREATE INDEX CONCURRENTLY i ON t (x);\nCOMMIT;\n"
           "-- Running upgrade b -> c\nCREATE INDEX CONCURRENTLY j ON t (x);\nALTER TABLE t DROP COLUMN x;\n")
    assert rules(lint_dump(sql).findings) == [("cannot-run-in-transaction", "b", "public.t"),
                                              ("drop-column", "c", "public.t.x")]


def test_search_path_carries_across_revisions() -> None:
    sql = ("SET search_path TO app;\nSET lock_timeout = '3s';\n-- Running upgrade  -> a\nCREATE TABLE t (x int);\n"
           "-- Running upgrade a -> b\nDROP TABLE t;\n")
    assert rules(lint_dump(sql).findings) == [("drop-table", "b", "app.t")]


def test_syntax_error_stays_in_its_revision_and_names_the_file_line() -> None:
    sql = ("-- Running upgrade  -> a\nCREATE TABLE t (x int);\n"
           "-- Running upgrade a -> b\nALTER TABLE t DROPP COLUMN x;\n"
           "-- Running upgrade b -> c\nSET lock_timeout = '1s';\nDROP TABLE t;\n")
    found = lint_dump(sql).findings
    assert rules(found) == [("syntax-error", "b", None), ("drop-table", "c", "public.t")]
    assert "line 4" in found[0].message and found[0].statement == "ALTER TABLE t DROPP COLUMN x;"


def test_suppression_comment_applies_to_its_own_revision_only() -> None:
    sql = ("SET lock_timeout = '1s';\n-- Running upgrade  -> a\nCREATE TABLE t (x int, y int);\n"
           "-- Running upgrade a -> b\n-- sandbox: allow drop-column reason: unused since v2\nALTER TABLE t DROP COLUMN x;\n"
           "-- Running upgrade b -> c\nALTER TABLE t DROP COLUMN y;\n")
    found = lint_dump(sql).findings
    assert [(f.revision, f.severity, f.suppressed) for f in found] == [
        ("b", "warning", "unused since v2"), ("c", "error", None)]


def test_text_without_markers_is_one_migration() -> None:
    sql = "CREATE TABLE t (x int);\nDROP TABLE t;\nALTER TABLE u DROP COLUMN c;"
    dump = lint_dump(sql)
    assert not dump.split and dump.revisions == []
    assert dump.findings == lint_sql(sql)


def test_a_marker_must_be_a_whole_comment_line() -> None:
    sql = "SELECT '-- Running upgrade a -> b';\nCREATE TABLE t (x int); -- Running upgrade a -> b\nDROP TABLE t;"
    assert not lint_dump(sql).split


# -- the report of `migrate lint` ----------------------------------------------------------------

def test_lint_report_of_a_dump_lists_revisions() -> None:
    data = json.loads(json.dumps(lint_report(DUMP).to_json()))
    assert data["revisions"] == ["a1", "b2", "c3"] and data["ok"] is False
    assert "notes" not in data
    assert [f["revision"] for f in data["findings"]] == ["b2", "c3", "c3"]


def test_lint_report_without_markers_says_so() -> None:
    data = lint_report("ALTER TABLE t ADD COLUMN c int;").to_json()
    assert data["ok"] is True and data["revisions"] == []
    [note] = data["notes"]
    assert "no alembic revision markers" in note


# -- what the dump knows about the schema --------------------------------------------------------

def test_unique_index_extending_a_known_key_through_renames() -> None:
    sql = ("SET lock_timeout = '1s';\n"
           "-- Running upgrade  -> a\nCREATE TABLE block_data (id int PRIMARY KEY, name varchar NOT NULL);\n"
           "CREATE UNIQUE INDEX ix_block_data__name ON block_data (name);\n"
           "-- Running upgrade a -> b\nALTER TABLE block_data RENAME TO block;\n"
           "ALTER TABLE block RENAME COLUMN name TO title;\n"
           "-- Running upgrade b -> c\nDROP INDEX ix_block_data__name;\n"
           "CREATE UNIQUE INDEX uq_block__title_version ON block (title, version);\n"
           "ALTER TABLE block ADD CONSTRAINT uq_block__id_x UNIQUE (id, x);\n"
           "-- Running upgrade c -> d\nCREATE UNIQUE INDEX uq_block__title ON block (title);\n")
    found = rules(lint_dump(sql).findings)
    assert ("add-unique-constraint", "c", "public.block") not in found
    assert found.count(("create-index-non-concurrently", "c", "public.block")) == 2
    # c dropped ix_block_data__name: for d the title key is gone (uq_block__title_version is wider)
    assert ("add-unique-constraint", "d", "public.block") in found


def test_a_key_dropped_in_the_same_revision_still_holds_for_its_rows() -> None:
    sql = ("SET lock_timeout = '1s';\n"
           "-- Running upgrade  -> a\nCREATE TABLE bucket (a int, k varchar, CONSTRAINT uq_bucket__a_k UNIQUE (a, k));\n"
           "-- Running upgrade a -> b\nALTER TABLE bucket DROP CONSTRAINT uq_bucket__a_k;\n"
           "CREATE UNIQUE INDEX uq_bucket__a_t_k ON bucket (a, t, k);\n")
    # the wider key cannot fail; but (a, k) is no longer unique: ON CONFLICT (a, k) breaks
    assert [(f.rule, f.statement) for f in lint_dump(sql).findings] == [
        ("drop-unique-key", "ALTER TABLE bucket DROP CONSTRAINT uq_bucket__a_k"),
        ("create-index-non-concurrently", "CREATE UNIQUE INDEX uq_bucket__a_t_k ON bucket (a, t, k)")]


def test_drop_unique_key_needs_a_known_key_that_nothing_replaces() -> None:
    head = ("SET lock_timeout = '1s';\n-- Running upgrade  -> a\n"
            "CREATE TABLE art (id int, key varchar, CONSTRAINT pk_art PRIMARY KEY (id));\n"
            "CREATE UNIQUE INDEX ix_art__key ON art (key);\n-- Running upgrade a -> b\n")

    def found(body: str) -> list[tuple[str, str | None]]:
        return [(f.rule, f.object) for f in lint_dump(head + body).findings if f.kind == "destructive"]

    # Prefect aa84ac237ce8: the unique index becomes a plain one
    assert found("DROP INDEX ix_art__key;\nCREATE INDEX ix_art__key ON art (key);") == [
        ("drop-unique-key", "public.art")]
    # the same key again (another name, a constraint, a renamed table): nothing is weakened
    assert found("DROP INDEX ix_art__key;\nALTER TABLE art ADD CONSTRAINT uq_art__key UNIQUE (key);") == []
    assert found("ALTER TABLE art DROP CONSTRAINT pk_art;\nALTER TABLE art ADD CONSTRAINT pk2 PRIMARY KEY (id);") == []
    assert found("ALTER TABLE art RENAME TO artifact;\nDROP INDEX ix_art__key;\n"
                 "CREATE UNIQUE INDEX uq ON artifact (key);") == [("rename-table", "public.art")]
    # an unknown index, an index dropped with its table, a key created in the same revision
    assert found("DROP INDEX ix_other;") == []
    assert found("DROP INDEX ix_art__key;\nDROP TABLE art;") == [("drop-table", "public.art")]
    assert [r for r, _ in found("CREATE UNIQUE INDEX u2 ON art (id, key);\nDROP INDEX u2;")] == []
    # linted alone, the revision cannot know ix_art__key was unique
    assert [f.rule for f in lint_sql("SET lock_timeout = '1s'; DROP INDEX ix_art__key;")] == [
        "drop-index-non-concurrently"]


def test_a_key_on_a_dropped_column_no_longer_holds() -> None:
    sql = ("SET lock_timeout = '1s';\n"
           "-- Running upgrade  -> a\nCREATE TABLE t (a int UNIQUE, b int);\n"
           "-- Running upgrade a -> b\nALTER TABLE t DROP COLUMN a;\n"
           "-- Running upgrade b -> c\nCREATE UNIQUE INDEX uq_t__a_b ON t (a, b);\n")
    assert ("add-unique-constraint", "c", "public.t") in rules(lint_dump(sql).findings)


def test_partial_unique_index_is_no_key() -> None:
    sql = ("SET lock_timeout = '1s';\n"
           "-- Running upgrade  -> a\nCREATE TABLE t (a int, b int);\nCREATE UNIQUE INDEX p ON t (a) WHERE b > 0;\n"
           "-- Running upgrade a -> b\nCREATE UNIQUE INDEX uq_t__a_b ON t (a, b);\n")
    assert ("add-unique-constraint", "b", "public.t") in rules(lint_dump(sql).findings)


def test_drop_index_of_a_known_other_table_before_drop_table_is_kept() -> None:
    sql = ("SET lock_timeout = '1s';\n"
           "-- Running upgrade  -> a\nCREATE TABLE orders (id int);\nCREATE TABLE orders_archive (id int);\n"
           "CREATE INDEX ix_orders_archive__id ON orders_archive (id);\n"
           "-- Running upgrade a -> b\nDROP INDEX ix_orders_archive__id;\nDROP TABLE orders;\n")
    # the name contains "orders", but the index is known to be orders_archive's
    assert rules(lint_dump(sql).findings) == [("drop-index-non-concurrently", "b", "public.ix_orders_archive__id"),
                                              ("drop-table", "b", "public.orders")]


# -- input of `migrate lint` ---------------------------------------------------------------------

def test_decode_sql() -> None:
    assert decode_sql("DROP TABLE «t»;".encode(), "f.sql") == "DROP TABLE «t»;"
    assert decode_sql(b"\xef\xbb\xbfDROP TABLE t;", "f.sql") == "DROP TABLE t;"
    with pytest.raises(UsageError, match=r"f\.sql: not UTF-8 text \(byte 0xe9 at offset 8\)") as bad:
        decode_sql("DROP café;".encode("latin-1"), "f.sql")
    assert bad.value.exit_code == 2
    with pytest.raises(UsageError, match=r"stdin: binary input \(a NUL byte at offset 1\)"):
        decode_sql(b"D\x00ROP", "stdin")


@pytest.mark.parametrize("data", [b"\x7fELF\x02\x01\x01\x00\x00", "DROP TABLE café;".encode("latin-1"),
                                  b"\xff\xfeD\x00R\x00O\x00P\x00"], ids=["elf", "latin-1", "utf-16"])
@pytest.mark.parametrize("via", ["file", "stdin"])
def test_cli_bad_input_is_exit_2_with_one_line(tmp_path: Path, data: bytes, via: str) -> None:
    path = tmp_path / "m.sql"
    path.write_bytes(data)
    args, stdin = (["migrate", "lint", str(path)], None) if via == "file" else (["migrate", "lint", "-"], data)
    result = CliRunner().invoke(app, args, input=stdin)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output


def test_cli_lints_a_dump_file_by_revision(tmp_path: Path) -> None:
    path = tmp_path / "upgrade.sql"
    path.write_text(DUMP)
    result = CliRunner().invoke(app, ["migrate", "lint", str(path), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["revisions"] == ["a1", "b2", "c3"]
    assert [(f["rule"], f["revision"]) for f in data["findings"]][-1] == ("drop-table", "c3")
