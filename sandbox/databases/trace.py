"""Evidence from the gate's replay: a revision's offline SQL run statement by statement on the
gate's fresh clone of the baseline, and the data checks its constraints imply.

:func:`trace` sends one revision's rendered offline SQL (data for the scratch database: no
project code runs here) to the clone over sandbox's own connection, one statement at a time,
exactly as the SQL says: alembic's ``BEGIN;`` … ``COMMIT;`` make one transaction, and an
``autocommit_block()`` (``COMMIT;`` … ``BEGIN;``) runs its statements outside it. SQL without any
transaction statement is wrapped in one transaction, as alembic would run it online. For each
statement it records

* the locks its own backend took that it did not hold before (``pg_locks`` where ``pid =
  pg_backend_pid()``), on relations that existed before the revision (the locks are read while
  the transaction is still open; a statement run outside a transaction has released its locks
  when it returns, so none are recorded for it);
* whether it rewrote a table it touched (its ``relfilenode`` changed; ``TRUNCATE`` is not a
  rewrite);
* how long it held them: from the statement's start to the commit of its transaction;
* the rows of each table it touched on the baseline (``count(*)`` below 64 MB, else
  ``reltuples``), read before the revision runs;
* the :class:`DataCheck` s of the constraints it adds that existing rows can break (a unique index
  or constraint, a primary key, ``SET NOT NULL``, a NOT NULL column without a default, ``CHECK``,
  a foreign key, ``VALIDATE CONSTRAINT``, a narrowing type change).

The replay itself is the check against the baseline: a statement that fails there ends the trace
with a :class:`Failure` naming it. :func:`probe` runs the data checks on the live workspaces'
databases: sandbox's own read-only ``SELECT count(*)``, built with ``psycopg.sql.Identifier``;
an expression from the migration (a ``CHECK``, a partial index's ``WHERE``, an index
expression) is deparsed by pglast only when it is made of columns, constants, operators, casts and
a short list of built-in functions, and otherwise not probed. :func:`annotate` attaches the
result to the revision's findings as ``evidence`` (see ``docs/migration-rules.md``, "Evidence from
the replay").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pglast import ast, enums, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream
from psycopg import sql

from sandbox.databases.base import ConnInfo
from sandbox.databases.sqltext import shorten, statements, walk
from sandbox.errors import MigrationError
from sandbox.migrations.alembic import scrub_secrets

__all__ = ["DataCheck", "Failure", "Lock", "ProbeResult", "StatementTrace", "Trace", "probe",
           "statements", "trace"]

AT = enums.AlterTableType
ConstrType = enums.ConstrType

# pg_locks modes, weakest first
LOCK_MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
              "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
TINY_TABLE = 1000                    # rows: below this a lock warning says the table is tiny
COUNT_BELOW_BYTES = 64 * 1024 * 1024  # count(*) a table smaller than this; else trust reltuples
PROBE_TIMEOUT = "30s"                # per data check on a workspace's database

TableRef = tuple[str | None, str]    # (schema as written, or None; table)
RelIdent = Callable[[TableRef], sql.Composable]


@dataclass(frozen=True)
class Lock:
    """A lock a statement took on a relation that existed before the revision."""

    mode: str           # as pg_locks says: "AccessExclusiveLock"
    relation: str       # "public.users"
    kind: str           # pg_class.relkind: r table, p partitioned, m matview, i index, S sequence


@dataclass(frozen=True)
class DataCheck:
    """A constraint a statement adds that existing rows can break, and how to count those rows.

    ``build`` gets a function that renders a table reference for the target database and returns
    the probe (``SELECT <count>``); ``skipped`` says why it is not probed.
    """

    rules: tuple[str, ...]       # the findings (by rule id) whose statement this backs
    object: str                  # "public.t" or "public.t.col", named as the linter names it
    table: str                   # "public.t"
    what: str                    # "rows with NULL in public.users.email"
    build: Callable[[RelIdent], sql.Composed] | None = None
    skipped: str | None = None


@dataclass
class StatementTrace:
    """What one statement did on the clone."""

    index: int                    # 1-based, among the revision's statements
    text: str
    locks: list[Lock] = field(default_factory=list)      # taken by it (not held before it ran)
    holding: list[Lock] = field(default_factory=list)    # all its transaction holds once it ran
    rewritten: list[str] = field(default_factory=list)   # tables (and matviews) whose relfilenode changed
    duration_ms: float = 0.0
    held_ms: float | None = None  # start → commit of its transaction (its own duration outside one)
    in_transaction: bool = True
    tables: list[str] = field(default_factory=list)      # tables it named or locked, existing before
    checks: list[DataCheck] = field(default_factory=list)

    @property
    def rewrite(self) -> bool:
        """It rewrote a table or materialized view that existed before."""
        return bool(self.rewritten)


@dataclass(frozen=True)
class Failure:
    """The statement the replay stopped at."""

    index: int
    statement: str
    error: str
    sqlstate: str | None
    committed: bool          # an earlier part of the revision was committed: the clone has moved on

    def describe(self) -> str:
        return f"statement {self.index} `{shorten(self.statement)}` failed: {self.error}"


@dataclass
class Trace:
    """One revision replayed statement by statement."""

    statements: list[StatementTrace] = field(default_factory=list)
    rows: dict[str, int | None] = field(default_factory=dict)   # existing tables touched → rows at start
    failure: Failure | None = None
    writes: set[str] = field(default_factory=set)   # tables its DML wrote ("*": a DO block or a call)


@dataclass
class ProbeResult:
    """One data check on the live workspaces' databases."""

    fails_on: dict[str, int] = field(default_factory=dict)   # workspace → rows that break it
    checked: list[str] = field(default_factory=list)         # workspaces whose data was checked
    skipped: str | None = None


# -- splitting -----------------------------------------------------------------------------------

# -- the replay ----------------------------------------------------------------------------------

@dataclass
class _Rel:
    schema: str          # as seen by the caller (after ``rename``)
    name: str
    kind: str
    filenode: int
    reltuples: float
    real_schema: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


_RELATIONS = sql.SQL(
    "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text, c.relfilenode::int8, c.reltuples::float8 "
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I', 'S') AND {}")
_LOCKS = ("SELECT relation::int8, mode FROM pg_catalog.pg_locks WHERE pid = pg_catalog.pg_backend_pid() "
          "AND locktype = 'relation' AND granted "
          "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())")


class _Session:
    """The trace's connection to the clone, and sandbox's own reads on it (relations, locks)."""

    def __init__(self, conn: psycopg.Connection[Any], schemas: Sequence[str] | None,
                 rename: Mapping[str, str]) -> None:
        self.conn = conn
        self.rename = rename
        if schemas:
            self.where: sql.Composable = sql.SQL("n.nspname = ANY({})").format(sql.Literal(list(schemas)))
        else:
            self.where = sql.SQL("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                                 "AND n.nspname NOT LIKE 'pg\\_%'")
        row = conn.execute("SELECT pg_catalog.current_schema()").fetchone()
        self.default_schema = str(row[0]) if row and row[0] else "public"

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def relations(self) -> dict[int, _Rel]:
        rows = self.conn.execute(_RELATIONS.format(self.where)).fetchall()
        return {int(oid): _Rel(self.rename.get(nsp, nsp), name, kind, int(node), float(tuples), nsp)
                for oid, nsp, name, kind, node, tuples in rows}

    def locks(self) -> set[tuple[int, str]]:
        return {(int(oid), str(mode)) for oid, mode in self.conn.execute(_LOCKS).fetchall() if oid is not None}

    def quietly(self, fn: Callable[[], Any]) -> Any:
        """Run a read of sandbox's own; inside the revision's transaction, under a savepoint."""
        if not self.in_transaction:
            try:
                return fn()
            except psycopg.Error:
                return None
        self.conn.execute("SAVEPOINT sandbox_trace")
        try:
            out = fn()
        except psycopg.Error:
            self.conn.execute("ROLLBACK TO SAVEPOINT sandbox_trace")
            return None
        self.conn.execute("RELEASE SAVEPOINT sandbox_trace")
        return out

    def logical(self, schema: str | None) -> str:
        return self.rename.get(schema or self.default_schema, schema or self.default_schema)


def trace(info: ConnInfo, sql_text: str, *, schemas: Sequence[str] | None = None,
          rename: Mapping[str, str] | None = None, prior_writes: Iterable[str] = (),
          deadline: float | None = None) -> Trace:
    """Run one revision's offline SQL on ``info`` (the gate's scratch clone) statement by statement.

    ``schemas`` limits the relations looked at (the schema strategy's scratch schema) and
    ``rename`` names them as the findings do (``{"sbx_…": "public"}``). ``prior_writes`` are
    tables that earlier revisions of the chain wrote to: their data checks are not probed on
    workspaces (a backfill there would have changed the rows). A statement that fails ends the
    trace with ``failure`` set; the open transaction is rolled back. ``deadline`` (a
    ``time.monotonic()`` value) cancels whatever statement runs then: the SQL can ``SET
    statement_timeout = 0``, so the gate's overall deadline is enforced from here too. Raises
    :class:`MigrationError` when the SQL does not parse or the clone cannot be reached.
    """
    stmts = statements(sql_text)
    try:
        conn = psycopg.connect(**info.kwargs(), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to the gate's clone: {scrub_secrets(str(exc).strip())}") from exc
    watchdog: threading.Timer | None = None
    if deadline is not None:
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), conn.cancel)
        watchdog.daemon = True
        watchdog.start()
    try:
        with conn:
            return _replay(_Session(conn, schemas, rename or {}), stmts, set(prior_writes))
    except psycopg.Error as exc:     # sandbox's own reads failed: the clone went away
        raise MigrationError(f"tracing the replay failed: {scrub_secrets(str(exc).strip())}") from exc
    finally:
        if watchdog is not None:
            watchdog.cancel()


def _replay(s: _Session, stmts: Sequence[tuple[str, Any]], writes: set[str]) -> Trace:
    conn = s.conn
    out = Trace(writes=writes)
    rels = s.relations()
    existing = set(rels)
    out.rows = _count_rows(s, rels, stmts)
    open_: list[tuple[StatementTrace, float]] = []       # statements of the open transaction
    committed = False

    def fail(index: int, text: str, exc: psycopg.Error) -> Trace:
        if s.in_transaction:
            conn.execute("ROLLBACK")
        message = (exc.diag.message_primary or str(exc)).strip()
        out.failure = Failure(index, text, scrub_secrets(message), exc.sqlstate, committed)
        return out

    if not any(isinstance(node, ast.TransactionStmt) for _, node in stmts):
        conn.execute("BEGIN")                          # as alembic runs a revision online: one transaction
    for index, (text, node) in enumerate(stmts, start=1):
        if isinstance(node, ast.TransactionStmt):
            was_open = s.in_transaction
            try:
                conn.execute(text)                     # a COMMIT can fail too (deferred constraints)
            except psycopg.Error as exc:
                return fail(index, text, exc)
            if was_open and not s.in_transaction:
                committed = committed or node.kind == enums.TransactionStmtKind.TRANS_STMT_COMMIT
                _close(open_, time.monotonic())
            continue
        st = StatementTrace(index=index, text=text, in_transaction=s.in_transaction)
        st.checks = _checks(s, node, out.writes)
        before = s.locks() if st.in_transaction else set()
        start = time.monotonic()
        try:
            conn.execute(text)
        except psycopg.Error as exc:
            out.statements.append(st)
            return fail(index, text, exc)
        st.duration_ms = (time.monotonic() - start) * 1000
        after = s.relations()
        known = {**rels, **after}
        now = s.locks() if st.in_transaction else set()   # outside one, they are released already
        strongest = _strongest(now - before, existing, known)
        st.locks = _as_locks(strongest, known)
        st.holding = _as_locks(_strongest(now, existing, known), known)
        if not isinstance(node, ast.TruncateStmt):     # TRUNCATE swaps in an empty file: not a rewrite
            for oid in strongest:
                if (oid in rels and oid in after and rels[oid].kind in ("r", "m")
                        and rels[oid].filenode != after[oid].filenode):
                    st.rewritten.append(rels[oid].qualified)
        named = {f"{s.logical(rv.schemaname)}.{rv.relname}" for rv in walk(node) if isinstance(rv, ast.RangeVar)}
        st.tables = sorted({known[o].qualified for o in strongest if known[o].kind in ("r", "p", "m")}
                           | {t for t in named if t in out.rows})
        for table in st.tables:
            if table not in out.rows:                  # locked, never named (a DO block): the estimate
                rel = next((r for r in rels.values() if r.qualified == table), None)
                out.rows[table] = int(rel.reltuples) if rel and rel.reltuples >= 0 else None
        out.writes |= _writes(s, node)
        if st.in_transaction:
            open_.append((st, start))
        else:
            st.held_ms = st.duration_ms
        rels = after
        out.statements.append(st)
    if s.in_transaction:
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            return fail(len(stmts), "COMMIT", exc)
        _close(open_, time.monotonic())
    return out


def _strongest(locks: Iterable[tuple[int, str]], existing: set[int], known: Mapping[int, _Rel]) -> dict[int, str]:
    out: dict[int, str] = {}
    for oid, mode in locks:
        if oid in existing and oid in known and (oid not in out or LOCK_MODES.index(mode) > LOCK_MODES.index(out[oid])):
            out[oid] = mode
    return out


def _as_locks(strongest: Mapping[int, str], known: Mapping[int, _Rel]) -> list[Lock]:
    return sorted((Lock(mode, known[oid].qualified, known[oid].kind) for oid, mode in strongest.items()),
                  key=lambda lk: (-LOCK_MODES.index(lk.mode), lk.relation))


def _close(open_: list[tuple[StatementTrace, float]], at: float) -> None:
    for st, start in open_:
        st.held_ms = (at - start) * 1000
    open_.clear()


def _count_rows(s: _Session, rels: Mapping[int, _Rel], stmts: Sequence[tuple[str, Any]]) -> dict[str, int | None]:
    """Rows of the existing tables the SQL names, before it runs: count(*) when small, else reltuples."""
    by_name = {(r.real_schema, r.name): r for r in rels.values() if r.kind in ("r", "p", "m")}
    oid_of = {(r.real_schema, r.name): oid for oid, r in rels.items()}
    out: dict[str, int | None] = {}
    for _, node in stmts:
        for rv in walk(node):
            if not isinstance(rv, ast.RangeVar) or not rv.relname:
                continue
            key = (rv.schemaname or s.default_schema, rv.relname)
            rel = by_name.get(key)
            if rel is None or rel.qualified in out:
                continue
            out[rel.qualified] = _rows_of(s, oid_of[key], rel)
    return out


def _rows_of(s: _Session, oid: int, rel: _Rel) -> int | None:
    estimate = int(rel.reltuples) if rel.reltuples >= 0 else None
    row = s.conn.execute("SELECT pg_catalog.pg_relation_size(%s::oid)", (oid,)).fetchone()
    size = int(row[0]) if row and row[0] is not None else 0
    if rel.kind != "p" and size >= COUNT_BELOW_BYTES and estimate is not None:
        return estimate
    try:
        with s.conn.transaction():
            s.conn.execute("SET LOCAL statement_timeout = '10s'")
            counted = s.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(rel.real_schema, rel.name))).fetchone()
        return int(counted[0]) if counted else estimate
    except psycopg.Error:
        return estimate


def _writes(s: _Session, node: Any) -> set[str]:
    """Tables a statement writes rows into (``*``: code that may write anywhere)."""
    if isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)) and node.relation:
        return {f"{s.logical(node.relation.schemaname)}.{node.relation.relname}"}
    if isinstance(node, (ast.DoStmt, ast.CallStmt, ast.SelectStmt)):
        return {"*"}
    return set()


# -- data checks -----------------------------------------------------------------------------------

_SAFE_FUNCTIONS = frozenset({
    "lower", "upper", "length", "char_length", "character_length", "octet_length", "btrim", "ltrim", "rtrim",
    "trim", "substr", "substring", "left", "right", "strpos", "position", "replace", "abs", "round", "trunc",
    "floor", "ceil", "ceiling", "sign", "mod", "date_trunc", "date_part", "extract", "now", "timezone",
    "array_length", "cardinality", "jsonb_typeof", "json_typeof", "jsonb_array_length", "to_char",
})
_SAFE_NODES = (ast.ColumnRef, ast.A_Const, ast.A_Expr, ast.BoolExpr, ast.NullTest, ast.BooleanTest, ast.TypeCast,
               ast.TypeName, ast.CoalesceExpr, ast.MinMaxExpr, ast.CaseExpr, ast.CaseWhen, ast.A_ArrayExpr,
               ast.SQLValueFunction, ast.String, ast.Integer, ast.Float, ast.Boolean, ast.BitString,
               ast.CollateClause, ast.RowExpr, ast.FuncCall)


def _safe_expr(node: Any) -> sql.Composable | None:
    """The expression deparsed for a probe, or None when it holds anything but plain columns, constants,
    operators, casts and a few built-in functions (no subqueries, no user functions)."""
    for n in walk(node):
        if not isinstance(n, _SAFE_NODES):
            return None
        if isinstance(n, ast.ColumnRef) and not all(isinstance(f, ast.String) for f in n.fields or ()):
            return None
        if isinstance(n, ast.FuncCall):
            names = [f.sval for f in n.funcname or () if isinstance(f, ast.String)]
            if (not names or names[-1] not in _SAFE_FUNCTIONS or (len(names) > 1 and names[0] != "pg_catalog")
                    or n.agg_filter is not None or n.over is not None or n.agg_star):
                return None
    try:
        text = RawStream()(node)
    except Exception:  # noqa: BLE001 - pglast cannot print it: no probe
        return None
    return sql.SQL("(" + text + ")")


def _col(name: str) -> sql.Composable:
    return sql.Identifier(name)


def _not_null_all(exprs: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(e) for e in exprs)


def _duplicates(table: TableRef, exprs: list[sql.Composable], where: sql.Composable | None,
                nulls_distinct: bool, primary: bool) -> Callable[[RelIdent], sql.Composed]:
    def build(rel: RelIdent) -> sql.Composed:
        conds: list[sql.Composable] = [_not_null_all(exprs)] if nulls_distinct else []
        if where is not None:
            conds.append(where)
        dup = sql.SQL("SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {t}{w} GROUP BY {g} "
                      "HAVING count(*) > 1) AS dup").format(
            t=rel(table), w=sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL(""),
            g=sql.SQL(", ").join(exprs))
        if not primary:
            return dup
        nulls = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
            rel(table), sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(e) for e in exprs))
        return sql.SQL("SELECT ({}) + ({})").format(dup, nulls)
    return build


def _foreign_key(table: TableRef, cols: list[str], ref: TableRef, ref_cols: list[str]) -> Callable[[RelIdent], sql.Composed]:
    def build(rel: RelIdent) -> sql.Composed:
        child, parent = sql.Identifier("sandbox_child"), sql.Identifier("sandbox_parent")
        present = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("sandbox_child", c))
                                        for c in cols)
        match = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier("sandbox_parent", p),
                                                                sql.Identifier("sandbox_child", c))
                                      for c, p in zip(cols, ref_cols))
        return sql.SQL("SELECT count(*) FROM {t} AS {c} WHERE {present} AND NOT EXISTS "
                       "(SELECT 1 FROM {r} AS {p} WHERE {match})").format(
            t=rel(table), c=child, present=present, r=rel(ref), p=parent, match=match)
    return build


def _count_where(table: TableRef, cond: sql.Composable | None) -> Callable[[RelIdent], sql.Composed]:
    def build(rel: RelIdent) -> sql.Composed:
        if cond is None:
            return sql.SQL("SELECT count(*) FROM {}").format(rel(table))
        return sql.SQL("SELECT count(*) FROM {} WHERE {}").format(rel(table), cond)
    return build


def _narrowing(column: str, type_name: Any) -> sql.Composable | None:
    """A condition true for values that do not fit the new type, for the types it knows."""
    names = [n.sval for n in type_name.names or () if isinstance(n, ast.String)]
    base = names[-1] if names else ""
    mods = [int(m.val.ival or 0) for m in type_name.typmods or ()
            if isinstance(m, ast.A_Const) and isinstance(m.val, ast.Integer)]
    c = _col(column)
    if type_name.arrayBounds:
        return None
    if base in ("varchar", "bpchar") and mods:
        return sql.SQL("pg_catalog.char_length({}::text) > {}").format(c, sql.Literal(mods[0]))
    bounds = {"int2": (-32768, 32767), "int4": (-2147483648, 2147483647)}
    if base in bounds:
        lo, hi = bounds[base]
        return sql.SQL("{}::numeric NOT BETWEEN {} AND {}").format(c, sql.Literal(lo), sql.Literal(hi))
    if base == "numeric" and mods:
        precision, scale = mods[0], mods[1] if len(mods) > 1 else 0
        return sql.SQL("abs(round({}::numeric, {})) >= 10::numeric ^ {}").format(
            c, sql.Literal(scale), sql.Literal(precision - scale))
    return None


def _checks(s: _Session, node: Any, writes: set[str]) -> list[DataCheck]:
    """The data checks of one statement (reads the clone for a foreign key's target or a constraint's definition)."""
    out: list[DataCheck] = []
    if isinstance(node, ast.IndexStmt) and node.unique and node.relation is not None:
        ref: TableRef = (node.relation.schemaname, str(node.relation.relname))
        table = f"{s.logical(ref[0])}.{ref[1]}"
        out.append(_unique_check(table, ref, list(node.indexParams or ()), node.whereClause,
                                 not node.nulls_not_distinct, False, ("add-unique-constraint",)))
    elif isinstance(node, ast.AlterTableStmt) and node.relation is not None and node.objtype == enums.ObjectType.OBJECT_TABLE:
        ref = (node.relation.schemaname, str(node.relation.relname))
        table = f"{s.logical(ref[0])}.{ref[1]}"
        for cmd in node.cmds or ():
            out += _alter_checks(s, table, ref, cmd)
    for i, check in enumerate(out):
        if check.skipped is None and (check.table in writes or "*" in writes):
            out[i] = DataCheck(check.rules, check.object, check.table, check.what, check.build,
                               skipped=f"an earlier statement writes to {check.table}: the workspaces' rows "
                               "would change first")
    return out


def _unique_check(table: str, ref: TableRef, params: list[Any], where: Any, nulls_distinct: bool,
                  primary: bool, rules: tuple[str, ...]) -> DataCheck:
    exprs: list[sql.Composable] = []
    shown: list[str] = []
    for p in params:
        if isinstance(p, ast.IndexElem) and p.name:
            exprs.append(_col(p.name))
            shown.append(p.name)
        elif isinstance(p, ast.IndexElem) and p.expr is not None and (e := _safe_expr(p.expr)) is not None:
            exprs.append(e)
            shown.append(RawStream()(p.expr))
        elif isinstance(p, ast.String) and p.sval:
            exprs.append(_col(p.sval))
            shown.append(p.sval)
        else:
            return DataCheck(rules, table, table, f"duplicates in {table}", skipped="an index expression it cannot probe")
    cond = _safe_expr(where) if where is not None else None
    what = f"rows of {table} that share ({', '.join(shown)})" + (" or hold NULL there" if primary else "")
    if where is not None and cond is None:
        return DataCheck(rules, table, table, what, skipped="a partial index predicate it cannot probe")
    if not exprs:
        return DataCheck(rules, table, table, what, skipped="no key columns")
    return DataCheck(rules, table, table, what, _duplicates(ref, exprs, cond, nulls_distinct, primary))


def _alter_checks(s: _Session, table: str, ref: TableRef, cmd: Any) -> list[DataCheck]:
    if not isinstance(cmd, ast.AlterTableCmd):
        return []
    if cmd.subtype == AT.AT_SetNotNull and cmd.name:
        obj = f"{table}.{cmd.name}"
        return [DataCheck(("set-not-null",), obj, table, f"rows with NULL in {obj}",
                          _count_where(ref, sql.SQL("{} IS NULL").format(_col(cmd.name))))]
    if cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        col = cmd.def_
        cons = [c for c in col.constraints or () if isinstance(c, ast.Constraint)]
        not_null = any(c.contype == ConstrType.CONSTR_NOTNULL for c in cons)
        filled = any(c.contype in (ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY, ConstrType.CONSTR_GENERATED)
                     for c in cons)
        if not_null and not filled:
            obj = f"{table}.{col.colname}"
            return [DataCheck(("add-column-not-null-without-default",), obj, table,
                              f"rows of {table} (each would need a value in {col.colname})", _count_where(ref, None))]
        return []
    if cmd.subtype == AT.AT_AlterColumnType and cmd.name and isinstance(cmd.def_, ast.ColumnDef):
        obj = f"{table}.{cmd.name}"
        what = f"values of {obj} that do not fit {RawStream()(cmd.def_.typeName) if cmd.def_.typeName else '?'}"
        if cmd.def_.raw_default is not None:
            return [DataCheck(("narrow-column-type",), obj, table, what, skipped="a USING expression")]
        cond = _narrowing(cmd.name, cmd.def_.typeName)
        if cond is None:
            return []
        return [DataCheck(("narrow-column-type",), obj, table, what,
                          _count_where(ref, sql.SQL("{} IS NOT NULL AND {}").format(_col(cmd.name), cond)))]
    if cmd.subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        if cmd.def_.skip_validation:
            return []                           # NOT VALID: existing rows are not checked
        return _constraint_check(s, table, ref, cmd.def_)
    if cmd.subtype == AT.AT_ValidateConstraint and cmd.name:
        con = _constraint_named(s, ref, cmd.name)
        return _constraint_check(s, table, ref, con) if con is not None else []
    return []


def _constraint_check(s: _Session, table: str, ref: TableRef, con: Any) -> list[DataCheck]:
    kind = con.contype
    if kind in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY) and not con.indexname:
        primary = kind == ConstrType.CONSTR_PRIMARY
        return [_unique_check(table, ref, list(con.keys or ()), None, not con.nulls_not_distinct, primary,
                              ("add-primary-key",) if primary else ("add-unique-constraint",))]
    if kind == ConstrType.CONSTR_CHECK and con.raw_expr is not None:
        rules: tuple[str, ...] = ("add-check-constraint", "add-check-validated")
        expr = _safe_expr(con.raw_expr)
        what = f"rows of {table} that fail CHECK ({RawStream()(con.raw_expr)})"
        if expr is None:
            return [DataCheck(rules, table, table, what, skipped="an expression it cannot probe safely")]
        return [DataCheck(rules, table, table, what, _count_where(ref, sql.SQL("NOT {}").format(expr)))]
    if kind == ConstrType.CONSTR_FOREIGN and con.pktable is not None:
        cols = [str(c.sval) for c in con.fk_attrs or () if isinstance(c, ast.String)]
        target: TableRef = (con.pktable.schemaname, str(con.pktable.relname))
        ref_cols = [str(c.sval) for c in con.pk_attrs or () if isinstance(c, ast.String)] or _primary_key(s, target)
        rules = ("add-foreign-key-validated",)
        what = f"rows of {table} whose ({', '.join(cols)}) has no match in {s.logical(target[0])}.{target[1]}"
        if not cols or len(cols) != len(ref_cols):
            return [DataCheck(rules, table, table, what, skipped="the referenced key is unknown")]
        return [DataCheck(rules, table, table, what, _foreign_key(ref, cols, target, ref_cols))]
    return []


def _primary_key(s: _Session, ref: TableRef) -> list[str]:
    name = sql.Identifier(*[p for p in ref if p]).as_string(s.conn)

    def read() -> list[str]:
        rows = s.conn.execute(
            "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = pg_catalog.to_regclass(%s) AND i.indisprimary "
            "ORDER BY pg_catalog.array_position(i.indkey::int2[], a.attnum)", (name,)).fetchall()
        return [str(r[0]) for r in rows]
    return s.quietly(read) or []


def _constraint_named(s: _Session, ref: TableRef, conname: str) -> Any:
    """The definition of an existing constraint (for VALIDATE CONSTRAINT), parsed; None if unknown."""
    name = sql.Identifier(*[p for p in ref if p]).as_string(s.conn)

    def read() -> str | None:
        row = s.conn.execute("SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
                             "WHERE conrelid = pg_catalog.to_regclass(%s) AND conname = %s", (name, conname)).fetchone()
        return str(row[0]) if row and row[0] else None
    definition = s.quietly(read)
    if not definition:
        return None
    try:
        stmt = parse_sql(f"ALTER TABLE sandbox_probe ADD CONSTRAINT sandbox_probe {definition}")[0].stmt
    except ParseError:
        return None
    cmd = stmt.cmds[0] if isinstance(stmt, ast.AlterTableStmt) and stmt.cmds else None
    return cmd.def_ if cmd is not None and isinstance(cmd.def_, ast.Constraint) else None


# -- probing the workspaces' databases ---------------------------------------------------------------

_NOT_APPLICABLE = (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.InvalidSchemaName,
                   psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedObject)


def probe(targets: dict[str, ConnInfo], tr: Trace) -> tuple[dict[tuple[int, int], ProbeResult], list[str]]:
    """Run ``tr``'s data checks on each database in ``targets`` (workspace name → its database).

    Each check is one read-only transaction with a statement and a lock timeout. A database whose
    schema lacks the table or column is not applicable and is left out of ``checked``; one that does
    not answer is noted and removed from ``targets`` (the next revision does not wait for it again).
    Returns the results keyed by (statement index, check number) and notes.
    """
    checks = [((st.index, i), c) for st in tr.statements for i, c in enumerate(st.checks)]
    results = {key: ProbeResult(skipped=c.skipped) for key, c in checks}
    notes: list[str] = []
    todo = [(key, c) for key, c in checks if c.skipped is None and c.build is not None]
    if not todo:
        return results, notes
    for name, info in list(targets.items()):
        qualify = not info.options        # the schema strategy: the workspace's own schema stands for public

        def rel(ref: TableRef, qualify: bool = qualify) -> sql.Composable:
            schema, table = ref
            if schema and (qualify or schema != "public"):
                return sql.Identifier(schema, table)
            return sql.Identifier(table)
        try:
            conn = psycopg.connect(**info.kwargs(), autocommit=True, connect_timeout=5)
        except psycopg.Error:
            notes.append(f"workspace {name}'s database did not answer: its data was not checked")
            del targets[name]
            continue
        with conn:
            for key, check in todo:
                assert check.build is not None
                try:
                    with conn.transaction():
                        conn.execute("SET TRANSACTION READ ONLY")
                        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(PROBE_TIMEOUT)))
                        conn.execute("SET LOCAL lock_timeout = '5s'")
                        row = conn.execute(check.build(rel)).fetchone()
                except _NOT_APPLICABLE:
                    continue
                except psycopg.Error as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    notes.append(f"workspace {name}: {check.what} not checked: {scrub_secrets(first)}")
                    continue
                found = int(row[0]) if row and row[0] is not None else 0
                results[key].checked.append(name)
                if found:
                    results[key].fails_on[name] = found
    return results, notes


# -- evidence on findings ------------------------------------------------------------------------------
