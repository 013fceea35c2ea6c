"""Schema facts of a workspace's new revisions, from the gate's static pass (offline SQL + lint).

Nothing is replayed. The offline SQL is the migration tool's own rendering, which the tool caches
on disk by the content of the revision and of everything its rendering reads; the facts drawn from
it (what each revision drops, renames, narrows or adds) are cached here too, by the hash of that
SQL, in ``.sandbox/overview/facts.json``. A workspace's revisions are read from its branch's
committed tree, exported from main's object store (never its checkout), once per commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import SandboxError
from ..migrations.base import MigrationTool, Revision

# lint rules whose object, once the revision runs, is gone or narrower than code expects
BREAKING_RULES = frozenset({
    "drop-table", "drop-column", "drop-view", "drop-materialized-view", "drop-type", "drop-function",
    "drop-schema", "drop-sequence", "drop-default", "rename-table", "rename-column", "rename-view",
    "rename-type", "rename-schema", "rename-function", "rename-enum-value", "set-schema",
    "narrow-column-type", "set-not-null", "add-column-not-null-without-default", "drop-unique-key",
    "truncate",
})


@dataclass(frozen=True)
class SchemaFact:
    """One thing a revision does to an object: ``verb`` is ``drop``/``rename``/``narrow`` (breaks
    code that uses it) or ``add``; ``object`` is ``schema.table`` or ``schema.table.column``."""

    revision: str
    verb: str
    object: str
    rule: str = ""
    statement: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "verb": self.verb, "object": self.object, "rule": self.rule,
                "statement": self.statement}

    @property
    def words(self) -> list[str]:
        """What code that uses the object names: its table and, for a column, the column."""
        parts = self.object.split(".")
        return parts[1:] if len(parts) >= 2 else parts


@dataclass(frozen=True)
class RevisionInfo:
    id: str
    revises: tuple[str, ...]
    sql: str | None = None
    facts: tuple[SchemaFact, ...] = ()
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "revises": list(self.revises), "facts": [f.to_json() for f in self.facts],
                **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class WorkspaceSchema:
    """A workspace's new revisions (oldest first), the head they build on, and whether that is main's."""

    revisions: tuple[RevisionInfo, ...] = ()
    root_revises: str | None = None
    on_main_head: bool = True
    notes: tuple[str, ...] = field(default=())

    @property
    def facts(self) -> list[SchemaFact]:
        return [f for r in self.revisions for f in r.facts]


def _verb(rule: str) -> str:
    if rule.startswith("rename") or rule == "set-schema":
        return "rename"
    if rule.startswith("drop") or rule == "truncate":
        return "drop"
    return "narrow"


def facts_of(sql: str, revision: str) -> list[SchemaFact]:
    """What one revision's offline SQL drops, renames, narrows (lint findings) and adds (tables,
    columns, indexes: parsed with pglast)."""
    from ..migrations.lint import lint_sql
    out: list[SchemaFact] = []
    for f in lint_sql(sql, revision=revision):
        if f.rule in BREAKING_RULES and f.object:
            out.append(SchemaFact(revision, _verb(f.rule), f.object, f.rule, f.statement))
    out += [SchemaFact(revision, "add", obj, "add", None) for obj in added_objects(sql)]
    return out


def added_objects(sql: str) -> list[str]:
    """Tables, columns and indexes the SQL creates (``schema.table[.column]``, ``public`` by default)."""
    import pglast
    from pglast import ast

    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return []
    found: list[str] = []

    def rel_name(rel: Any) -> str:
        return f"{rel.schemaname or 'public'}.{rel.relname}"

    for raw in stmts:
        stmt = raw.stmt
        if isinstance(stmt, ast.CreateStmt):
            found.append(rel_name(stmt.relation))
        elif isinstance(stmt, ast.IndexStmt) and stmt.idxname and stmt.relation is not None:
            found.append(f"{stmt.relation.schemaname or 'public'}.{stmt.idxname}")
        elif isinstance(stmt, ast.AlterTableStmt):
            for cmd in stmt.cmds or ():
                if getattr(cmd, "subtype", None) == pglast.enums.AlterTableType.AT_AddColumn and cmd.def_:
                    found.append(f"{rel_name(stmt.relation)}.{cmd.def_.colname}")
    return found


@runtime_checkable
class LayoutTool(MigrationTool, Protocol):
    """A migration tool that also says where a tree keeps its migrations (alembic's layout:
    ``script_location`` and ``version_locations``)."""

    def layout(self, tree: Path) -> Any: ...


class SchemaReader:
    """Reads workspaces' revisions and their facts; one per overview (exports are kept by commit)."""

    def __init__(self, root: Path, tool: LayoutTool, state_dir: Path, config_rel: str,
                 export: Callable[[str, Path, tuple[str, ...] | None], None]) -> None:
        self.root = root
        self.tool = tool
        self.dir = state_dir / "overview"
        self.config_rel = config_rel
        self.export = export
        self._facts_path = self.dir / "facts.json"
        self._facts: dict[str, list[dict[str, Any]]] | None = None
        self._dirty = False
        self.main_revs: dict[str, Revision] = {}
        self.main_heads: list[str] = []
        if tool.available(root):
            self.main_revs = tool.revisions(root)
            self.main_heads = tool.heads(root)

    @property
    def enabled(self) -> bool:
        return bool(self.main_revs)

    @property
    def main_head(self) -> str | None:
        return self.main_heads[0] if len(self.main_heads) == 1 else None

    def tree(self, sha: str) -> Path | None:
        """``sha``'s alembic config and migration folders, exported once (kept by commit id)."""
        dest = self.dir / "trees" / sha
        if dest.is_dir():
            return dest
        tmp = self.dir / "trees" / f".{sha}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self.export(sha, tmp, (self.config_rel,))
            layout = self.tool.layout(tmp)
            if layout is None:
                return None
            base = tmp.resolve()
            rels = {os.path.relpath(p, base) for p in (layout.script_location, *layout.version_locations)}
            if "." in rels or any(r.startswith("..") for r in rels):
                return None
            self.export(sha, tmp, tuple(sorted(rels)))
            with contextlib.suppress(OSError):
                os.rename(tmp, dest)
        except SandboxError:
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest if dest.is_dir() else None

    def read(self, sha: str | None, env: Mapping[str, str]) -> WorkspaceSchema:
        """The new revisions of the commit ``sha`` and their facts (rendered once per content)."""
        if not self.enabled or sha is None:
            return WorkspaceSchema()
        tree = self.tree(sha)
        if tree is None or not self.tool.available(tree):
            return WorkspaceSchema()
        try:
            revs = self.tool.revisions(tree)
        except SandboxError as exc:
            return WorkspaceSchema(notes=(f"cannot read its revisions: {exc}",))
        new = {k: v for k, v in revs.items() if k not in self.main_revs}
        ordered = _oldest_first(new)
        infos = [self._info(tree, r, env) for r in ordered]
        roots = [r for r in ordered if not any(d in new for d in r.down_revisions)]
        revises = roots[0].down_revisions[0] if roots and roots[0].down_revisions else None
        on_head = not ordered or revises == self.main_head
        return WorkspaceSchema(tuple(infos), revises, on_head)

    def _info(self, tree: Path, rev: Revision, env: Mapping[str, str]) -> RevisionInfo:
        try:
            sql = self.tool.offline_sql(tree, rev.id, env=env)
        except SandboxError as exc:
            return RevisionInfo(rev.id, rev.down_revisions, None, (), f"no offline SQL: {exc}")
        key = hashlib.sha256(f"{rev.id}\0{sql}".encode()).hexdigest()[:32]
        cache = self._load()
        if key not in cache:
            cache[key] = [f.to_json() for f in facts_of(sql, rev.id)]
            self._dirty = True
        facts = tuple(SchemaFact(d["revision"], d["verb"], d["object"], d.get("rule", ""), d.get("statement"))
                      for d in cache[key])
        return RevisionInfo(rev.id, rev.down_revisions, sql, facts)

    def _load(self) -> dict[str, list[dict[str, Any]]]:
        if self._facts is None:
            try:
                self._facts = json.loads(self._facts_path.read_text())
            except (OSError, ValueError):
                self._facts = {}
        return self._facts

    def save(self) -> None:
        if self._dirty and self._facts is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self._facts_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self._facts))
            os.replace(tmp, self._facts_path)
            self._dirty = False


def _oldest_first(new: Mapping[str, Revision]) -> list[Revision]:
    ordered: list[Revision] = []
    seen: set[str] = set()

    def visit(rid: str) -> None:
        if rid in seen or rid not in new:
            return
        seen.add(rid)
        for d in new[rid].down_revisions:
            visit(d)
        ordered.append(new[rid])

    for rid in sorted(new):
        visit(rid)
    return ordered
