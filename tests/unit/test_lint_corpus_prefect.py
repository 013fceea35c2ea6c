"""A real history: Prefect's PostgreSQL alembic revisions, rendered offline into one dump.

``tests/corpus/prefect/labels.json`` says, statement by statement, what is really destructive
(read by hand, see its ``about``). These tests hold the linter to it in both directions, per
revision: every destructive statement is found (every DROP and RENAME of a table or column above
all), nothing else is reported as destructive except the one documented false positive, and the
false positives fixed for issue #12 stay fixed.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from pglast import ast, enums, parse_sql

from sandbox.migrations.gate.static import lint_report
from sandbox.migrations.lint import lint_dump, lint_sql, split_dump

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "prefect"
SQL = (CORPUS / "postgresql-upgrade.sql").read_text()
LABELS = json.loads((CORPUS / "labels.json").read_text())["statements"]
DUMP = lint_dump(SQL)

# The one destructive finding the labels call false: (checksum) was unique, but the revision that
# made it so (1c9390e2f9c6) reads the database and cannot be rendered offline.
KNOWN_FALSE_POSITIVES = {("2d5e000696f1", "add-unique-constraint",
                          "CREATE UNIQUE INDEX uq_block_schema__checksum_version ON block_schema (checksum, version)")}
# DELETE ... WHERE removes data other workspaces may rely on: destructive by policy (issue 15), where
# the labels judge the schema only.
KNOWN_FALSE_POSITIVES |= {
    ("7218aad17905", "delete-rows",
     "DELETE FROM block_document_reference WHERE parent_block_document_id = reference_block_document_id"),
    ("e905fd199258", "delete-rows", "DELETE FROM block_type WHERE name = 'Debug Print Notification'")}
# ... and the one miss, for the same reason.
KNOWN_MISSES = {("2d5e000696f1", "DROP INDEX uq_block_schema__checksum")}


def norm(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip().rstrip(";").strip()


def destructive_found() -> dict[str | None, set[tuple[str, str]]]:
    out: dict[str | None, set[tuple[str, str]]] = defaultdict(set)
    for f in DUMP.findings:
        if f.kind == "destructive":
            out[f.revision].add((f.rule, norm(f.statement)))
    return out


def test_the_dump_is_split_into_its_revisions() -> None:
    markers = re.findall(r"(?m)^-- Running upgrade .*-> (\w+)$", SQL)
    assert len(markers) == 102 and DUMP.split and DUMP.revisions == markers
    assert {f.revision for f in DUMP.findings} <= set(markers)
    report = lint_report(SQL).to_json()
    assert report["revisions"] == markers and "notes" not in report


def test_every_labelled_destructive_statement_is_found_in_its_revision() -> None:
    found = destructive_found()
    missed = [(e["revision"], e["statement"]) for e in LABELS
              if e["destructive"] and not any(s == norm(e["statement"]) for _, s in found[e["revision"]])]
    assert set(missed) == KNOWN_MISSES


def test_nothing_else_is_reported_destructive() -> None:
    truth = {(e["revision"], norm(e["statement"])) for e in LABELS if e["destructive"]}
    extra = {(rev, rule, stmt) for rev, found in destructive_found().items() for rule, stmt in found
             if (rev, stmt) not in truth}
    assert extra == KNOWN_FALSE_POSITIVES


def _drops_and_renames() -> list[tuple[str | None, str, str]]:
    """(revision, statement, rule it must raise) for every DROP/RENAME of a table or column, found
    by PostgreSQL's parser rather than by the labels, so a label mistake cannot hide a miss."""
    out = []
    for revision, start, end in split_dump(SQL) or []:
        part = SQL[start:end]
        for raw in parse_sql(part):
            stmt, loc = raw.stmt, raw.stmt_location or 0
            text = norm(re.sub(r"(?m)^\s*--.*$", "", part[loc:loc + raw.stmt_len if raw.stmt_len else None]))
            rule = None
            if isinstance(stmt, ast.DropStmt) and stmt.removeType == enums.ObjectType.OBJECT_TABLE:
                rule = "drop-table"
            elif isinstance(stmt, ast.RenameStmt) and stmt.renameType == enums.ObjectType.OBJECT_TABLE:
                rule = "rename-table"
            elif isinstance(stmt, ast.RenameStmt) and stmt.renameType == enums.ObjectType.OBJECT_COLUMN:
                rule = "rename-column"
            elif isinstance(stmt, ast.AlterTableStmt) and any(
                    c.subtype == enums.AlterTableType.AT_DropColumn for c in stmt.cmds or ()):
                rule = "drop-column"
            if rule and stmt is not None:
                out.append((revision, text, rule))
    return out


def test_every_drop_and_rename_of_a_table_or_column_is_found() -> None:
    wanted = _drops_and_renames()
    assert len(wanted) == 35                       # 4 drop-table, 5 rename-table, 3 rename-column, 23 drop-column
    found = destructive_found()
    assert [w for w in wanted if (w[2], w[1]) not in found[w[0]]] == []


FIXED = [
    # a unique index over a column the same revision added NOT NULL without a default
    ("b68b3cad6b8a", "add-unique-constraint", "CREATE UNIQUE INDEX uq_block__spec_id_name"),
    ("7495a5013e7e", "add-unique-constraint", "CREATE UNIQUE INDEX uq_follower_for_scope"),
    # partial on `slug IS NOT NULL`, slug added nullable without a default
    ("a03d00b8e275", "add-unique-constraint", "CREATE UNIQUE INDEX CONCURRENTLY"),
    # a unique key that extends one the history created (through renames)
    ("4799f657a6a1", "add-unique-constraint", "ALTER TABLE block ADD CONSTRAINT uq_block__name UNIQUE"),
    ("d38c5e6a9115", "add-unique-constraint", "CREATE UNIQUE INDEX"),
    ("954db7517015", "add-unique-constraint", "CREATE UNIQUE INDEX"),
    # the backfill of a column added just before
    ("add97ce1937d", "unfiltered-update", "UPDATE deployment SET manifest_path"),
    # DROP INDEX right before the DROP TABLE of its table
    ("2a88656f4a23", "drop-index-non-concurrently", "DROP INDEX"),
]


@pytest.mark.parametrize("revision, rule, prefix", FIXED, ids=[f"{r}-{u}" for r, u, _ in FIXED])
def test_fixed_false_positives_stay_fixed(revision: str, rule: str, prefix: str) -> None:
    hits = [f for f in DUMP.findings if f.revision == revision and f.rule == rule
            and norm(f.statement).startswith(prefix)]
    assert hits == []


def test_what_the_fixes_leave_in_place() -> None:
    by_rev = defaultdict(list)
    for f in DUMP.findings:
        by_rev[f.revision].append((f.rule, norm(f.statement)))
    # the backfill is still a lock warning; the UPDATE of an existing column is still destructive
    assert ("unbatched-backfill", "UPDATE deployment SET manifest_path = ''") in by_rev["add97ce1937d"]
    assert ("unfiltered-update", "UPDATE deployment SET is_schedule_active = False") in by_rev["add97ce1937d"]
    # one finding for the table (and the lock timeout, at the table), none for its three indexes
    assert [(r, s) for r, s in by_rev["2a88656f4a23"] if "work_pool_queue" in s] == [
        ("missing-lock-timeout", "DROP TABLE work_pool_queue"), ("drop-table", "DROP TABLE work_pool_queue")]
    # the unique indexes still lock their tables
    assert ("create-index-non-concurrently",
            "CREATE UNIQUE INDEX uq_follower_for_scope ON automation_event_follower (scope, follower_event_id)") \
        in by_rev["7495a5013e7e"]


def test_linting_the_dump_in_one_piece_hides_most_of_it() -> None:
    whole = [f for f in lint_sql(SQL) if f.kind == "destructive"]
    split = [f for f in DUMP.findings if f.kind == "destructive"]
    assert len(split) == 52 and len(whole) < 5
