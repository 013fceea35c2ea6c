"""The diff of two schema catalog snapshots: what a migration really removed or narrowed.

:func:`diff` speaks the linter's rule ids where the meaning is the same (see
:mod:`sandbox.migrations.lint`), so the gate can drop a dynamic finding that repeats a static
one. The snapshots come from :func:`sandbox.databases.catalog.snapshot`; the decisions are
listed in that module's docstring.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..databases.catalog import JSON, Catalog
from .findings import Finding, Kind, default_severity

__all__ = ["RULE_KINDS", "classify_type_change", "diff"]

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
