"""Schema catalog snapshots and their diff: what a migration really removed or narrowed.

The static linter reads a migration's SQL; this module looks at the database itself. The gate
snapshots the catalog of a fresh baseline clone, applies one revision, snapshots again and
diffs. Whatever was removed or narrowed is a finding, however the migration did it (raw SQL,
``op.*`` calls, a data-dependent ``DO`` block).

:func:`snapshot` reads ``pg_catalog`` with ``search_path = pg_catalog``, so every user object in
a definition is schema-qualified (``public.users``) whatever the caller's search_path. With
``rename={"sbx_x_ws_a": "public"}`` the workspace schema of the schema strategy is read under a
logical name, in keys and inside definitions, so it compares with a baseline kept elsewhere.

:func:`diff` speaks the linter's rule ids where the meaning is the same (see
:mod:`sandbox.migrations.lint`), so the gate can drop a dynamic finding that repeats a static
one. It adds ``drop-index`` (a warning: no data is lost, queries may slow down). Decisions:

* a dropped default is ``drop-default`` (destructive), as in the linter: code that omits the
  column now stores NULL, or fails when the column is NOT NULL;
* a widening type change that PostgreSQL does without a rewrite (``varchar(n)`` to
  ``varchar(m>n)`` or ``text``, ``numeric`` precision up at the same scale) is silent; one that
  rewrites the table (``integer`` to ``bigint``) is the ``rewriting-type-change`` lock warning;
  anything else is ``narrow-column-type``;
* a new NOT NULL column without a default on an existing table is
  ``add-column-not-null-without-default``: the one addition that breaks old code's inserts;
* new CHECK, UNIQUE (constraint or unique index) and EXCLUDE constraints on existing tables are
  destructive; a new PRIMARY KEY and a validated FOREIGN KEY are lock warnings, as in the linter;
* a table, column or type that disappears while one of identical structure appears is reported
  as ``rename-table``/``rename-column``/``rename-type``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from sandbox.errors import DatabaseError
from sandbox.migrations.alembic import scrub_secrets
from sandbox.migrations.findings import Finding, Kind, default_severity

__all__ = ["RULE_KINDS", "Catalog", "classify_type_change", "diff", "snapshot"]

DEFAULT_EXCLUDED_TABLES = ("alembic_version",)

JSON = dict[str, Any]


@dataclass(frozen=True)
class Catalog:
    """The user-visible schema of a database; every mapping is keyed by qualified name.

    Values are plain JSON values (``json.dumps(dataclasses.asdict(c))`` works):

    * ``tables``: ``"s.t"`` → ``{"kind": "table|partitioned|foreign",
      "columns": {name: {"type", "nullable", "default", "identity", "generated"}}}``
    * ``views``: ``"s.v"`` → ``{"materialized": bool, "definition": str, "columns": {name: type}}``
    * ``constraints``: ``"s.t.name"`` → ``{"table", "type", "definition", "columns", "validated",
      "index"}`` (type: primary key, unique, check, foreign key, exclusion)
    * ``indexes``: ``"s.i"`` → ``{"table", "definition", "unique", "columns", "constraint"}``
    * ``types``: ``"s.t"`` → ``{"kind": "enum", "labels": [...]}``,
      ``{"kind": "composite", "attributes": {name: type}}``,
      ``{"kind": "domain", "base", "nullable", "default", "checks": {name: def}}`` or
      ``{"kind": "range"|"multirange"}``
    * ``functions``: ``"s.f(integer, text)"`` → ``{"name": "s.f", "returns", "kind", "language"}``
    * ``sequences``: ``"s.q"`` → ``{"type", "increment", "owned_by": "s.t.c" or None}``
    * ``behaviour``: what changes how existing queries behave on a table, keyed ``"s.t"`` →
      ``{"rls": bool, "force_rls": bool, "rules": {name: {"definition", "enabled"}},
      "policies": {name: definition}, "triggers": {name: {"definition", "enabled"}}}``
      (only tables that have any of them)
    """

    schemas: list[str] = field(default_factory=list)
    tables: dict[str, JSON] = field(default_factory=dict)
    views: dict[str, JSON] = field(default_factory=dict)
    constraints: dict[str, JSON] = field(default_factory=dict)
    indexes: dict[str, JSON] = field(default_factory=dict)
    types: dict[str, JSON] = field(default_factory=dict)
    functions: dict[str, JSON] = field(default_factory=dict)
    sequences: dict[str, JSON] = field(default_factory=dict)
    behaviour: dict[str, JSON] = field(default_factory=dict)

    def to_json(self) -> JSON:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Catalog:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# --------------------------------------------------------------------------------------------
# Reading the catalog
# --------------------------------------------------------------------------------------------

def _not_extension_member(classid: str, alias: str) -> str:
    """SQL: the object is not part of an extension (pgcrypto's functions are not the app's)."""
    return (f"NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend dep WHERE dep.classid = "
            f"'pg_catalog.{classid}'::pg_catalog.regclass AND dep.objid = {alias}.oid "
            f"AND dep.deptype = 'e')")


_SCHEMAS_SQL = """
SELECT nspname FROM pg_catalog.pg_namespace
WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
ORDER BY nspname
"""

_RELATIONS_SQL = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid, true) END
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') AND n.nspname = ANY(%(schemas)s)
  AND {_not_extension_member('pg_class', 'c')}
ORDER BY n.nspname, c.relname
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS_SQL = """
SELECT con.conrelid, con.conname, con.contype, pg_catalog.pg_get_constraintdef(con.oid, true),
       con.convalidated,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY AS k(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
             ORDER BY k.ord),
       CASE WHEN con.contype IN ('p', 'u', 'x') AND con.conindid <> 0
            THEN (SELECT n.nspname || '.' || ic.relname FROM pg_catalog.pg_class ic
                  JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
                  WHERE ic.oid = con.conindid) END
FROM pg_catalog.pg_constraint con
WHERE con.conrelid = ANY(%(oids)s) AND con.contype IN ('p', 'u', 'c', 'f', 'x')
ORDER BY con.conrelid, con.conname
"""

_INDEXES_SQL = """
SELECT i.indrelid, n.nspname, ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique,
       ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
             ORDER BY k.ord),
       EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conindid = i.indexrelid
               AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
WHERE i.indrelid = ANY(%(oids)s)
ORDER BY n.nspname, ic.relname
"""

_TYPES_SQL = f"""
SELECT t.oid, n.nspname, t.typname, t.typtype, t.typrelid,
       CASE WHEN t.typtype = 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
       t.typnotnull, t.typdefault
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = ANY(%(schemas)s)
  AND (t.typtype IN ('e', 'd', 'r', 'm')
       OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c
                                WHERE c.oid = t.typrelid) = 'c'))
  AND {_not_extension_member('pg_type', 't')}
ORDER BY n.nspname, t.typname
"""

_ENUM_LABELS_SQL = """
SELECT enumtypid, enumlabel FROM pg_catalog.pg_enum
WHERE enumtypid = ANY(%(oids)s) ORDER BY enumtypid, enumsortorder
"""

_DOMAIN_CHECKS_SQL = """
SELECT contypid, conname, pg_catalog.pg_get_constraintdef(oid, true)
FROM pg_catalog.pg_constraint WHERE contypid = ANY(%(oids)s) AND contype = 'c'
ORDER BY contypid, conname
"""

_FUNCTIONS_SQL = f"""
SELECT n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
       pg_catalog.pg_get_function_result(p.oid), p.prokind, l.lanname
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname = ANY(%(schemas)s) AND {_not_extension_member('pg_proc', 'p')}
ORDER BY n.nspname, p.proname, 3
"""

_SEQUENCES_SQL = f"""
SELECT n.nspname, c.relname, pg_catalog.format_type(s.seqtypid, NULL), s.seqincrement,
       (SELECT tn.nspname || '.' || tc.relname || '.' || a.attname
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid
        JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
        JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
        LIMIT 1)
FROM pg_catalog.pg_sequence s
JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND {_not_extension_member('pg_class', 'c')}
ORDER BY n.nspname, c.relname
"""

# Read from the catalog only (pg_get_*def deparse stored trees; nothing a workspace defined runs).
_BEHAVIOUR_SQL = """
SELECT c.oid, c.relrowsecurity, c.relforcerowsecurity,
       ARRAY(SELECT ARRAY[r.rulename, pg_catalog.pg_get_ruledef(r.oid, true), r.ev_enabled::text]
             FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'
             ORDER BY r.rulename),
       ARRAY(SELECT ARRAY[p.polname, p.polcmd::text || ' ' || p.polpermissive::text || ' '
                          || pg_catalog.array_to_string(p.polroles::int8[], ',') || ' USING '
                          || coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '') || ' CHECK '
                          || coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '')]
             FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid ORDER BY p.polname),
       ARRAY(SELECT ARRAY[t.tgname, pg_catalog.pg_get_triggerdef(t.oid, true), t.tgenabled::text]
             FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal ORDER BY t.tgname)
FROM pg_catalog.pg_class c
WHERE c.oid = ANY(%(oids)s) AND c.relkind IN ('r', 'p')
"""

_RELKINDS = {"r": "table", "p": "partitioned", "f": "foreign"}
_CONTYPES = {"p": "primary key", "u": "unique", "c": "check", "f": "foreign key", "x": "exclusion"}
_PROKINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}
_TYPTYPES = {"e": "enum", "c": "composite", "d": "domain", "r": "range", "m": "multirange"}


class _Renamer:
    """Maps physical schema names to logical ones, in qualified names and inside SQL text."""

    def __init__(self, rename: Mapping[str, str] | None) -> None:
        self.map = dict(rename or {})
        self._patterns = [
            (re.compile(r'(?<![\w$"])(?:"' + re.escape(src.replace('"', '""')) + r'"|'
                        + re.escape(src) + r')\.'), _quote_ident(dst) + ".")
            for src, dst in self.map.items()]

    def schema(self, name: str) -> str:
        return self.map.get(name, name)

    def text(self, value: str | None) -> str | None:
        if value is None or not self.map:
            return value
        for pattern, replacement in self._patterns:
            value = pattern.sub(replacement.replace("\\", "\\\\"), value)
        return value


def _quote_ident(name: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _qualified(schema: str, name: str) -> str:
    return f"{schema}.{name}"


def _connect_target(target: Any) -> str | psycopg.Connection[Any]:
    """A conninfo string for URLs, conninfo strings and ConnInfo-like objects, or the open
    psycopg connection itself."""
    if isinstance(target, psycopg.Connection):
        return target
    if hasattr(target, "url") and callable(target.url):
        target = target.url()
    if not isinstance(target, str):
        raise TypeError(f"cannot connect to {type(target).__name__}")
    # SQLAlchemy-style URLs name a driver libpq does not know.
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", target)


def snapshot(conninfo_or_url: Any, schemas: list[str] | None = None,
             rename: Mapping[str, str] | None = None, *,
             exclude_tables: Iterable[str] = DEFAULT_EXCLUDED_TABLES) -> Catalog:
    """Read the user schema of a database.

    ``conninfo_or_url``: a ``postgresql://`` URL (``+driver`` allowed), a libpq conninfo
    string, an object with a ``url()`` method (``ConnInfo``) or an open psycopg connection
    (left open, its search_path restored). ``schemas``: the schemas to read (default: every
    schema but ``pg_*`` and ``information_schema``). ``rename``: physical → logical schema
    names. Tables named in ``exclude_tables`` (alembic's version table) are left out, in any
    schema, with their constraints, indexes and sequences.
    """
    target = _connect_target(conninfo_or_url)
    conninfo = target if isinstance(target, str) else None
    try:
        if not isinstance(target, str):
            return _read_on(target, schemas, _Renamer(rename), set(exclude_tables))
        with psycopg.connect(target, autocommit=True, connect_timeout=10) as own:
            return _read_on(own, schemas, _Renamer(rename), set(exclude_tables))
    except psycopg.Error as exc:
        raise DatabaseError("reading the schema catalog failed: "
                            + scrub_secrets(str(exc).strip(), conninfo)) from exc


def _read_on(conn: Any, schemas: list[str] | None, rn: _Renamer, excluded: set[str]) -> Catalog:
    saved = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
    # Every user object now prints schema-qualified, whatever the caller's search_path.
    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', false)")
    try:
        return _read(conn, schemas, rn, excluded)
    finally:
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)", [saved])


def _read(conn: Any, schemas: list[str] | None, rn: _Renamer, excluded: set[str]) -> Catalog:
    if schemas is None:
        schemas = [r[0] for r in conn.execute(_SCHEMAS_SQL)]
    else:
        present = {r[0] for r in conn.execute(_SCHEMAS_SQL)}
        schemas = [s for s in schemas if s in present]
    args: dict[str, Any] = {"schemas": schemas}
    cat = Catalog(schemas=sorted(rn.schema(s) for s in schemas))

    rel_names: dict[int, str] = {}
    for oid, nsp, name, relkind, viewdef in conn.execute(_RELATIONS_SQL, args):
        if name in excluded and relkind in _RELKINDS:
            continue
        key = _qualified(rn.schema(nsp), name)
        rel_names[oid] = key
        if relkind in _RELKINDS:
            cat.tables[key] = {"kind": _RELKINDS[relkind], "columns": {}}
        else:
            cat.views[key] = {"materialized": relkind == "m",
                              "definition": rn.text(viewdef), "columns": {}}
    oids = list(rel_names)
    args["oids"] = oids

    for relid, col, typ, notnull, default, identity, generated in conn.execute(_COLUMNS_SQL, args):
        key = rel_names[relid]
        if key in cat.tables:
            cat.tables[key]["columns"][col] = {
                "type": rn.text(typ), "nullable": not notnull, "default": rn.text(default),
                "identity": {"a": "always", "d": "by default"}.get(identity),
                "generated": "stored" if generated == "s" else ("virtual" if generated == "v" else None)}
        else:
            cat.views[key]["columns"][col] = rn.text(typ)

    for relid, name, contype, definition, validated, cols, index in conn.execute(_CONSTRAINTS_SQL, args):
        table = rel_names[relid]
        if table not in cat.tables:
            continue
        cat.constraints[f"{table}.{name}"] = {
            "table": table, "type": _CONTYPES[contype], "definition": rn.text(definition),
            "columns": list(cols), "validated": bool(validated), "index": _rename_qualified(rn, index)}

    for relid, nsp, name, definition, unique, cols, backs in conn.execute(_INDEXES_SQL, args):
        table = rel_names[relid]
        if table not in cat.tables and table not in cat.views:
            continue
        cat.indexes[_qualified(rn.schema(nsp), name)] = {
            "table": table, "definition": rn.text(definition), "unique": bool(unique),
            "columns": list(cols), "constraint": bool(backs)}

    for relid, rls, force, rules, policies, triggers in conn.execute(_BEHAVIOUR_SQL, args):
        owner = rel_names.get(relid)
        if owner is None or owner not in cat.tables or not (rls or force or rules or policies or triggers):
            continue
        cat.behaviour[owner] = {
            "rls": bool(rls), "force_rls": bool(force),
            "rules": {n: {"definition": rn.text(d), "enabled": e} for n, d, e in rules},
            "policies": {n: rn.text(d) for n, d in policies},
            "triggers": {n: {"definition": rn.text(d), "enabled": e} for n, d, e in triggers}}

    type_keys: dict[int, str] = {}
    composite_rel: dict[int, str] = {}
    for oid, nsp, name, typtype, typrelid, base, notnull, default in conn.execute(_TYPES_SQL, args):
        key = _qualified(rn.schema(nsp), name)
        kind = _TYPTYPES[typtype]
        type_keys[oid] = key
        entry: JSON = {"kind": kind}
        if kind == "enum":
            entry["labels"] = []
        elif kind == "composite":
            entry["attributes"] = {}
            composite_rel[typrelid] = key
        elif kind == "domain":
            entry.update(base=rn.text(base), nullable=not notnull, default=rn.text(default), checks={})
        cat.types[key] = entry
    if type_keys:
        for typid, label in conn.execute(_ENUM_LABELS_SQL, {"oids": list(type_keys)}):
            cat.types[type_keys[typid]]["labels"].append(label)
        for typid, name, definition in conn.execute(_DOMAIN_CHECKS_SQL, {"oids": list(type_keys)}):
            cat.types[type_keys[typid]]["checks"][name] = rn.text(definition)
    if composite_rel:
        for relid, col, typ, *_ in conn.execute(_COLUMNS_SQL, {"oids": list(composite_rel)}):
            cat.types[composite_rel[relid]]["attributes"][col] = rn.text(typ)

    for nsp, name, identity_args, result, prokind, language in conn.execute(_FUNCTIONS_SQL, args):
        qname = _qualified(rn.schema(nsp), name)
        cat.functions[f"{qname}({rn.text(identity_args)})"] = {
            "name": qname, "returns": rn.text(result), "kind": _PROKINDS.get(prokind, prokind),
            "language": language}

    for nsp, name, typ, increment, owner in conn.execute(_SEQUENCES_SQL, args):
        owned_by = _rename_qualified(rn, owner)
        if owned_by and owned_by.split(".")[1] in excluded:
            continue
        cat.sequences[_qualified(rn.schema(nsp), name)] = {
            "type": typ, "increment": int(increment), "owned_by": owned_by}
    return cat


def _rename_qualified(rn: _Renamer, name: str | None) -> str | None:
    if name is None:
        return None
    schema, _, rest = name.partition(".")
    return f"{rn.schema(schema)}.{rest}"


# --------------------------------------------------------------------------------------------
# Type changes
# --------------------------------------------------------------------------------------------

_TYPE_RE = re.compile(r"^(?P<base>[^()\[\]]+?)\s*(?:\((?P<args>[^)]*)\))?(?P<suffix>[^()\[\]]*)"
                      r"(?P<array>(?:\[\])*)$")
_INT_RANK = {"smallint": 1, "integer": 2, "bigint": 3}
_INT_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
_STRING_TYPES = {"character varying", "text", "character"}
_PRECISION_TYPES = {"timestamp without time zone", "timestamp with time zone",
                    "time without time zone", "time with time zone", "interval"}


def _parse_type(text: str) -> tuple[str, list[int] | None, int]:
    """'character varying(20)' → ('character varying', [20], 0); arrays count their []."""
    m = _TYPE_RE.match(text.strip())
    if not m:
        return text.strip(), None, 0
    base = " ".join((m.group("base") + m.group("suffix")).split())
    args = None
    if m.group("args") is not None:
        try:
            args = [int(a) for a in m.group("args").split(",")]
        except ValueError:
            return text.strip(), None, 0
    return base, args, m.group("array").count("[]")


def classify_type_change(old: str, new: str) -> str:
    """``"same"``, ``"widen"`` (no rewrite), ``"widen-rewrite"`` (no value is lost, but the
    table is rewritten) or ``"narrow"`` (values may be lost or rejected, or the type changes)."""
    if old == new:
        return "same"
    ob, oa, od = _parse_type(old)
    nb, na, nd = _parse_type(new)
    if od != nd:
        return "narrow"
    if ob in _INT_RANK:
        if nb in _INT_RANK:
            return "widen-rewrite" if _INT_RANK[nb] > _INT_RANK[ob] else "narrow"
        if nb == "numeric" and (na is None or na[0] - (na[1] if len(na) > 1 else 0) >= _INT_DIGITS[ob]):
            return "widen-rewrite"
        if nb == "double precision" and ob != "bigint":
            return "widen-rewrite"
        return "narrow"
    if ob in _STRING_TYPES and nb in _STRING_TYPES:
        # length: None = unbounded; plain "character" is character(1)
        def length(base: str, args: list[int] | None) -> float:
            if base == "text" or (base == "character varying" and not args):
                return float("inf")
            return float(args[0]) if args else 1.0
        if length(nb, na) < length(ob, oa):
            return "narrow"
        if nb == "character" and ob != "character":
            return "narrow"   # blank-padding changes the values
        # character → varchar/text strips trailing blanks: a rewrite, but nothing is lost
        return "widen-rewrite" if ob == "character" and nb != "character" else "widen"
    if ob == "numeric" and nb == "numeric":
        if na is None:
            return "widen"
        if oa is None:
            return "narrow"
        op_, os_ = oa[0], (oa[1] if len(oa) > 1 else 0)
        np_, ns_ = na[0], (na[1] if len(na) > 1 else 0)
        if ns_ < os_ or np_ - ns_ < op_ - os_:
            return "narrow"
        return "widen" if ns_ == os_ else "widen-rewrite"
    if ob == "real" and nb == "double precision":
        return "widen-rewrite"
    if ob == nb and (ob in _PRECISION_TYPES or ob in ("bit varying", "character varying")):
        if na is None:
            return "widen"
        if oa is None or na[0] < oa[0]:
            return "narrow"
        return "widen"
    return "narrow"


# --------------------------------------------------------------------------------------------
# Diff
# --------------------------------------------------------------------------------------------

RULE_KINDS: Mapping[str, Kind] = {
    "drop-table": "destructive", "rename-table": "destructive", "drop-column": "destructive",
    "rename-column": "destructive", "narrow-column-type": "destructive",
    "rewriting-type-change": "lock", "set-not-null": "destructive", "drop-default": "destructive",
    "add-column-not-null-without-default": "destructive",
    "add-unique-constraint": "destructive", "add-check-constraint": "destructive",
    "add-exclusion-constraint": "destructive", "add-primary-key": "lock",
    "add-foreign-key-validated": "lock", "drop-view": "destructive",
    "drop-materialized-view": "destructive", "drop-type": "destructive",
    "rename-type": "destructive", "rename-enum-value": "destructive",
    "drop-function": "destructive", "drop-sequence": "destructive",
    "drop-index": "lock",
    "create-rule": "destructive", "toggle-rule": "destructive", "enable-row-level-security": "destructive",
    "force-row-level-security": "destructive", "create-policy": "destructive", "create-trigger": "destructive",
    "toggle-trigger": "destructive",
}
"""Every rule :func:`diff` emits and its kind (severity follows the kind's default)."""


def _column_shape(col: JSON) -> tuple[Any, ...]:
    return (col["type"], col["nullable"])


def _table_shape(table: JSON) -> tuple[Any, ...]:
    return tuple(sorted((name, *_column_shape(c)) for name, c in table["columns"].items()))


def _pair_renames(dropped: list[str], added: list[str], shape_before: Any, shape_after: Any) -> dict[str, str]:
    """old → new for dropped items whose shape matches one added item (each used once)."""
    pairs: dict[str, str] = {}
    free = list(added)
    for old in dropped:
        for new in free:
            if shape_before(old) == shape_after(new):
                pairs[old] = new
                free.remove(new)
                break
    return pairs


def _strip_index_name(definition: str) -> str:
    return re.sub(r"^(CREATE (?:UNIQUE )?INDEX )\S+ ON ", r"\1? ON ", definition)


class _Diff:
    def __init__(self, before: Catalog, after: Catalog, revision: str | None) -> None:
        self.b, self.a, self.revision = before, after, revision
        self.findings: list[Finding] = []
        self.gone_tables: set[str] = set()
        self.gone_columns: set[str] = set()

    def add(self, rule: str, obj: str | None, message: str, severity: str | None = None) -> None:
        kind = RULE_KINDS[rule]
        self.findings.append(Finding(rule=rule, kind=kind,
                                     severity=severity or default_severity(kind),  # type: ignore[arg-type]
                                     message=message, revision=self.revision, object=obj))

    def run(self) -> list[Finding]:
        self.tables()
        self.constraints()
        self.indexes()
        self.views()
        self.types()
        self.functions()
        self.sequences()
        self.behaviour()
        return self.findings

    def tables(self) -> None:
        b, a = self.b.tables, self.a.tables
        dropped = sorted(set(b) - set(a))
        added = sorted(set(a) - set(b))
        renamed = _pair_renames(dropped, added, lambda t: _table_shape(b[t]), lambda t: _table_shape(a[t]))
        for name in dropped:
            self.gone_tables.add(name)
            if name in renamed:
                self.add("rename-table", name,
                         f"table {name} was renamed to {renamed[name]} (it disappeared and a table with "
                         "the same columns appeared): code in other workspaces that still uses "
                         f"{name} fails")
            else:
                self.add("drop-table", name,
                         f"table {name} was dropped: its data is gone and code in other workspaces that "
                         "still reads or writes it fails")
        for name in sorted(set(b) & set(a)):
            self.columns(name, b[name]["columns"], a[name]["columns"])

    def columns(self, table: str, before: JSON, after: JSON) -> None:
        dropped = [c for c in before if c not in after]
        added = [c for c in after if c not in before]
        renamed = _pair_renames(dropped, added, lambda c: _column_shape(before[c]),
                                lambda c: _column_shape(after[c]))
        for col in dropped:
            obj = f"{table}.{col}"
            self.gone_columns.add(obj)
            if col in renamed:
                self.add("rename-column", obj,
                         f"column {obj} was renamed to {renamed[col]} (it disappeared and a column of the "
                         f"same type appeared): code in other workspaces that still uses {col} fails")
            else:
                self.add("drop-column", obj,
                         f"column {obj} was dropped: its data is gone and code in other workspaces that "
                         "still reads or writes it fails")
        for col in added:
            c = after[col]
            if (not c["nullable"] and c["default"] is None and not c["identity"] and not c["generated"]
                    and col not in renamed.values()):
                self.add("add-column-not-null-without-default", f"{table}.{col}",
                         f"new column {table}.{col} is NOT NULL without a default: inserts from code in "
                         "other workspaces, which does not know the column, fail")
        for col in before:
            if col not in after:
                continue
            old, new, obj = before[col], after[col], f"{table}.{col}"
            change = classify_type_change(old["type"], new["type"])
            if change == "narrow":
                self.add("narrow-column-type", obj,
                         f"column {obj} changed type from {old['type']} to {new['type']}: existing values "
                         "may be truncated or rejected, and code in other workspaces that writes the old "
                         "type breaks")
            elif change == "widen-rewrite":
                self.add("rewriting-type-change", obj,
                         f"column {obj} widened from {old['type']} to {new['type']}: no value is lost, "
                         "but the table was rewritten under an ACCESS EXCLUSIVE lock")
            if old["nullable"] and not new["nullable"]:
                self.add("set-not-null", obj,
                         f"column {obj} became NOT NULL: inserts from code in other workspaces that omit "
                         "it or write NULL fail")
            had_default = old["default"] is not None or old["identity"] is not None
            has_default = new["default"] is not None or new["identity"] is not None
            if had_default and not has_default and not new["generated"]:
                self.add("drop-default", obj,
                         f"column {obj} lost its default ({old['default'] or 'identity'}): inserts from "
                         "code in other workspaces that omit it now store NULL"
                         + (", and fail, since it is NOT NULL" if not new["nullable"] else ""))

    def constraints(self) -> None:
        b, a = self.b.constraints, self.a.constraints
        existing = set(self.b.tables) & set(self.a.tables)
        for key in sorted(a):
            con = a[key]
            table = con["table"]
            if table not in existing:
                continue
            old = b.get(key)
            if old is not None and old["definition"] == con["definition"]:
                continue
            if any(o["table"] == table and o["definition"] == con["definition"] for o in b.values()):
                continue   # renamed constraint: nothing new is enforced
            name = key[len(table) + 1:]
            ctype = con["type"]
            reused_index = con.get("index") is not None and con["index"] in self.b.indexes
            what = f"{ctype.upper()} constraint {name} ({con['definition']}) on {table}"
            if ctype == "check":
                self.add("add-check-constraint", table,
                         f"{what} rejects writes from other workspaces' code that violate it")
            elif ctype == "unique" and not reused_index:
                self.add("add-unique-constraint", table,
                         f"{what} rejects duplicate writes from other workspaces' code")
            elif ctype == "exclusion":
                self.add("add-exclusion-constraint", table,
                         f"{what} rejects conflicting writes from other workspaces' code")
            elif ctype == "primary key" and not reused_index:
                self.add("add-primary-key", table,
                         f"{what} built a unique index and checked NOT NULL under an ACCESS EXCLUSIVE lock")
            elif ctype == "foreign key" and con["validated"]:
                self.add("add-foreign-key-validated", table,
                         f"{what} was validated: {table} was scanned while writes to it were blocked")

    def indexes(self) -> None:
        b, a = self.b.indexes, self.a.indexes
        existing = set(self.b.tables) & set(self.a.tables)
        after_shapes = {(i["table"], _strip_index_name(i["definition"])) for i in a.values()}
        before_shapes = {(i["table"], _strip_index_name(i["definition"])) for i in b.values()}
        for key in sorted(set(b) - set(a)):
            idx = b[key]
            if idx["constraint"] or idx["table"] in self.gone_tables:
                continue
            if any(f"{idx['table']}.{c}" in self.gone_columns for c in idx["columns"]):
                continue
            if (idx["table"], _strip_index_name(idx["definition"])) in after_shapes:
                continue   # renamed
            self.add("drop-index", key,
                     f"index {key} on {idx['table']} was dropped: no data is lost, but queries that "
                     "used it may slow down" + (" and duplicates are no longer rejected" if idx["unique"] else ""))
        for key in sorted(set(a) - set(b)):
            idx = a[key]
            if not idx["unique"] or idx["constraint"] or idx["table"] not in existing:
                continue
            if (idx["table"], _strip_index_name(idx["definition"])) in before_shapes:
                continue
            self.add("add-unique-constraint", idx["table"],
                     f"unique index {key} on {idx['table']} ({idx['definition']}) rejects duplicate writes "
                     "from other workspaces' code")

    def views(self) -> None:
        b, a = self.b.views, self.a.views
        for name in sorted(b):
            old = b[name]
            if name not in a:
                rule = "drop-materialized-view" if old["materialized"] else "drop-view"
                what = "materialized view" if old["materialized"] else "view"
                self.add(rule, name, f"{what} {name} was dropped: queries in other workspaces that "
                         "still read it fail")
                continue
            new = a[name]
            for col, typ in old["columns"].items():
                obj = f"{name}.{col}"
                if col not in new["columns"]:
                    self.add("drop-column", obj, f"view {name} no longer has column {col}: queries in "
                             "other workspaces that read it fail")
                elif classify_type_change(typ, new["columns"][col]) == "narrow":
                    self.add("narrow-column-type", obj, f"view column {obj} changed type from {typ} to "
                             f"{new['columns'][col]}")

    def types(self) -> None:
        b, a = self.b.types, self.a.types
        dropped = sorted(set(b) - set(a))
        added = sorted(set(a) - set(b))
        renamed = _pair_renames(dropped, added, lambda t: b[t], lambda t: a[t])
        for name in dropped:
            if name in renamed:
                self.add("rename-type", name, f"type {name} was renamed to {renamed[name]}: columns, "
                         "casts and code that use the old name break")
            else:
                self.add("drop-type", name, f"{b[name]['kind']} type {name} was dropped: columns, casts "
                         "and code that still use it break")
        for name in sorted(set(b) & set(a)):
            old, new = b[name], a[name]
            if old["kind"] != new["kind"]:
                self.add("drop-type", name, f"type {name} changed from {old['kind']} to {new['kind']}")
            elif old["kind"] == "enum":
                self.enum(name, old["labels"], new["labels"])
            elif old["kind"] == "composite":
                lost = [f for f in old["attributes"] if f not in new["attributes"]]
                changed = [f for f in old["attributes"] if f in new["attributes"] and classify_type_change(
                    old["attributes"][f], new["attributes"][f]) == "narrow"]
                if lost or changed:
                    self.add("drop-type", name, f"composite type {name} lost or narrowed attributes: "
                             + ", ".join(lost + changed))
            elif old["kind"] == "domain":
                self.domain(name, old, new)

    def enum(self, name: str, old: list[str], new: list[str]) -> None:
        lost = [label for label in old if label not in new]
        fresh = [label for label in new if label not in old]
        if not lost:
            return
        if len(lost) == len(fresh) and len(old) == len(new):
            pairs = ", ".join(f"{o!r} to {n!r}" for o, n in zip(lost, fresh))
            self.add("rename-enum-value", name, f"enum {name} renamed label(s) {pairs}: stored values and "
                     "code in other workspaces that use the old label break")
        else:
            self.add("drop-type", name, f"enum {name} lost label(s) {', '.join(map(repr, lost))}: rows and "
                     "code in other workspaces that use them break")

    def domain(self, name: str, old: JSON, new: JSON) -> None:
        if classify_type_change(old["base"], new["base"]) == "narrow":
            self.add("narrow-column-type", name, f"domain {name} changed base type from {old['base']} to "
                     f"{new['base']}")
        if old["nullable"] and not new["nullable"]:
            self.add("set-not-null", name, f"domain {name} became NOT NULL")
        if old["default"] is not None and new["default"] is None:
            self.add("drop-default", name, f"domain {name} lost its default ({old['default']})")
        for check, definition in new["checks"].items():
            if definition not in old["checks"].values():
                self.add("add-check-constraint", name, f"domain {name} has a new check {check} "
                         f"({definition}) that rejects values other workspaces' code may write")

    def functions(self) -> None:
        b, a = self.b.functions, self.a.functions
        for sig in sorted(b):
            old = b[sig]
            if sig not in a:
                remaining = sorted(s for s, f in a.items() if f["name"] == old["name"])
                also = f"; remaining: {', '.join(remaining)}" if remaining else ""
                self.add("drop-function", old["name"], f"{old['kind']} {sig} was dropped: callers in other "
                         f"workspaces (and triggers) fail{also}")
            elif a[sig]["returns"] != old["returns"]:
                self.add("drop-function", old["name"], f"{old['kind']} {sig} now returns {a[sig]['returns']} "
                         f"instead of {old['returns']}: callers in other workspaces may break")

    def sequences(self) -> None:
        b, a = self.b.sequences, self.a.sequences
        for name in sorted(set(b) - set(a)):
            owner = b[name]["owned_by"]
            if owner and (owner in self.gone_columns or owner.rsplit(".", 1)[0] in self.gone_tables):
                continue   # went with its table or column, already reported
            self.add("drop-sequence", name, f"sequence {name} was dropped: defaults and code calling "
                     "nextval() on it fail")


    def behaviour(self) -> None:
        """Rules, row-level security, policies and triggers new (or changed, or switched) on a table
        that existed before: they change what existing code's queries do."""
        empty: JSON = {"rls": False, "force_rls": False, "rules": {}, "policies": {}, "triggers": {}}
        for table in sorted(set(self.b.tables) & set(self.a.tables)):
            old, new = self.b.behaviour.get(table, empty), self.a.behaviour.get(table, empty)
            if new["rls"] and not old["rls"]:
                self.add("enable-row-level-security", table, f"row-level security was enabled on {table}: "
                         "roles other than its owner now see only the rows its policies allow")
            if new["force_rls"] and not old["force_rls"]:
                self.add("force-row-level-security", table, f"row-level security is forced on {table}: its "
                         "owner, the role the application connects as, now sees only what the policies allow")
            for name, rule in sorted(new["rules"].items()):
                was = old["rules"].get(name)
                if was is None or was["definition"] != rule["definition"]:
                    self.add("create-rule", table, f"rule {name} on {table} rewrites the queries existing code "
                             f"sends to it: {rule['definition']}")
                elif was["enabled"] != rule["enabled"]:
                    self.add("toggle-rule", table, f"rule {name} on {table} was "
                             + ("disabled" if rule["enabled"] == "D" else "enabled"))
            for name, definition in sorted(new["policies"].items()):
                if old["policies"].get(name) != definition:
                    self.add("create-policy", table, f"policy {name} on {table} is new or changed: it decides "
                             "which rows existing code sees and writes once row-level security is on")
            for name, trig in sorted(new["triggers"].items()):
                was = old["triggers"].get(name)
                if was is None or was["definition"] != trig["definition"]:
                    self.add("create-trigger", table, f"trigger {name} on {table} runs on existing code's "
                             f"writes: {trig['definition']}")
                elif was["enabled"] != trig["enabled"]:
                    self.add("toggle-trigger", table, f"trigger {name} on {table} was "
                             + ("disabled" if trig["enabled"] == "D" else "enabled or switched mode"))
            for name, trig in sorted(old["triggers"].items()):
                if name in new["triggers"]:
                    continue
                self.add("toggle-trigger", table, f"trigger {name} on {table} was dropped: what it did on "
                         "existing code's writes no longer happens")


def diff(before: Catalog, after: Catalog, revision: str | None = None) -> list[Finding]:
    """Findings for everything ``after`` removed or narrowed from ``before`` (additions are fine,
    except a NOT NULL column without a default on an existing table)."""
    return _Diff(before, after, revision).run()
