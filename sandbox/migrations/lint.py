"""Static analysis of PostgreSQL migration SQL: what breaks other workspaces, what locks.

``lint_sql`` parses the SQL once with pglast (libpg_query, PostgreSQL's own parser) and walks
the statements in order, keeping a little state: the tables created so far (statements on them
are harmless: nobody uses a new table yet), the columns added so far, the current default schema
(``SET search_path``), whether ``lock_timeout`` is set and whether a transaction block is open.

Each statement is classified as

* **destructive** (``kind="destructive"``, an error under the default policy): code in another
  workspace that still uses the old schema breaks, or existing data can make it fail;
* **lock** (``kind="lock"``, a warning): it takes a heavy lock or rewrites a live table;
* **apply** (``kind="apply"``, an error): it cannot run at all (syntax error, ``CONCURRENTLY``
  inside a transaction block);
* or additive, which produces nothing.

``lint_dump`` lints alembic ``--sql`` output of many revisions revision by revision (split at its
``-- Running upgrade A -> B`` markers), carrying the session and what is known of the schema
from one revision to the next.

Every rule is listed in :data:`RULES` and documented in ``docs/migration-rules.md``. Inline
suppressions (``-- sandbox: allow drop-column reason: ...``) turn a finding into a visible,
non-blocking warning that carries its reason.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError, scan

from sandbox.errors import UsageError
from sandbox.migrations.findings import Finding, Kind, default_severity

AT = enums.AlterTableType
OT = enums.ObjectType
ConstrType = enums.ConstrType
TransactionStmtKind = enums.TransactionStmtKind
VariableSetKind = enums.VariableSetKind

__all__ = ["RULES", "DumpLint", "Rule", "decode_sql", "lint_dump", "lint_sql", "parse_suppressions", "split_dump"]


@dataclass(frozen=True)
class Rule:
    """A lint rule: a stable id, the kind of its findings and how to do the change safely."""

    id: str
    kind: Kind
    summary: str
    safe_alternative: str


def _rules(*rules: Rule) -> Mapping[str, Rule]:
    return MappingProxyType({r.id: r for r in rules})


_D: Kind = "destructive"
_L: Kind = "lock"
_A: Kind = "apply"

RULES: Mapping[str, Rule] = _rules(
    # -- destructive: other workspaces' code or existing data breaks ---------------------------
    Rule("drop-table", _D, "DROP TABLE on an existing table",
         "stop every reader and writer first, then drop it in a later migration"),
    Rule("drop-column", _D, "ALTER TABLE ... DROP COLUMN",
         "stop reading and writing the column everywhere (ORM: ignore it), then drop it in a later migration"),
    Rule("drop-view", _D, "DROP VIEW",
         "stop querying the view everywhere first, then drop it in a later migration"),
    Rule("drop-materialized-view", _D, "DROP MATERIALIZED VIEW",
         "stop querying it everywhere first, then drop it in a later migration"),
    Rule("drop-type", _D, "DROP TYPE / DROP DOMAIN",
         "move every column and function off the type first, then drop it in a later migration"),
    Rule("drop-function", _D, "DROP FUNCTION / PROCEDURE / AGGREGATE / ROUTINE",
         "stop calling it everywhere first, then drop it in a later migration"),
    Rule("drop-schema", _D, "DROP SCHEMA",
         "move or drop its objects one by one, each after its users are gone"),
    Rule("drop-sequence", _D, "DROP SEQUENCE",
         "remove defaults and code that call nextval() on it first, then drop it later"),
    Rule("drop-extension", _D, "DROP EXTENSION",
         "remove every use of its types and functions first, then drop it later"),
    Rule("drop-database", _D, "DROP DATABASE",
         "never drop a database from a migration"),
    Rule("drop-default", _D, "ALTER COLUMN ... DROP DEFAULT on an existing column",
         "make every writer set the column explicitly first, then drop the default later"),
    Rule("rename-table", _D, "ALTER TABLE ... RENAME TO",
         "create the new table (or a view under the new name), write to both, move readers, then drop the old"),
    Rule("rename-column", _D, "ALTER TABLE ... RENAME COLUMN",
         "add the new column, write to both, backfill, move readers, then drop the old column"),
    Rule("rename-view", _D, "ALTER VIEW / MATERIALIZED VIEW ... RENAME TO",
         "create the view under the new name, move readers, then drop the old one"),
    Rule("rename-type", _D, "ALTER TYPE / DOMAIN ... RENAME TO",
         "create the new type, migrate columns to it, then drop the old one"),
    Rule("rename-schema", _D, "ALTER SCHEMA ... RENAME TO",
         "create the new schema, move objects one by one with expand/contract"),
    Rule("rename-function", _D, "ALTER FUNCTION / PROCEDURE ... RENAME TO",
         "create the function under the new name, move callers, then drop the old one"),
    Rule("rename-enum-value", _D, "ALTER TYPE ... RENAME VALUE",
         "ADD VALUE the new label, move data and code to it, and keep the old label"),
    Rule("set-schema", _D, "ALTER ... SET SCHEMA (moves an object to another schema)",
         "create the object in the new schema (or a view there), move users, then drop the old"),
    Rule("narrow-column-type", _D, "ALTER COLUMN ... TYPE that may narrow or cast incompatibly",
         "add a column of the new type, dual-write, backfill in batches, move readers, drop the old column"),
    Rule("set-not-null", _D, "ALTER COLUMN ... SET NOT NULL on an existing column",
         "make every writer set the column, backfill, ADD CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, "
         "then SET NOT NULL (PostgreSQL 12+ skips the scan)"),
    Rule("add-column-not-null-without-default", _D,
         "ADD COLUMN ... NOT NULL without a DEFAULT on an existing table",
         "add the column with a constant DEFAULT (cheap since PostgreSQL 11), or nullable then backfill and SET NOT NULL"),
    Rule("add-unique-constraint", _D, "a new UNIQUE constraint or unique index on an existing table",
         "deduplicate and make every writer respect it, CREATE UNIQUE INDEX CONCURRENTLY, "
         "then ADD CONSTRAINT ... UNIQUE USING INDEX"),
    Rule("add-exclusion-constraint", _D, "a new EXCLUDE constraint on an existing table",
         "clean the data and make every writer respect it first; expect an ACCESS EXCLUSIVE index build"),
    Rule("add-check-constraint", _D, "a new CHECK constraint on an existing table",
         "make every writer satisfy it first, ADD it NOT VALID, then VALIDATE CONSTRAINT in a later migration"),
    Rule("drop-unique-key", _D,
         "DROP CONSTRAINT / DROP INDEX of a known unique or primary key that nothing as strict replaces",
         "keep the old key until no code relies on it (ON CONFLICT on the new key), then drop it in a later migration"),
    Rule("truncate", _D, "TRUNCATE of an existing table",
         "delete the rows in batches with a WHERE clause, or drop the table after its users are gone"),
    Rule("unfiltered-update", _D, "UPDATE without WHERE on an existing table",
         "backfill in batches keyed on the primary key (WHERE id BETWEEN ...), outside the schema migration"),
    Rule("unfiltered-delete", _D, "DELETE without WHERE on an existing table",
         "delete in batches with a WHERE clause, outside the schema migration"),
    Rule("delete-rows", _D, "DELETE ... WHERE on an existing table (rows other workspaces' data may hold)",
         "delete data in a reviewed data migration or a one-off job, not in a schema migration; "
         "suppress with a reason if the rows are really obsolete"),
    # -- destructive: what existing code sees or writes changes behind its back ------------------
    Rule("create-rule", _D, "CREATE RULE on an existing table (DO INSTEAD rewrites or swallows queries)",
         "use a view or a function that callers choose to use; never rewrite the queries of existing code"),
    Rule("toggle-rule", _D, "ALTER TABLE ... ENABLE/DISABLE RULE on an existing table",
         "change rules only together with every caller that depends on them"),
    Rule("enable-row-level-security", _D, "ALTER TABLE ... ENABLE ROW LEVEL SECURITY on an existing table",
         "add the policies and the roles that need them first, and enable it in a migration of its own, reviewed"),
    Rule("force-row-level-security", _D, "ALTER TABLE ... FORCE ROW LEVEL SECURITY on an existing table",
         "as for enabling it: the table's owner (the application's role) then sees only what the policies allow"),
    Rule("create-policy", _D, "CREATE POLICY / ALTER POLICY on an existing table",
         "review every policy with the code that reads the table; rows it hides vanish silently"),
    Rule("create-trigger", _D, "CREATE TRIGGER on an existing table",
         "make the trigger's effect part of the code that writes the table, or review it as such"),
    Rule("toggle-trigger", _D, "ALTER TABLE ... ENABLE/DISABLE TRIGGER on an existing table",
         "change triggers only together with every writer that relies on them"),
    # -- lock: heavy locks or rewrites of a live table -----------------------------------------
    Rule("create-index-non-concurrently", _L, "CREATE INDEX without CONCURRENTLY on an existing table",
         "CREATE INDEX CONCURRENTLY outside a transaction block (alembic: autocommit_block())"),
    Rule("drop-index-non-concurrently", _L, "DROP INDEX without CONCURRENTLY",
         "DROP INDEX CONCURRENTLY outside a transaction block (alembic: autocommit_block())"),
    Rule("add-foreign-key-validated", _L, "ADD FOREIGN KEY without NOT VALID on an existing table",
         "ADD CONSTRAINT ... FOREIGN KEY ... NOT VALID, then VALIDATE CONSTRAINT in a later migration"),
    Rule("add-check-validated", _L, "ADD CHECK without NOT VALID on an existing table",
         "ADD CONSTRAINT ... CHECK (...) NOT VALID, then VALIDATE CONSTRAINT in a later migration"),
    Rule("add-primary-key", _L, "ADD PRIMARY KEY on an existing table without USING INDEX",
         "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... PRIMARY KEY USING INDEX"),
    Rule("volatile-default", _L,
         "ADD COLUMN whose default is evaluated per row (volatile function, serial, identity)",
         "add the column without a default (or with a constant), SET DEFAULT after, backfill in batches"),
    Rule("add-stored-generated-column", _L, "ADD COLUMN ... GENERATED ALWAYS AS (...) STORED on an existing table",
         "add a plain column, fill it with a trigger and a batched backfill"),
    Rule("rewriting-type-change", _L, "ALTER COLUMN ... TYPE that widens but may rewrite the table",
         "add a column of the new type, dual-write, backfill in batches, swap; or accept the lock on a small table"),
    Rule("set-logged-unlogged", _L, "ALTER TABLE ... SET LOGGED / SET UNLOGGED",
         "do it in a maintenance window, or create a new table and copy in batches"),
    Rule("vacuum-full", _L, "VACUUM FULL",
         "use pg_repack or pg_squeeze, or plain VACUUM"),
    Rule("cluster", _L, "CLUSTER",
         "use pg_repack, or run it in a maintenance window"),
    Rule("reindex-non-concurrently", _L, "REINDEX without CONCURRENTLY",
         "REINDEX ... CONCURRENTLY (PostgreSQL 12+) outside a transaction block"),
    Rule("refresh-matview-non-concurrently", _L, "REFRESH MATERIALIZED VIEW without CONCURRENTLY",
         "add a unique index on the view and REFRESH MATERIALIZED VIEW CONCURRENTLY"),
    Rule("lock-table", _L, "an explicit LOCK TABLE on an existing table",
         "avoid explicit locks in migrations; if needed, SET lock_timeout first and keep the transaction short"),
    Rule("unbatched-backfill", _L, "UPDATE without WHERE that only fills columns added in the same migration",
         "add the column with a constant DEFAULT (no rewrite since PostgreSQL 11), or backfill in batches "
         "keyed on the primary key, outside the schema migration"),
    Rule("missing-lock-timeout", _L,
         "a heavy lock on an existing table without a prior SET lock_timeout",
         "start the migration with SET lock_timeout = '5s' (and retry on timeout)"),
    # -- apply: it cannot run ------------------------------------------------------------------
    Rule("syntax-error", _A, "SQL that PostgreSQL cannot parse",
         "fix the SQL; check it with `sandbox migrate lint`"),
    Rule("cannot-run-in-transaction", _A,
         "CONCURRENTLY index operations or VACUUM inside a transaction block",
         "run it outside the transaction (alembic: with op.get_context().autocommit_block())"),
)


# --------------------------------------------------------------------------------------------
# Suppressions
# --------------------------------------------------------------------------------------------

_MARKED = re.compile(r"(?:--|#|/\*)\s*sandbox:\s*allow\b(?P<body>[^\n]*)", re.IGNORECASE)
_UNMARKED = re.compile(r"sandbox:\s*allow\b(?P<body>[^\n]*)", re.IGNORECASE)
_REASON = re.compile(r"\breason\s*[:=]", re.IGNORECASE)
_RULE_ID = re.compile(r"^(?:\*|[a-z0-9][a-z0-9-]*)$")


def _parse_body(body: str, found: dict[str, str], unreasoned: set[str]) -> None:
    body = body.strip()
    if body.endswith("*/"):
        body = body[:-2].rstrip()
    m = _REASON.search(body)
    ids_part, reason = (body[:m.start()], body[m.end():].strip()) if m else (body, "")
    ids = [t.lower() for t in re.split(r"[\s,]+", ids_part.strip()) if t]
    ids = [t for t in ids if _RULE_ID.match(t)]
    for rule_id in ids:
        if not reason:
            unreasoned.add(rule_id)
        elif rule_id in found and reason not in found[rule_id].split("; "):
            found[rule_id] = f"{found[rule_id]}; {reason}"
        else:
            found[rule_id] = reason


def _suppressions_in(text: str, *, marked: bool = True) -> tuple[dict[str, str], set[str]]:
    found: dict[str, str] = {}
    unreasoned: set[str] = set()
    for m in (_MARKED if marked else _UNMARKED).finditer(text):
        _parse_body(m.group("body"), found, unreasoned)
    return found, unreasoned - found.keys()


def parse_suppressions(text: str) -> dict[str, str]:
    """Suppressions written in comments of SQL (``--``, ``/* */``) or Python (``#``) text.

    ``-- sandbox: allow drop-column, rename-column reason: dropping after backfill #123`` maps
    each rule id to its reason; ``*`` stands for every rule. A suppression without a reason is
    ignored (``lint_sql`` says so in the message of the finding it did not suppress).
    """
    return _suppressions_in(text)[0]


# --------------------------------------------------------------------------------------------
# Facts about PostgreSQL the rules rely on
# --------------------------------------------------------------------------------------------

# Functions whose value changes per row. A column added with one of these as its default makes
# PostgreSQL rewrite the table; a non-volatile default (a constant, now(), CURRENT_TIMESTAMP) is
# evaluated once and stored in the catalog since PostgreSQL 11, so it is cheap.
_VOLATILE_FUNCTIONS = frozenset({
    "random", "random_normal", "setseed", "gen_random_uuid", "gen_random_bytes", "uuidv4", "uuidv7",
    "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "uuid_generate_v7",
    "clock_timestamp", "timeofday", "nextval", "txid_current", "pg_current_xact_id",
})
# Built-ins that are immutable or stable: safe in a default. Any other function (user-defined
# ones default to VOLATILE) is reported as possibly volatile.
_NON_VOLATILE_FUNCTIONS = frozenset({
    "now", "transaction_timestamp", "statement_timestamp", "current_setting", "timezone",
    "lower", "upper", "concat", "concat_ws", "coalesce", "nullif", "greatest", "least",
    "to_json", "to_jsonb", "json_build_object", "jsonb_build_object", "json_build_array",
    "jsonb_build_array", "array", "make_interval", "make_date", "make_timestamp",
    "make_timestamptz", "date_trunc", "to_timestamp", "to_date", "to_char", "md5", "abs",
    "length", "replace", "substring", "trim", "btrim", "ltrim", "rtrim", "format", "current_date",
    "current_schema", "current_user", "session_user", "inet_client_addr", "pg_backend_pid",
    "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange",
})
_SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})

# Target types of ALTER COLUMN TYPE that only widen what they can hold (from a narrower type of
# the same family). They still take ACCESS EXCLUSIVE, and rewrite the table unless the change is
# binary-coercible (varchar(n) -> varchar(m>n) / text, cidr -> inet).
_WIDE_TYPES = frozenset({"text", "citext", "int8", "float8", "timestamptz", "jsonb"})
_WIDE_WITHOUT_MODIFIER = frozenset({"varchar", "numeric", "varbit"})

# ALTER TABLE subcommands that take less than ACCESS EXCLUSIVE (SHARE UPDATE EXCLUSIVE).
_LIGHT_ALTER = frozenset({AT.AT_ValidateConstraint, AT.AT_SetStatistics, AT.AT_SetOptions,
                          AT.AT_ResetOptions, AT.AT_ClusterOn, AT.AT_DropCluster,
                          AT.AT_AttachPartition, AT.AT_DetachPartitionFinalize})

_ALEMBIC_VERSION = "alembic_version"


# --------------------------------------------------------------------------------------------
# The linter
# --------------------------------------------------------------------------------------------

def lint_sql(sql: str, *, revision: str | None = None,
             suppressions: Mapping[str, str] | None = None,
             created_before: Iterable[str] = ()) -> list[Finding]:
    """Findings for one migration's SQL, in statement order.

    ``suppressions`` (rule id or ``*`` -> reason) are merged with those written in the SQL's own
    comments. ``created_before`` names tables (``t`` or ``schema.t``) created by earlier,
    not yet merged migrations: like tables created in this SQL, they are nobody's yet.
    A parse error gives a single ``syntax-error`` finding instead of an exception.

    The whole text is one migration, whatever it holds: for alembic's ``--sql`` output of several
    revisions use :func:`lint_dump`, which splits it at the ``-- Running upgrade`` markers.
    """
    return _lint_part(sql, 0, len(sql), revision, suppressions, created_before, _Session())


@dataclass(frozen=True)
class DumpLint:
    """The result of :func:`lint_dump`: findings in file order and the revisions found."""

    findings: list[Finding]
    revisions: list[str]          # in file order; [] when the text has no revision markers
    split: bool                   # True when the text held alembic's ``-- Running ...`` markers


# alembic's offline mode writes one of these comments before each revision's SQL:
# "-- Running upgrade A -> B", "-- Running upgrade  -> B" (a root), "-- Running upgrade A, C -> B"
# (a merge) and "-- Running downgrade B -> A".
_MARKER = re.compile(r"^--[ \t]*Running (?P<dir>upgrade|downgrade) (?P<src>[^\n]*?)->[ \t]*(?P<dst>[^\s,]*)[ \t]*$",
                     re.MULTILINE)


def lint_dump(sql: str, *, suppressions: Mapping[str, str] | None = None,
              created_before: Iterable[str] = ()) -> DumpLint:
    """Findings for alembic offline SQL (``alembic upgrade --sql A:B``) that holds several revisions.

    The text is split at alembic's ``-- Running upgrade A -> B`` markers and each part is linted
    as its own migration, whose findings carry ``revision="B"``: a table created by revision A is
    an existing table for revision B, exactly as when each revision is linted on its own. (A
    downgrade part, ``-- Running downgrade B -> A``, carries the revision it undoes, B.) The
    session carries over from part to part, as it does when the file runs: the open transaction,
    ``SET lock_timeout`` and ``SET search_path``, plus what the SQL so far says about the schema:
    which table each index belongs to and which unique keys exist (see ``_Linter.learn``).
    Text before the first marker (alembic's ``BEGIN`` and ``CREATE TABLE alembic_version``) is
    linted with ``revision=None``. Without markers the whole text is one migration
    (``split=False``), as with :func:`lint_sql`.
    """
    session = _Session()
    parts = split_dump(sql)
    if parts is None:
        return DumpLint(_lint_part(sql, 0, len(sql), None, suppressions, created_before, session), [], False)
    findings: list[Finding] = []
    revisions: list[str] = []
    for revision, start, end in parts:
        if revision is not None and revision not in revisions:
            revisions.append(revision)
        findings += _lint_part(sql, start, end, revision, suppressions, created_before, session)
    return DumpLint(findings, revisions, True)


def split_dump(sql: str) -> list[tuple[str | None, int, int]] | None:
    """The parts of alembic offline SQL as ``(revision, start, end)`` offsets, None without markers.

    The first part (``revision=None``) is the text before the first marker; each marker starts a
    part that runs to the next one. See :func:`lint_dump`.
    """
    markers = list(_MARKER.finditer(sql))
    if not markers:
        return None
    parts: list[tuple[str | None, int, int]] = [(None, 0, markers[0].start())]
    for m, nxt in zip(markers, [*markers[1:], None]):
        revision = m.group("dst") if m.group("dir") == "upgrade" else m.group("src").strip()
        parts.append((revision or None, m.start(), nxt.start() if nxt else len(sql)))
    return parts


def decode_sql(data: bytes, source: str) -> str:
    """The text of SQL read as bytes; :class:`UsageError` for binary or non-UTF-8 input.

    ``source`` names the input in the message (a path, or ``stdin``). A UTF-8 byte order mark
    is dropped.
    """
    nul = data.find(b"\0")
    if nul >= 0:
        raise UsageError(f"{source}: binary input (a NUL byte at offset {nul}), not SQL text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                         "save the SQL as UTF-8") from exc


@dataclass
class _Key:
    """A unique key known to hold on a table's rows: a primary key, a UNIQUE constraint or index."""

    table: str                                            # "schema.table"
    columns: tuple[str, ...]
    primary: bool                                         # its columns are NOT NULL too


@dataclass
class _Session:
    """What one part of a dump leaves to the next: the database session's state, and what the
    SQL so far says about the schema (which table an index belongs to, the unique keys)."""

    schema: str = "public"                                # from SET search_path
    lock_timeout: bool = False
    in_transaction: bool = False
    index_tables: dict[str, str] = field(default_factory=dict)   # "schema.index" -> "schema.table"
    keys: dict[str, _Key] = field(default_factory=dict)          # "schema.index or constraint" -> key


def _lint_part(sql: str, start: int, end: int, revision: str | None,
               suppressions: Mapping[str, str] | None, created_before: Iterable[str],
               session: _Session) -> list[Finding]:
    """Lint ``sql[start:end]`` as one migration, continuing (and updating) ``session``."""
    part = sql[start:end]
    try:
        stmts = parse_sql(part)
    except ParseError as exc:
        return [_syntax_error(sql, exc, revision, start)]
    tokens = scan(part)
    inline, unreasoned = _suppressions_in(
        "\n".join(part[t.start:t.end + 1] for t in tokens if t.name in ("SQL_COMMENT", "C_COMMENT")),
        marked=False)
    allowed = {**inline, **(suppressions or {})}
    code = [t for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    linter = _Linter(part, revision, [t.start for t in code], [t.end + 1 for t in code], created_before,
                     session=session)
    for raw in stmts:
        linter.statement(raw)
    linter.finish()
    return [_apply_suppression(f, allowed, unreasoned) for f in linter.findings]


def _apply_suppression(f: Finding, allowed: Mapping[str, str], unreasoned: set[str]) -> Finding:
    if f.kind not in ("destructive", "lock"):
        return f
    reason = allowed.get(f.rule) or allowed.get("*")
    if reason:
        return f.with_(severity="warning", suppressed=reason)
    if f.rule in unreasoned or "*" in unreasoned:
        return f.with_(message=f"{f.message} (a `sandbox: allow {f.rule}` comment was ignored: it has no reason)")
    return f


def _syntax_error(sql: str, exc: ParseError, revision: str | None, offset: int = 0) -> Finding:
    """The finding for a parse error of the text that starts at ``offset`` in ``sql``."""
    pos = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
    text = exc.args[0] if exc.args else str(exc)
    if pos is None:
        return Finding(rule="syntax-error", kind="apply", severity="error", revision=revision,
                       message=f"the SQL does not parse: {text}")
    pos = max(0, min(pos + offset, len(sql)))
    line = sql.count("\n", 0, pos) + 1
    col = pos - (sql.rfind("\n", 0, pos) + 1) + 1
    start, end = sql.rfind("\n", 0, pos) + 1, sql.find("\n", pos)
    snippet = sql[start:end if end >= 0 else len(sql)].strip() or None
    return Finding(rule="syntax-error", kind="apply", severity="error", revision=revision,
                   statement=snippet,
                   message=f"the SQL does not parse: {text} at line {line}, column {col} (character {pos})")


def _names(items: Any) -> list[str]:
    """The identifiers of a pglast name list (``(String, String)``), [] for None."""
    return [i.sval for i in items or () if isinstance(i, ast.String) and i.sval is not None]


def _walk(node: Any) -> Iterator[Any]:
    """Every node below ``node`` (depth first), for scanning expressions."""
    if isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for slot in node:
            yield from _walk(getattr(node, slot))


@dataclass
class _Linter:
    sql: str
    revision: str | None
    token_starts: list[int]                               # of every non-comment token, ascending
    token_ends: list[int]                                 # exclusive ends of the same tokens
    created_before: Iterable[str]
    session: _Session = field(default_factory=_Session)   # carried from one part of a dump to the next
    findings: list[Finding] = field(default_factory=list)
    created: set[str] = field(default_factory=set)        # "schema.name" of relations, types, functions
    new_columns: set[str] = field(default_factory=set)    # "schema.table.column" added here
    # What every existing row holds in a column added here without a default: "null" (nullable: all
    # NULL until an UPDATE fills it) or "empty" (NOT NULL without a default: the ADD COLUMN fails
    # unless the table is empty).
    new_column_rows: dict[str, str] = field(default_factory=dict)
    # The run of DROP INDEX statements just before this one: (index, its findings). A DROP TABLE
    # of the index's table right after them takes their findings back: one finding for the drop.
    index_drops: list[tuple[str, list[Finding]]] = field(default_factory=list)
    # Unique keys and indexes dropped here: the rows still satisfy the keys until the migration
    # ends, and a DROP TABLE right after a DROP INDEX needs to know the index's table.
    # name -> (statement no, its text, the key as it was, if known)
    dropped_keys: dict[str, tuple[int, str, _Key | None]] = field(default_factory=dict)
    new_keys: set[str] = field(default_factory=set)       # keys created here: dropping them is free
    statement_no: int = 0
    finding_statement: dict[int, int] = field(default_factory=dict)         # id(finding) -> statement no
    timeout_reported: bool = False
    text: str = ""                                        # the current statement

    def __post_init__(self) -> None:
        for name in self.created_before:
            self.created.add(name if "." in name else f"public.{name}")

    # The session's state lives in ``session`` so that it outlives one part of a dump.
    @property
    def schema(self) -> str:
        return self.session.schema

    @schema.setter
    def schema(self, value: str) -> None:
        self.session.schema = value

    @property
    def lock_timeout(self) -> bool:
        return self.session.lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, value: bool) -> None:
        self.session.lock_timeout = value

    @property
    def in_transaction(self) -> bool:
        return self.session.in_transaction

    @in_transaction.setter
    def in_transaction(self, value: bool) -> None:
        self.session.in_transaction = value

    # -- plumbing ------------------------------------------------------------------------------
    def statement(self, raw: ast.RawStmt) -> None:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(self.sql)
        # Comments around the statement belong to its span; keep from its first to its last token.
        first, last = bisect_left(self.token_starts, start), bisect_left(self.token_starts, end) - 1
        if first <= last:
            start, end = self.token_starts[first], self.token_ends[last]
        self.text = self.sql[start:end].strip()
        self.statement_no += 1
        handler = getattr(self, "_" + type(raw.stmt).__name__, None)
        if handler is not None:
            handler(raw.stmt)
        self.learn(raw.stmt)
        if not (isinstance(raw.stmt, ast.DropStmt) and raw.stmt.removeType == OT.OBJECT_INDEX):
            self.index_drops.clear()

    def finish(self) -> None:
        """The end of the migration: report unique keys it weakened; what it dropped is gone."""
        keys = self.session.keys
        for name, (no, text, key) in self.dropped_keys.items():
            if key is None or name in self.new_keys or self.is_new(key.table):
                continue                                   # unknown, or new here, or its table is new
            if any(k.table == key.table and set(k.columns) <= set(key.columns) for k in keys.values()):
                continue                                   # an equal or stricter key replaces it
            self.statement_no, self.text = no, text
            self.add("drop-unique-key", key.table,
                     f"dropping {name.rsplit('.', 1)[-1]}, the unique key ({', '.join(key.columns)}) of {key.table}, "
                     "with no equal or stricter key left: INSERT ... ON CONFLICT on those columns in other "
                     "workspaces' code fails, and lookups that expect one row may get several")
        for name in self.dropped_keys:
            if name not in keys:                           # not created again under the same name
                self.session.index_tables.pop(name, None)
        self.findings.sort(key=lambda f: self.finding_statement.get(id(f), 0))

    # -- what the SQL says about the schema (never reported) ---------------------------------------
    def learn(self, stmt: Any) -> None:
        """Record indexes and unique keys, and follow renames and drops, after ``stmt`` is linted.

        This knowledge, unlike "created here", carries over to later parts of a dump: it makes
        a unique index that extends a known unique key (and so cannot fail) recognisable.
        """
        keys, tables = self.session.keys, self.session.index_tables
        if isinstance(stmt, ast.CreateStmt):
            table = self.rel(stmt.relation)
            for elt in stmt.tableElts or ():
                if isinstance(elt, ast.Constraint):
                    self._learn_key(table, elt, _names(elt.keys))
                elif isinstance(elt, ast.ColumnDef):
                    for c in elt.constraints or ():
                        self._learn_key(table, c, [elt.colname] if elt.colname else [])
        elif isinstance(stmt, ast.IndexStmt) and stmt.idxname:
            name, table = self.sibling(stmt.relation, stmt.idxname), self.rel(stmt.relation)
            columns = [e.name for e in stmt.indexParams or () if isinstance(e, ast.IndexElem) and e.name]
            if stmt.unique and stmt.whereClause is None and len(columns) == len(stmt.indexParams or ()):
                keys[name] = _Key(table, tuple(columns), False)
                self.new_keys.add(name)
        elif isinstance(stmt, ast.AlterTableStmt) and stmt.objtype == OT.OBJECT_TABLE:
            table = self.rel(stmt.relation)
            for cmd in stmt.cmds or ():
                if cmd.subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
                    self._learn_key(table, cmd.def_, _names(cmd.def_.keys))
                elif cmd.subtype == AT.AT_DropConstraint and cmd.name:
                    self._drop_key(self.sibling(stmt.relation, cmd.name))
                elif cmd.subtype == AT.AT_DropColumn:          # its keys go with it (drop-column says so)
                    for name in [n for n, k in keys.items() if k.table == table and cmd.name in k.columns]:
                        del keys[name]
                    for name in [n for n, (_, _, k) in self.dropped_keys.items()
                                 if k and k.table == table and cmd.name in k.columns]:
                        del self.dropped_keys[name]
        elif isinstance(stmt, ast.DropStmt) and stmt.removeType == OT.OBJECT_INDEX:
            for obj_node in stmt.objects or ():
                self._drop_key(self.qualify(_names(obj_node)))   # its table is forgotten at the end
        elif isinstance(stmt, ast.DropStmt) and stmt.removeType == OT.OBJECT_TABLE:
            for obj_node in stmt.objects or ():
                table = self.qualify(_names(obj_node))
                for name in [n for n, k in keys.items() if k.table == table]:
                    del keys[name]
                for name in [n for n, (_, _, k) in self.dropped_keys.items() if k and k.table == table]:
                    del self.dropped_keys[name]
                for name in [n for n, t in tables.items() if t == table]:
                    del tables[name]
        elif isinstance(stmt, ast.RenameStmt):
            self._learn_rename(stmt)

    def _drop_key(self, name: str) -> None:
        """A DROP INDEX or DROP CONSTRAINT: the key (if it was one) is checked at the end (``finish``)."""
        self.dropped_keys[name] = (self.statement_no, self.text, self.session.keys.pop(name, None))

    def _dropped(self) -> list[_Key]:
        return [k for _, _, k in self.dropped_keys.values() if k is not None]

    def _learn_key(self, table: str, c: Any, columns: list[str]) -> None:
        if not isinstance(c, ast.Constraint) or c.contype not in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
            return
        primary = c.contype == ConstrType.CONSTR_PRIMARY
        schema = table.rsplit(".", 1)[0]
        if c.indexname:                                    # ADD CONSTRAINT ... USING INDEX i: i becomes it
            known = self.session.keys.pop(f"{schema}.{c.indexname}", None)
            columns = list(known.columns) if known else []
        if not columns:
            return
        name = f"{schema}.{c.conname}" if c.conname else f"{table}({','.join(columns)})"
        self.session.keys[name] = _Key(table, tuple(columns), primary)
        self.session.index_tables[name] = table
        self.new_keys.add(name)

    def _learn_rename(self, node: ast.RenameStmt) -> None:
        keys, tables = self.session.keys, self.session.index_tables
        kind = node.renameType
        if kind in (OT.OBJECT_TABLE, OT.OBJECT_FOREIGN_TABLE) and node.newname:
            old, new = self.rel(node.relation), self.sibling(node.relation, node.newname)
            for k in [*keys.values(), *self._dropped()]:
                if k.table == old:
                    k.table = new
            for name, t in list(tables.items()):
                if t == old:
                    tables[name] = new
        elif kind == OT.OBJECT_COLUMN and node.subname and node.newname:
            table = self.rel(node.relation)
            for k in [*keys.values(), *self._dropped()]:
                if k.table == table:
                    k.columns = tuple(node.newname if c == node.subname else c for c in k.columns)
        elif kind == OT.OBJECT_INDEX and node.newname:
            old, new = self.rel(node.relation), self.sibling(node.relation, node.newname)
            if old in keys:
                keys[new] = keys.pop(old)
            if old in tables:
                tables[new] = tables.pop(old)

    def add(self, rule_id: str, obj: str | None, detail: str) -> None:
        rule = RULES[rule_id]
        finding = Finding(
            rule=rule_id, kind=rule.kind, severity=default_severity(rule.kind), revision=self.revision,
            statement=self.text, object=obj, message=f"{detail}; instead: {rule.safe_alternative}")
        self.findings.append(finding)
        self.finding_statement[id(finding)] = self.statement_no

    def qualify(self, names: Iterable[str]) -> str:
        parts = list(names) or ["?"]
        return ".".join(parts) if len(parts) > 1 else f"{self.schema}.{parts[0]}"

    def rel(self, rv: ast.RangeVar | None) -> str:
        if rv is None:                                     # not produced by the parser; be total
            return f"{self.schema}.?"
        return f"{rv.schemaname or self.schema}.{rv.relname}"

    def sibling(self, rv: ast.RangeVar | None, name: str | None) -> str:
        """``name`` in the schema of ``rv`` (an index or the new name of a renamed table)."""
        return f"{(rv.schemaname if rv else None) or self.schema}.{name}"

    def is_new(self, qualified: str) -> bool:
        return qualified in self.created

    def is_bookkeeping(self, rv: ast.RangeVar | None) -> bool:
        return rv is not None and rv.relname == _ALEMBIC_VERSION

    def heavy_lock(self, obj: str | None, what: str) -> None:
        """A write-blocking lock on an existing object: it must be bounded by lock_timeout."""
        if self.lock_timeout or self.timeout_reported:
            return
        self.timeout_reported = True
        self.add("missing-lock-timeout", obj,
                 f"{what} waits for a lock on {obj or 'its tables'} with no lock_timeout set; while it waits "
                 "behind any long-running query, every other query on the table queues behind it")

    def needs_no_transaction(self, what: str, obj: str | None) -> None:
        if self.in_transaction:
            self.add("cannot-run-in-transaction", obj,
                     f"{what} cannot run inside a transaction block (BEGIN ... COMMIT): the migration fails")

    # -- session and transaction state ---------------------------------------------------------
    def _TransactionStmt(self, node: ast.TransactionStmt) -> None:
        if node.kind in (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START):
            self.in_transaction = True
        elif node.kind in (TransactionStmtKind.TRANS_STMT_COMMIT, TransactionStmtKind.TRANS_STMT_ROLLBACK,
                           TransactionStmtKind.TRANS_STMT_PREPARE):
            self.in_transaction = False

    def _VariableSetStmt(self, node: ast.VariableSetStmt) -> None:
        name = (node.name or "").lower()
        setting = node.kind == VariableSetKind.VAR_SET_VALUE
        if name == "lock_timeout":
            self.lock_timeout = setting and not self._is_zero(node.args)
        elif name == "search_path":
            self.schema = "public"
            for arg in (node.args or ()) if setting else ():
                value = getattr(getattr(arg, "val", None), "sval", None)
                if value and value != "$user":
                    self.schema = value
                    break

    @staticmethod
    def _is_zero(args: Any) -> bool:
        if not args:
            return True
        val = getattr(args[0], "val", None)
        raw = getattr(val, "ival", None) if isinstance(val, ast.Integer) else getattr(val, "sval", None)
        return str(raw).strip() in ("0", "0ms", "0s")

    def _SelectStmt(self, node: ast.SelectStmt) -> None:
        # SELECT set_config('lock_timeout', '5s', false) is the function form of SET.
        for n in _walk(node.targetList):
            if isinstance(n, ast.FuncCall) and _names(n.funcname)[-1:] == ["set_config"] and n.args:
                first = getattr(n.args[0], "val", None)
                if isinstance(first, ast.String) and first.sval == "lock_timeout":
                    self.lock_timeout = not self._is_zero(n.args[1:2])

    # -- creations (tracked, never reported) ---------------------------------------------------
    def _CreateStmt(self, node: ast.CreateStmt) -> None:
        self.created.add(self.rel(node.relation))

    def _CreateTableAsStmt(self, node: ast.CreateTableAsStmt) -> None:
        self.created.add(self.rel(node.into.rel if node.into else None))

    def _ViewStmt(self, node: ast.ViewStmt) -> None:
        self.created.add(self.rel(node.view))

    def _CreateSeqStmt(self, node: ast.CreateSeqStmt) -> None:
        self.created.add(self.rel(node.sequence))

    def _CompositeTypeStmt(self, node: ast.CompositeTypeStmt) -> None:
        self.created.add(self.rel(node.typevar))

    def _CreateEnumStmt(self, node: ast.CreateEnumStmt) -> None:
        self.created.add(self.qualify(_names(node.typeName)))

    def _CreateDomainStmt(self, node: ast.CreateDomainStmt) -> None:
        self.created.add(self.qualify(_names(node.domainname)))

    def _CreateFunctionStmt(self, node: ast.CreateFunctionStmt) -> None:
        if not node.replace:
            self.created.add(self.qualify(_names(node.funcname)))

    def _CreateSchemaStmt(self, node: ast.CreateSchemaStmt) -> None:
        if node.schemaname:
            self.created.add(f"schema:{node.schemaname}")

    # -- indexes -------------------------------------------------------------------------------
    def _IndexStmt(self, node: ast.IndexStmt) -> None:
        table = self.rel(node.relation)
        if node.idxname:
            self.created.add(self.sibling(node.relation, node.idxname))
            self.session.index_tables[self.sibling(node.relation, node.idxname)] = table
        if node.concurrent:
            self.needs_no_transaction("CREATE INDEX CONCURRENTLY", table)
        if self.is_new(table):
            return
        if node.unique and not self._unique_cannot_collide(table, node):
            self.add("add-unique-constraint", table,
                     f"a unique index on existing table {table} fails if current rows hold duplicates, and "
                     "inserts from other workspaces' code that write duplicates start failing")
        if not node.concurrent:
            self.heavy_lock(table, "CREATE INDEX")
            self.add("create-index-non-concurrently", table,
                     f"CREATE INDEX without CONCURRENTLY blocks all writes to {table} until the index is built")

    def _unique_cannot_collide(self, table: str, node: ast.IndexStmt) -> bool:
        """True when no two existing rows can share a key of this new unique index.

        That holds when a key column was added in this migration without a default and since
        left unfilled: if it is NOT NULL the ADD COLUMN succeeded only on an empty table; if it
        is nullable every row holds NULL, and NULLs never collide (unless NULLS NOT DISTINCT),
        and a partial index ``WHERE col IS NOT NULL`` holds no row at all. Code in other
        workspaces does not know the column either, so it writes NULL (or cannot insert).
        It also holds when the index's columns include a unique key the SQL so far made
        (``_extends_a_key``): alembic drops ``uq_t__a`` and creates ``uq_t__a_b``.
        """
        columns = [e.name for e in node.indexParams or () if isinstance(e, ast.IndexElem) and e.name]
        rows = [self.new_column_rows.get(f"{table}.{c}") for c in columns]
        if "empty" in rows:
            return True
        if "null" in rows and not node.nulls_not_distinct:
            return True
        if any(self.new_column_rows.get(f"{table}.{c}") == "null" for c in self._not_null_columns(node.whereClause)):
            return True
        return self._extends_a_key(table, columns, bool(node.nulls_not_distinct))

    def _extends_a_key(self, table: str, columns: Iterable[str], nulls_not_distinct: bool = False) -> bool:
        """True when ``columns`` include every column of a unique key known to hold on ``table``:
        rows distinct on that key are distinct on ``columns`` too (a key dropped in this
        migration still holds for the rows; NULLS NOT DISTINCT needs a primary key)."""
        have = set(columns)
        return any(k.table == table and set(k.columns) <= have and (k.primary or not nulls_not_distinct)
                   for k in [*self.session.keys.values(), *self._dropped()])

    @staticmethod
    def _not_null_columns(where: Any) -> list[str]:
        """Columns that a WHERE clause requires to be NOT NULL (``c IS NOT NULL``, joined by AND)."""
        if isinstance(where, ast.NullTest) and where.nulltesttype == enums.NullTestType.IS_NOT_NULL:
            names = _names(getattr(where.arg, "fields", None)) if isinstance(where.arg, ast.ColumnRef) else []
            return names[-1:]
        if isinstance(where, ast.BoolExpr) and where.boolop == enums.BoolExprType.AND_EXPR:
            return [c for arg in where.args or () for c in _Linter._not_null_columns(arg)]
        return []

    def _ReindexStmt(self, node: ast.ReindexStmt) -> None:
        concurrent = any(getattr(p, "defname", "") == "concurrently" for p in node.params or ())
        obj = self.rel(node.relation) if node.relation else node.name
        if concurrent:
            self.needs_no_transaction("REINDEX CONCURRENTLY", obj)
        elif not (obj and self.is_new(obj)):
            self.heavy_lock(obj, "REINDEX")
            self.add("reindex-non-concurrently", obj,
                     f"REINDEX without CONCURRENTLY blocks writes to the table and locks out queries using {obj}")

    # -- drops ---------------------------------------------------------------------------------
    def _DropStmt(self, node: ast.DropStmt) -> None:
        kind = node.removeType
        if kind is None:
            return
        for obj_node in node.objects or ():
            self._drop_one(kind, obj_node, node)

    def _drop_one(self, kind: OT, obj_node: Any, node: ast.DropStmt) -> None:
        if kind == OT.OBJECT_SCHEMA:
            name = obj_node.sval
            if f"schema:{name}" not in self.created:
                self.add("drop-schema", name,
                         f"DROP SCHEMA {name} removes every object in it at once; code still using them breaks")
            return
        if kind == OT.OBJECT_EXTENSION:
            name = obj_node.sval
            self.add("drop-extension", name,
                     f"DROP EXTENSION {name} removes its types and functions; code and columns using them break")
            return
        if isinstance(obj_node, ast.TypeName):
            names = _names(obj_node.names)
        elif isinstance(obj_node, ast.ObjectWithArgs):
            names = _names(obj_node.objname)
        elif isinstance(obj_node, (tuple, list)):
            names = _names(obj_node)
        else:
            return
        if not names:
            return
        obj = self.qualify(names)
        if self.is_new(obj) or names[-1] == _ALEMBIC_VERSION:
            return
        if kind in (OT.OBJECT_TABLE, OT.OBJECT_FOREIGN_TABLE):
            self._take_back_index_drops(obj)
            self.heavy_lock(obj, "DROP TABLE")
            self.add("drop-table", obj,
                     f"DROP TABLE {obj} deletes its data, and code in other workspaces that still reads or writes it fails")
        elif kind == OT.OBJECT_VIEW:
            self.add("drop-view", obj, f"DROP VIEW {obj}: queries in other workspaces that still read it fail")
        elif kind == OT.OBJECT_MATVIEW:
            self.heavy_lock(obj, "DROP MATERIALIZED VIEW")
            self.add("drop-materialized-view", obj,
                     f"DROP MATERIALIZED VIEW {obj}: queries in other workspaces that still read it fail")
        elif kind in (OT.OBJECT_TYPE, OT.OBJECT_DOMAIN):
            self.add("drop-type", obj, f"DROP TYPE {obj}: columns, casts and code that still use the type break")
        elif kind in (OT.OBJECT_FUNCTION, OT.OBJECT_PROCEDURE, OT.OBJECT_ROUTINE, OT.OBJECT_AGGREGATE):
            self.add("drop-function", obj, f"dropping {obj}: callers in other workspaces (and triggers) fail")
        elif kind == OT.OBJECT_SEQUENCE:
            self.add("drop-sequence", obj, f"DROP SEQUENCE {obj}: defaults and code calling nextval() on it fail")
        elif kind == OT.OBJECT_INDEX:
            if node.concurrent:
                self.needs_no_transaction("DROP INDEX CONCURRENTLY", obj)
            else:
                before = len(self.findings)
                self.heavy_lock(obj, "DROP INDEX")
                self.add("drop-index-non-concurrently", obj,
                         f"DROP INDEX {obj} without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on its table, "
                         "blocking reads and writes")
                self.index_drops.append((obj, self.findings[before:]))

    def _take_back_index_drops(self, table: str) -> None:
        """Forget the findings of the DROP INDEX statements just before a DROP TABLE of their table.

        alembic drops a table's indexes before the table; the drop of the table is the one
        finding. An index's table is known when its CREATE INDEX was seen (in this text, or in an
        earlier part of a dump); otherwise it is taken to be the table whose name it contains
        (``ix_orders__created`` for ``orders``), alembic's and most ORMs' naming convention.
        """
        relname = table.rsplit(".", 1)[-1]
        taken: list[Finding] = []
        for index, found in self.index_drops:
            known = self.session.index_tables.get(index)
            name = index.rsplit(".", 1)[-1]
            if known == table or (known is None and re.search(rf"(?:^|_){re.escape(relname)}(?:_|$)", name)):
                taken += found
        if not taken:
            return
        ids = {id(f) for f in taken}
        self.findings = [f for f in self.findings if id(f) not in ids]
        if any(f.rule == "missing-lock-timeout" for f in taken):
            self.timeout_reported = False                  # reported again at the DROP TABLE

    def _DropdbStmt(self, node: ast.DropdbStmt) -> None:
        self.add("drop-database", node.dbname, f"DROP DATABASE {node.dbname} deletes everything in it")

    # -- renames -------------------------------------------------------------------------------
    def _RenameStmt(self, node: ast.RenameStmt) -> None:
        kind = node.renameType
        if kind == OT.OBJECT_INDEX:                        # breaks no query (see the docs)
            if self.is_new(self.rel(node.relation)):
                self.created.add(self.sibling(node.relation, node.newname))
            return
        if kind in (OT.OBJECT_TABLE, OT.OBJECT_FOREIGN_TABLE, OT.OBJECT_VIEW, OT.OBJECT_MATVIEW):
            obj = self.rel(node.relation)
            if self.is_new(obj):
                self.created.add(self.sibling(node.relation, node.newname))
                return
            self.heavy_lock(obj, "ALTER ... RENAME")
            if kind in (OT.OBJECT_VIEW, OT.OBJECT_MATVIEW):
                self.add("rename-view", obj,
                         f"renaming {obj} to {node.newname}: queries in other workspaces that use the old name fail")
            else:
                self.add("rename-table", obj,
                         f"renaming {obj} to {node.newname}: code in other workspaces that uses the old name fails")
        elif kind in (OT.OBJECT_COLUMN, OT.OBJECT_ATTRIBUTE):
            table = self.rel(node.relation)
            column = f"{table}.{node.subname}"
            if self.is_new(table) or column in self.new_columns:
                return
            if kind == OT.OBJECT_COLUMN:
                self.heavy_lock(table, "ALTER TABLE ... RENAME COLUMN")
            self.add("rename-column", column,
                     f"renaming {column} to {node.newname}: code in other workspaces that uses the old name fails")
        elif kind in (OT.OBJECT_TYPE, OT.OBJECT_DOMAIN):
            obj = self.qualify(_names(node.object))
            if not self.is_new(obj):
                self.add("rename-type", obj, f"renaming type {obj} to {node.newname}: code and casts using the old name fail")
        elif kind == OT.OBJECT_SCHEMA:
            if f"schema:{node.subname}" not in self.created:
                self.add("rename-schema", node.subname,
                         f"renaming schema {node.subname} to {node.newname}: every qualified reference to it breaks")
        elif kind in (OT.OBJECT_FUNCTION, OT.OBJECT_PROCEDURE, OT.OBJECT_ROUTINE):
            obj = self.qualify(_names(getattr(node.object, "objname", None)))
            if not self.is_new(obj):
                self.add("rename-function", obj, f"renaming {obj} to {node.newname}: callers of the old name fail")

    def _AlterEnumStmt(self, node: ast.AlterEnumStmt) -> None:
        if node.oldVal is None:
            return                                         # ADD VALUE is additive
        obj = self.qualify(_names(node.typeName))
        if not self.is_new(obj):
            self.add("rename-enum-value", obj,
                     f"renaming enum label {node.oldVal!r} of {obj} to {node.newVal!r}: "
                     "code that writes or compares the old label fails")

    def _AlterObjectSchemaStmt(self, node: ast.AlterObjectSchemaStmt) -> None:
        if node.relation is not None:
            obj = self.rel(node.relation)
        elif isinstance(node.object, ast.ObjectWithArgs):
            obj = self.qualify(_names(node.object.objname))
        elif isinstance(node.object, (tuple, list)):
            obj = self.qualify(_names(node.object))
        else:
            return
        if self.is_new(obj):
            return
        if node.relation is not None:
            self.heavy_lock(obj, "ALTER ... SET SCHEMA")
        self.add("set-schema", obj,
                 f"moving {obj} to schema {node.newschema}: code that names it by its old schema fails")

    # -- data changes --------------------------------------------------------------------------
    def _TruncateStmt(self, node: ast.TruncateStmt) -> None:
        for rv in node.relations or ():
            table = self.rel(rv)
            if self.is_new(table) or self.is_bookkeeping(rv):
                continue
            self.heavy_lock(table, "TRUNCATE")
            self.add("truncate", table, f"TRUNCATE {table} deletes every row and takes an ACCESS EXCLUSIVE lock")

    def _UpdateStmt(self, node: ast.UpdateStmt) -> None:
        table = self.rel(node.relation)
        columns = [f"{table}.{t.name}" for t in node.targetList or () if isinstance(t, ast.ResTarget) and t.name]
        for column in columns:
            if self.new_column_rows.get(column) == "null":
                self.new_column_rows.pop(column)            # filled: its rows may now collide
        if node.whereClause is not None or self.is_new(table) or self.is_bookkeeping(node.relation):
            return
        if columns and all(c in self.new_columns for c in columns):
            self.add("unbatched-backfill", table,
                     f"filling new column{'s' if len(columns) > 1 else ''} "
                     f"{', '.join(c.rsplit('.', 1)[-1] for c in columns)} in one UPDATE writes a new version "
                     f"of every row of {table} and holds their row locks until the migration commits, "
                     "blocking other workspaces' writes to those rows")
        else:
            self.add("unfiltered-update", table,
                     f"UPDATE of every row of {table} in one transaction locks all rows and bloats the table "
                     "while other workspaces' code writes to it")

    def _DeleteStmt(self, node: ast.DeleteStmt) -> None:
        table = self.rel(node.relation)
        if self.is_new(table) or self.is_bookkeeping(node.relation):
            return
        if node.whereClause is None:
            self.add("unfiltered-delete", table, f"DELETE without WHERE removes every row of {table}")
        else:
            # a WHERE says nothing about how many rows go (``WHERE id > 0`` is every row)
            self.add("delete-rows", table, f"DELETE removes rows of {table}, data that live code and other "
                     "workspaces' data may rely on")

    # -- behaviour that existing code does not see coming ----------------------------------------
    def _RuleStmt(self, node: ast.RuleStmt) -> None:
        table = self.rel(node.relation)
        if self.is_new(table):
            return
        event = getattr(node.event, "name", str(node.event)).removeprefix("CMD_")
        self.add("create-rule", table,
                 f"rule {node.rulename} on {table} ({'DO INSTEAD' if node.instead else 'DO ALSO'} on {event}) "
                 "rewrites the queries existing code sends to the table"
                 + (": they silently do something else, or nothing" if node.instead else ""))

    def _CreatePolicyStmt(self, node: ast.CreatePolicyStmt) -> None:
        table = self.rel(node.table)
        if not self.is_new(table):
            self.add("create-policy", table, f"policy {node.policy_name} on {table} changes which rows existing "
                     "code can see and write once row-level security is on")

    def _AlterPolicyStmt(self, node: ast.AlterPolicyStmt) -> None:
        table = self.rel(node.table)
        if not self.is_new(table):
            self.add("create-policy", table, f"ALTER POLICY {node.policy_name} on {table} changes which rows "
                     "existing code can see and write")

    # -- maintenance and explicit locks --------------------------------------------------------
    def _VacuumStmt(self, node: ast.VacuumStmt) -> None:
        if not node.is_vacuumcmd:
            return                                         # ANALYZE
        names = [self.rel(r.relation) for r in node.rels or () if getattr(r, "relation", None)]
        obj = names[0] if names else None
        self.needs_no_transaction("VACUUM", obj)
        full = any(getattr(o, "defname", "") == "full" for o in node.options or ())
        if full and not (names and all(self.is_new(n) for n in names)):
            self.heavy_lock(obj, "VACUUM FULL")
            self.add("vacuum-full", obj, f"VACUUM FULL rewrites {obj or 'every table'} under an ACCESS EXCLUSIVE lock")

    def _ClusterStmt(self, node: ast.ClusterStmt) -> None:
        obj = self.rel(node.relation) if node.relation else None
        if obj is None or not self.is_new(obj):
            self.heavy_lock(obj, "CLUSTER")
            self.add("cluster", obj, f"CLUSTER rewrites {obj or 'every clustered table'} under an ACCESS EXCLUSIVE lock")

    def _LockStmt(self, node: ast.LockStmt) -> None:
        tables = [self.rel(rv) for rv in node.relations or ()]
        existing = [t for t in tables if not self.is_new(t)]
        if existing:
            self.heavy_lock(existing[0], "LOCK TABLE")
            self.add("lock-table", existing[0],
                     f"LOCK TABLE {', '.join(existing)} blocks other sessions until the migration commits")

    def _RefreshMatViewStmt(self, node: ast.RefreshMatViewStmt) -> None:
        obj = self.rel(node.relation)
        if not node.concurrent and not self.is_new(obj):
            self.heavy_lock(obj, "REFRESH MATERIALIZED VIEW")
            self.add("refresh-matview-non-concurrently", obj,
                     f"REFRESH MATERIALIZED VIEW {obj} without CONCURRENTLY blocks every read of it until done")

    def _CreateTrigStmt(self, node: ast.CreateTrigStmt) -> None:
        table = self.rel(node.relation)
        if not self.is_new(table):
            self.heavy_lock(table, "CREATE TRIGGER")
            self.add("create-trigger", table, f"trigger {node.trigname} on {table} runs code on every write that "
                     "existing code makes to the table: it can change, reject or redirect those writes")

    # -- ALTER TABLE ---------------------------------------------------------------------------
    def _AlterTableStmt(self, node: ast.AlterTableStmt) -> None:
        table = self.rel(node.relation)
        if self.is_new(table):
            return
        if node.objtype == OT.OBJECT_TYPE:                 # ALTER TYPE composite DROP ATTRIBUTE
            for cmd in node.cmds or ():
                if cmd.subtype == AT.AT_DropColumn:
                    self._at_DropColumn(table, cmd)
            return
        if node.objtype not in (OT.OBJECT_TABLE, OT.OBJECT_MATVIEW, OT.OBJECT_FOREIGN_TABLE):
            return
        for cmd in node.cmds or ():
            if cmd.subtype in _LIGHT_ALTER:
                continue
            if cmd.subtype == AT.AT_DetachPartition and getattr(cmd.def_, "concurrent", False):
                self.needs_no_transaction("DETACH PARTITION CONCURRENTLY", table)
                continue
            self.heavy_lock(table, "ALTER TABLE")
            handler = getattr(self, "_at_" + cmd.subtype.name[3:], None)
            if handler is not None:
                handler(table, cmd)

    def _at_AddColumn(self, table: str, cmd: ast.AlterTableCmd) -> None:
        col: Any = cmd.def_                               # ast.ColumnDef
        column = f"{table}.{col.colname}"
        self.new_columns.add(column)
        constraints = list(col.constraints or ())
        types = _names(col.typeName.names) if col.typeName else []
        typ = types[-1].lower() if types else ""
        default = next((c for c in constraints if c.contype == ConstrType.CONSTR_DEFAULT), None)
        identity = next((c for c in constraints if c.contype == ConstrType.CONSTR_IDENTITY), None)
        generated = next((c for c in constraints if c.contype == ConstrType.CONSTR_GENERATED), None)
        not_null = col.is_not_null or any(c.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY)
                                          for c in constraints)
        if typ in _SERIAL_TYPES:
            self.add("volatile-default", column,
                     f"adding {typ} column {column} fills every existing row from a sequence: "
                     f"the whole of {table} is rewritten under an ACCESS EXCLUSIVE lock")
        elif identity is not None:
            self.add("volatile-default", column,
                     f"adding identity column {column} fills every existing row: "
                     f"the whole of {table} is rewritten under an ACCESS EXCLUSIVE lock")
        elif generated is not None and generated.generated_kind != "v":
            self.add("add-stored-generated-column", column,
                     f"adding stored generated column {column} computes it for every row: "
                     f"{table} is rewritten under an ACCESS EXCLUSIVE lock")
        elif default is not None:
            volatile = self._volatile(default.raw_expr)
            if volatile:
                self.add("volatile-default", column,
                         f"the default of {column} calls {volatile}, evaluated per row: "
                         f"{table} is rewritten under an ACCESS EXCLUSIVE lock")
        elif not_null:
            self.new_column_rows[column] = "empty"
            self.add("add-column-not-null-without-default", column,
                     f"adding NOT NULL column {column} without a default fails if {table} has rows, and inserts "
                     "from other workspaces' code (which does not know the column) fail")
        else:
            self.new_column_rows[column] = "null"
        for c in constraints:
            if c.contype == ConstrType.CONSTR_PRIMARY:
                self.add("add-primary-key", table,
                         f"adding a primary key on {table} builds a unique index under an ACCESS EXCLUSIVE lock")
            elif c.contype == ConstrType.CONSTR_FOREIGN:
                ref = self.rel(c.pktable) if c.pktable else "?"
                self.add("add-foreign-key-validated", column,
                         f"an inline REFERENCES on new column {column} is validated at once: it scans {table} "
                         f"while blocking writes to it and to {ref}")
            elif c.contype == ConstrType.CONSTR_UNIQUE:
                self.add("add-unique-constraint", column,
                         f"a unique column on existing table {table} builds its index under an ACCESS EXCLUSIVE "
                         "lock and fails if existing rows would duplicate")

    @staticmethod
    def _volatile(expr: Any) -> str | None:
        """The name of a function in ``expr`` that is (or may be) volatile, else None."""
        for n in _walk(expr):
            if isinstance(n, ast.FuncCall):
                name = (_names(n.funcname) or ["?"])[-1].lower()
                if name in _VOLATILE_FUNCTIONS:
                    return f"{name}()"
                if name not in _NON_VOLATILE_FUNCTIONS:
                    return f"{name}() (volatility unknown; user functions default to VOLATILE)"
        return None

    def _at_DropColumn(self, table: str, cmd: ast.AlterTableCmd) -> None:
        column = f"{table}.{cmd.name}"
        if column not in self.new_columns:
            self.add("drop-column", column,
                     f"dropping {column}: code in other workspaces that still reads or writes it fails "
                     "(ORMs select every column they know)")

    def _at_ColumnDefault(self, table: str, cmd: ast.AlterTableCmd) -> None:
        column = f"{table}.{cmd.name}"
        if cmd.def_ is None and column not in self.new_columns:
            self.add("drop-default", column,
                     f"dropping the default of {column}: inserts from code that omits the column now store "
                     "NULL, or fail if it is NOT NULL")

    def _at_SetNotNull(self, table: str, cmd: ast.AlterTableCmd) -> None:
        column = f"{table}.{cmd.name}"
        if column not in self.new_columns:
            self.add("set-not-null", column,
                     f"SET NOT NULL on {column} scans {table} under an ACCESS EXCLUSIVE lock, fails on existing "
                     "NULLs, and inserts from code that omits the column start failing")

    def _at_AlterColumnType(self, table: str, cmd: ast.AlterTableCmd) -> None:
        column = f"{table}.{cmd.name}"
        col: Any = cmd.def_                               # ast.ColumnDef
        tn = col.typeName
        names = _names(tn.names)
        typ = names[-1].lower() if names else "?"
        shown = typ + (f"({','.join(str(getattr(m.val, 'ival', '?')) for m in tn.typmods)})" if tn.typmods else "")
        using = col.raw_default is not None
        wide = not using and not tn.arrayBounds and (
            typ in _WIDE_TYPES or (typ in _WIDE_WITHOUT_MODIFIER and not tn.typmods))
        if wide or column in self.new_columns:
            self.add("rewriting-type-change", column,
                     f"changing {column} to {shown} holds an ACCESS EXCLUSIVE lock on {table} and rewrites it "
                     "(plus its indexes) unless the change is binary-coercible, e.g. varchar(n) to text")
        elif using:
            self.add("narrow-column-type", column,
                     f"changing {column} to {shown} USING a conversion rewrites {table} and changes the values "
                     "and type that code in other workspaces reads and writes")
        else:
            self.add("narrow-column-type", column,
                     f"changing {column} to {shown} may truncate or reject existing values and breaks code that "
                     f"writes the old range; the old type is unknown here, so if this only widens, suppress "
                     "it with a reason")

    def _at_AddConstraint(self, table: str, cmd: ast.AlterTableCmd) -> None:
        c: Any = cmd.def_                                 # ast.Constraint
        name = f" {c.conname}" if c.conname else ""
        if c.contype == ConstrType.CONSTR_CHECK:
            self.add("add-check-constraint", table,
                     f"CHECK constraint{name} on {table} rejects writes from other workspaces' code that "
                     "violate it (and fails now if existing rows do)")
            if not c.skip_validation:
                self.add("add-check-validated", table,
                         f"CHECK constraint{name} without NOT VALID scans all of {table} under an ACCESS EXCLUSIVE lock")
        elif c.contype == ConstrType.CONSTR_FOREIGN:
            if not c.skip_validation:
                ref = self.rel(c.pktable) if c.pktable else "?"
                self.add("add-foreign-key-validated", table,
                         f"FOREIGN KEY{name} without NOT VALID scans {table} while blocking writes to it and to {ref}")
        elif c.contype == ConstrType.CONSTR_UNIQUE and not c.indexname and self._extends_a_key(table, _names(c.keys)):
            self.add("create-index-non-concurrently", table,
                     f"UNIQUE constraint{name} on {table} extends a unique key it already has, so it cannot fail, "
                     "but it builds its index under an ACCESS EXCLUSIVE lock")
        elif c.contype == ConstrType.CONSTR_UNIQUE and not c.indexname:
            self.add("add-unique-constraint", table,
                     f"UNIQUE constraint{name} on {table} builds its index under an ACCESS EXCLUSIVE lock, fails "
                     "on existing duplicates, and rejects duplicate writes from other workspaces' code")
        elif c.contype == ConstrType.CONSTR_PRIMARY and not c.indexname:
            self.add("add-primary-key", table,
                     f"PRIMARY KEY{name} on {table} builds a unique index (and checks NOT NULL) under an "
                     "ACCESS EXCLUSIVE lock")
        elif c.contype == ConstrType.CONSTR_EXCLUSION:
            self.add("add-exclusion-constraint", table,
                     f"EXCLUDE constraint{name} on {table} builds its index under an ACCESS EXCLUSIVE lock and "
                     "rejects conflicting writes from other workspaces' code")

    def _at_EnableRowSecurity(self, table: str, cmd: ast.AlterTableCmd) -> None:
        self.add("enable-row-level-security", table,
                 f"row-level security on {table}: every role but the owner now sees only the rows its "
                 "policies allow (none without a policy)")

    def _at_ForceRowSecurity(self, table: str, cmd: ast.AlterTableCmd) -> None:
        self.add("force-row-level-security", table,
                 f"FORCE ROW LEVEL SECURITY on {table}: its owner, the role the application connects as, now "
                 "sees and writes only the rows the policies allow (none without a policy)")

    def _toggle_trigger(self, table: str, cmd: ast.AlterTableCmd) -> None:
        what = cmd.subtype.name[3:] if cmd.subtype is not None else "?"
        self.add("toggle-trigger", table, f"ALTER TABLE {table} {what} {cmd.name or ''}".rstrip()
                 + ": writes of existing code now run different trigger code")

    _at_EnableTrig = _at_EnableAlwaysTrig = _at_EnableReplicaTrig = _at_EnableTrigAll = _at_EnableTrigUser = \
        _at_DisableTrig = _at_DisableTrigAll = _at_DisableTrigUser = _toggle_trigger

    def _toggle_rule(self, table: str, cmd: ast.AlterTableCmd) -> None:
        what = cmd.subtype.name[3:] if cmd.subtype is not None else "?"
        self.add("toggle-rule", table, f"ALTER TABLE {table} {what} {cmd.name or ''}".rstrip()
                 + ": queries of existing code are now rewritten differently")

    _at_EnableRule = _at_EnableAlwaysRule = _at_EnableReplicaRule = _at_DisableRule = _toggle_rule

    def _at_SetLogged(self, table: str, cmd: ast.AlterTableCmd) -> None:
        self.add("set-logged-unlogged", table, f"SET LOGGED rewrites {table} under an ACCESS EXCLUSIVE lock")

    def _at_SetUnLogged(self, table: str, cmd: ast.AlterTableCmd) -> None:
        self.add("set-logged-unlogged", table,
                 f"SET UNLOGGED rewrites {table} under an ACCESS EXCLUSIVE lock (and its data is lost on a crash)")
