"""The static migration linter: a data-driven corpus plus behaviour that needs more than one case."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from sandbox.migrations.findings import Report, default_severity
from sandbox.migrations.lint import RULES, Rule, lint_dump, lint_sql, parse_suppressions

ROOT = Path(__file__).resolve().parents[2]
CORPUS = json.loads((Path(__file__).with_name("lint_corpus.json")).read_text())
DOC = ROOT / "docs" / "migration-rules.md"


def rules_of(findings: list) -> Counter:
    return Counter(f.rule for f in findings)


# -- the corpus -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_corpus(case: dict) -> None:
    # a "dump" case is alembic --sql output of several revisions; its findings are the last one's, "r1"
    if case.get("dump"):
        findings = lint_dump(case["sql"]).findings
    else:
        findings = lint_sql(case["sql"], revision="r1", created_before=case.get("created_before", ()))
    assert rules_of(findings) == Counter(case["expect"]), [f.message for f in findings]
    for f in findings:
        rule = RULES[f.rule]
        assert (f.kind, f.severity, f.revision) == (rule.kind, default_severity(rule.kind), "r1")
        assert f.message and "\n" not in f.message
        if f.rule != "syntax-error":
            assert f.statement and not f.statement.endswith(";")
    if "objects" in case:
        assert [f.object for f in findings] == case["objects"]


def test_corpus_is_large_sourced_and_has_safe_cases() -> None:
    names = [c["name"] for c in CORPUS]
    assert len(CORPUS) >= 80
    assert len(names) == len(set(names))
    assert sum(1 for c in CORPUS if not c["expect"]) >= 20
    assert all(c["source"].strip() for c in CORPUS)


def test_every_rule_is_in_the_corpus() -> None:
    covered = {r for c in CORPUS for r in c["expect"]}
    assert set(RULES) - covered == set()
    assert covered - set(RULES) == set()


def test_every_rule_is_documented() -> None:
    doc = DOC.read_text()
    headings = set(re.findall(r"^### `([a-z0-9-]+)`", doc, re.MULTILINE))
    # the dynamic check (catalog diff) shares the linter's ids and adds a few of its own
    from sandbox.migrations.catalog import RULE_KINDS
    assert set(RULES) | set(RULE_KINDS) == headings
    for rule in RULES.values():
        section = doc.split(f"### `{rule.id}`", 1)[1].split("\n### ", 1)[0]
        assert f"kind: {rule.kind}" in section.lower()
        for part in ("Catches", "Why", "Instead"):
            assert f"**{part}**" in section, (rule.id, part)


def test_rules_are_well_formed() -> None:
    for rule_id, rule in RULES.items():
        assert isinstance(rule, Rule) and rule.id == rule_id
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", rule_id)
        assert rule.kind in ("destructive", "lock", "apply")
        assert rule.summary and rule.safe_alternative


# -- statements and objects -------------------------------------------------------------------

def test_statement_is_trimmed_raw_text_without_leading_comments() -> None:
    sql = "SET lock_timeout = '5s';\n\n-- drop it\n/* really */\n  DROP TABLE   Users ;\n"
    [f] = lint_sql(sql)
    assert f.statement == "DROP TABLE   Users"
    assert f.object == "public.users"          # unquoted identifiers fold to lower case
    [f] = lint_sql("SET lock_timeout = '5s'; DROP TABLE t -- the last one\n/* done */\n")
    assert f.statement == "DROP TABLE t"


def test_statement_offsets_survive_non_ascii_text() -> None:
    sql = "COMMENT ON TABLE users IS 'gebruikers — überall';\nSET lock_timeout = '5s';\nALTER TABLE users DROP COLUMN naïve;"
    [f] = lint_sql(sql)
    assert f.statement == "ALTER TABLE users DROP COLUMN naïve"
    assert f.object == "public.users.naïve"


def test_quoted_identifiers_keep_their_case() -> None:
    [f] = lint_sql('SET lock_timeout = \'1s\'; ALTER TABLE "Sales"."Orders" DROP COLUMN "Total";')
    assert f.object == "Sales.Orders.Total"


def test_missing_lock_timeout_is_reported_once_at_the_first_heavy_lock() -> None:
    sql = "ALTER TABLE a ADD COLUMN x int;\nDROP TABLE b;\nCREATE INDEX i ON c (x);"
    findings = lint_sql(sql)
    assert [f.rule for f in findings] == ["missing-lock-timeout", "drop-table", "create-index-non-concurrently"]
    assert findings[0].statement == "ALTER TABLE a ADD COLUMN x int"


def test_new_table_exemption_is_schema_aware() -> None:
    sql = "SET lock_timeout = '1s';\nCREATE TABLE app.t (id int);\nDROP TABLE t;\nDROP TABLE app.t;"
    assert [f.object for f in lint_sql(sql)] == ["public.t"]


# -- alembic offline SQL ----------------------------------------------------------------------

ALEMBIC_OFFLINE = """BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> abc123

CREATE TABLE accounts (
    id SERIAL NOT NULL, 
    name VARCHAR(50) NOT NULL, 
    PRIMARY KEY (id)
);

INSERT INTO alembic_version (version_num) VALUES ('abc123') RETURNING alembic_version.version_num;

-- Running upgrade abc123 -> def456

ALTER TABLE users DROP COLUMN nickname;

UPDATE alembic_version SET version_num='def456' WHERE alembic_version.version_num = 'abc123';

COMMIT;
"""


def test_alembic_offline_sql_bookkeeping_is_silent() -> None:
    findings = lint_sql(ALEMBIC_OFFLINE, revision="def456")
    assert [f.rule for f in findings] == ["missing-lock-timeout", "drop-column"]
    assert findings[1].statement == "ALTER TABLE users DROP COLUMN nickname"
    assert all(f.revision == "def456" for f in findings)


def test_alembic_version_table_is_ignored_even_without_where() -> None:
    assert lint_sql("UPDATE alembic_version SET version_num = 'x'; DELETE FROM alembic_version;") == []


# -- parse errors ------------------------------------------------------------------------------

def test_parse_error_is_one_finding_naming_the_position() -> None:
    [f] = lint_sql("SELECT 1;\nALTER TABLE users DROPP COLUMN x;", revision="r9")
    assert (f.rule, f.kind, f.severity, f.revision) == ("syntax-error", "apply", "error", "r9")
    assert "line 2" in f.message and "column 19" in f.message and "DROPP" in f.message
    assert f.statement == "ALTER TABLE users DROPP COLUMN x;"


def test_parse_error_cannot_be_suppressed() -> None:
    [f] = lint_sql("DROP TABL x;", suppressions={"*": "anything"})
    assert f.severity == "error" and f.suppressed is None


def test_empty_input_is_clean() -> None:
    assert lint_sql("") == []
    assert lint_sql("-- only a comment\n") == []


# -- suppressions ------------------------------------------------------------------------------

def test_parse_suppressions_sql_and_python_comments() -> None:
    text = """
-- sandbox: allow drop-column reason: dropping after backfill #123
# sandbox: allow drop-table, rename-table reason: legacy tables, see ADR-7
/* sandbox: allow truncate reason: staging data only */
-- sandbox: allow set-not-null
x = 1  # not a suppression: sandbox allow drop-type reason: nope
"""
    assert parse_suppressions(text) == {
        "drop-column": "dropping after backfill #123",
        "drop-table": "legacy tables, see ADR-7",
        "rename-table": "legacy tables, see ADR-7",
        "truncate": "staging data only",
    }


def test_parse_suppressions_wildcard_and_case() -> None:
    assert parse_suppressions("-- SANDBOX: Allow * Reason: one-off cleanup") == {"*": "one-off cleanup"}


def test_suppression_in_sql_keeps_kind_but_does_not_block() -> None:
    sql = ("-- sandbox: allow drop-column reason: column unused since v2 (#123)\n"
           "SET lock_timeout = '5s';\nALTER TABLE users DROP COLUMN legacy;\nDROP TABLE old_users;")
    findings = {f.rule: f for f in lint_sql(sql)}
    dropped = findings["drop-column"]
    assert (dropped.kind, dropped.severity, dropped.suppressed) == (
        "destructive", "warning", "column unused since v2 (#123)")
    assert findings["drop-table"].severity == "error" and findings["drop-table"].suppressed is None
    report = Report(findings=list(findings.values()))
    assert report.ok is False
    assert report.to_json()["findings"][0]["suppressed"] == "column unused since v2 (#123)"


def test_suppressions_argument_and_wildcard() -> None:
    sql = "SET lock_timeout = '5s'; DROP TABLE a; ALTER TABLE b RENAME TO c;"
    findings = lint_sql(sql, suppressions={"drop-table": "from the python file"})
    assert {f.rule: f.severity for f in findings} == {"drop-table": "warning", "rename-table": "error"}
    findings = lint_sql(sql, suppressions={"*": "approved in review"})
    assert Report(findings=findings).ok
    assert {f.suppressed for f in findings} == {"approved in review"}


def test_suppression_without_reason_is_ignored_and_said_so() -> None:
    [f] = lint_sql("-- sandbox: allow drop-table\nSET lock_timeout = '5s'; DROP TABLE a;")
    assert f.severity == "error" and f.suppressed is None
    assert "ignored" in f.message and "no reason" in f.message


def test_suppression_inside_a_string_literal_is_not_a_comment() -> None:
    sql = "SET lock_timeout = '5s'; INSERT INTO notes VALUES ('-- sandbox: allow drop-table reason: x'); DROP TABLE a;"
    [f] = lint_sql(sql)
    assert f.severity == "error"


def test_lock_findings_can_be_suppressed_too() -> None:
    findings = lint_sql("CREATE INDEX i ON t (x);", suppressions={
        "missing-lock-timeout": "tiny table", "create-index-non-concurrently": "tiny table"})
    assert [f.severity for f in findings] == ["warning", "warning"]
    assert all(f.suppressed == "tiny table" for f in findings)


# -- JSON shape --------------------------------------------------------------------------------

def test_report_json_shape() -> None:
    findings = lint_sql("ALTER TABLE users ALTER COLUMN email TYPE varchar(50);", revision="abc")
    data = json.loads(json.dumps(Report(revisions=["abc"], findings=findings).to_json()))
    assert data["ok"] is False and data["revisions"] == ["abc"]
    keys = {"rule", "kind", "severity", "revision", "statement", "object", "message", "affected_workspaces"}
    for item in data["findings"]:
        assert keys <= set(item)
    narrow = next(i for i in data["findings"] if i["rule"] == "narrow-column-type")
    assert narrow == {**narrow, "kind": "destructive", "severity": "error", "revision": "abc",
                      "object": "public.users.email", "affected_workspaces": [],
                      "statement": "ALTER TABLE users ALTER COLUMN email TYPE varchar(50)"}


def test_lock_only_report_is_ok() -> None:
    findings = lint_sql("CREATE INDEX i ON t (x);")
    assert findings and Report(findings=findings).ok


# -- size ----------------------------------------------------------------------------------------

def test_five_hundred_statements() -> None:
    parts = ["SET lock_timeout = '5s';"]
    for i in range(166):
        parts += [f"CREATE TABLE t{i} (id int);", f"ALTER TABLE t{i} ADD COLUMN c int NOT NULL;",
                  f"ALTER TABLE old{i} DROP COLUMN c;"]
    parts.append("CREATE INDEX big_idx ON old0 (c);")
    findings = lint_sql("\n".join(parts), revision="big")
    assert len(parts) == 500
    assert rules_of(findings) == Counter({"drop-column": 166, "create-index-non-concurrently": 1})


# -- behaviour that existing code does not see coming (issue 15) ------------------------------

@pytest.mark.parametrize("sql, rule", [
    ("DELETE FROM posts WHERE id > 0", "delete-rows"),
    ("CREATE RULE swallow AS ON INSERT TO posts DO INSTEAD NOTHING", "create-rule"),
    ("ALTER TABLE posts ENABLE ROW LEVEL SECURITY", "enable-row-level-security"),
    ("ALTER TABLE posts FORCE ROW LEVEL SECURITY", "force-row-level-security"),
    ("CREATE POLICY nobody ON posts USING (false)", "create-policy"),
    ("CREATE TRIGGER t BEFORE INSERT ON posts FOR EACH ROW EXECUTE FUNCTION f()", "create-trigger"),
    ("ALTER TABLE posts DISABLE TRIGGER USER", "toggle-trigger"),
    ("ALTER TABLE posts ENABLE ALWAYS RULE swallow", "toggle-rule"),
])
def test_behaviour_changes_on_existing_tables_are_destructive_errors(sql: str, rule: str) -> None:
    found = [f for f in lint_sql(sql, revision="r1") if f.rule == rule]
    assert [(f.kind, f.severity, f.object) for f in found] == [("destructive", "error", "public.posts")]
    # on a table the same revision created, nobody's code depends on it yet
    assert not [f for f in lint_sql("CREATE TABLE posts (id int);\n" + sql, revision="r1") if f.rule == rule]
    # and an inline suppression with a reason lets it through as a warning
    allowed = lint_sql(sql, revision="r1", suppressions={rule: "reviewed with the readers"})
    assert [(f.severity, f.suppressed) for f in allowed if f.rule == rule] == [("warning", "reviewed with the readers")]


def test_gate_durations_are_validated_with_the_key_named(tmp_path: Path) -> None:
    from sandbox.config import duration_seconds, load
    from sandbox.errors import ConfigError
    assert duration_seconds("3s") == 3 and duration_seconds("15m") == 900 and duration_seconds("500ms") == 0.5
    assert duration_seconds("soon") is None
    (tmp_path / "sandbox.toml").write_text('[migrations]\nstatement_timeout = "soon"\n')
    with pytest.raises(ConfigError, match=r"\[migrations\] statement_timeout must be a duration"):
        load(tmp_path)
