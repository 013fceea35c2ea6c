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

__all__ = ["DEFAULT_EXCLUDED_TABLES", "Catalog", "snapshot"]

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


