"""The migration coordinator: ordering, the additive policy, replay on a fresh
clone, the merge queue, rebase and sync.

Everything here works on two trees: the main checkout (``main``) and a
workspace's *committed* tree. The gate judges one commit: the workspace's branch,
collected into main's repository and resolved once to a sha, whose tree is written
from main's object store into a folder sandbox owns (``.sandbox/gate/``); every read
the gate makes is of that folder (:meth:`Coordinator._tree`), never of the
workspace's checkout, and ``merge`` merges exactly that sha. A workspace's *new*
revisions are those its tree has and main's does not. The gate proves, in order:

1. ordering: main has one head, the new revisions form one linear chain whose
   root revises main's head;
2. additive (static): the offline SQL of each new revision, parsed by a real
   PostgreSQL parser (``lint``);
3. additive (dynamic): the revisions applied one by one to a fresh clone of the
   baseline, with the catalog diffed around each (``catalog``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..errors import MigrationError, SandboxError, UsageError, WorkspaceError
from ..intents import STEPS, Operation
from ..registry import IntentRecord, WorkspaceRecord, process_alive
from ..worktrees import UNCOMMITTED, Unsaved, kind_of, what_of
from .base import Revision
from .findings import Finding, Report, explain_destructive

if TYPE_CHECKING:
    from ..api import Sandbox


def lint_report(sql: str) -> Report:
    """``migrate lint``: lint raw SQL with no workspace.

    alembic ``--sql`` output of several revisions is split at its ``-- Running upgrade A -> B``
    markers and each revision is linted on its own (``revisions`` lists them); a file without
    markers is one migration, and the report's ``notes`` say so.
    """
    from .lint import lint_dump
    dump = lint_dump(sql)
    report = Report(revisions=dump.revisions)
    report.extend(dump.findings)
    if not dump.split:
        report.extra["notes"] = [
            "no alembic revision markers (-- Running upgrade A -> B): the SQL was linted as one "
            "migration, so objects created anywhere in it count as new"]
    return report


def _git(tree: Path, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """git in MAIN's checkout only (trusted); a workspace's repository is never a ``tree`` here."""
    res = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, input=input,
                         env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
    if check and res.returncode != 0:
        raise WorkspaceError(f"git {args[0]} failed in {tree}: {(res.stderr or res.stdout).strip()}")
    return res


def _current_schema(conn: Any) -> str | None:
    """Where unqualified names land for this connection (its first schema on the search path)."""
    import psycopg
    try:
        with psycopg.connect(**conn.kwargs(), connect_timeout=10) as c:
            row = c.execute("SELECT pg_catalog.current_schema()").fetchone()
            return str(row[0]) if row and row[0] else None
    except psycopg.Error as exc:
        raise MigrationError(f"cannot open the gate's fresh clone: {exc}") from exc


def _suppressions(tree: Path, rev: Revision) -> dict[str, str]:
    from .lint import parse_suppressions
    from .scan import read_inside
    try:
        return parse_suppressions(read_inside(tree, rev.path).decode("utf-8", errors="replace"))
    except MigrationError:
        return {}


class _GateTimeout(Exception):
    """The gate's overall deadline (``[migrations] gate_timeout``) passed while ``doing``."""

    def __init__(self, doing: str) -> None:
        super().__init__(doing)
        self.doing = doing


def _statement_timeout_ms(value: str) -> int:
    from ..config import duration_seconds
    return max(1, int((duration_seconds(value) or 60.0) * 1000))


def _limit_statements(info: Any, timeout_ms: int) -> bool:
    """Give the scratch clone's role a default statement timeout, so that every later session of it
    gets it: alembic's online run whatever its driver (asyncpg ignores PGOPTIONS), the trace and the
    row counts. An ordinary role may set its own defaults, so this needs no admin session. A
    revision can still ``SET statement_timeout = 0`` for itself: the gate's deadline bounds that."""
    import psycopg
    from psycopg import sql
    try:
        with psycopg.connect(**info.kwargs(), autocommit=True, connect_timeout=10) as c:
            c.execute(sql.SQL("ALTER ROLE CURRENT_USER SET statement_timeout = {}").format(sql.Literal(timeout_ms)))
        return True
    except psycopg.Error:
        return False


# Ordinary tables and partitioned tables of the clone, read from the catalog only.
_COUNTABLE_SQL = """
SELECT n.nspname, c.relname, c.relkind::text, c.relrowsecurity,
       EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {}
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _row_counts(info: Any, schemas: list[str] | None, rename: Mapping[str, str] | None,
                timeout_ms: int) -> tuple[dict[str, int | str], list[str]]:
    """Exact row counts of the clone's tables (``"schema.table"`` → rows, or the error that stopped
    the count), and notes on tables left out.

    Why this is safe, although the tables were defined by the workspace: the session is the scratch
    clone's own login role (every strategy's ``scratch()`` hands out a NOSUPERUSER role that owns
    the clone, the very role the revision itself ran as), so nothing evaluated here can do more
    than the revision already could. On top of that the count evaluates no workspace-defined code:
    ``search_path`` is ``pg_catalog``, the function is ``pg_catalog.count``, a plain table is read
    with ``FROM ONLY`` (no inheritance children), ``row_security = off`` makes a table whose policies
    would apply raise an error instead of running them, a relation with an ``ON SELECT`` rule is a
    view (relkind ``v``, never counted) and SELECT fires no trigger. Each count runs in a read-only
    transaction under the gate's statement timeout. Should the role ever be privileged, only plain
    tables without rules and without row-level security are counted, and a note says so.
    """
    import psycopg
    from psycopg import sql

    from .catalog import DEFAULT_EXCLUDED_TABLES
    if schemas:
        where: sql.Composable = sql.SQL("n.nspname = ANY({})").format(sql.Literal(list(schemas)))
    else:
        where = sql.SQL("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'")
    counts: dict[str, int | str] = {}
    notes: list[str] = []
    try:
        with psycopg.connect(**info.kwargs(), autocommit=True, connect_timeout=10) as c:
            row = c.execute("SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles "
                            "WHERE rolname = current_user").fetchone()
            privileged = bool(row and row[0])
            skipped: list[str] = []
            for nsp, rel, kind, rls, rules in c.execute(sql.SQL(_COUNTABLE_SQL).format(where)).fetchall():
                if rel in DEFAULT_EXCLUDED_TABLES:
                    continue
                name = f"{(rename or {}).get(nsp, nsp)}.{rel}"
                if privileged and (kind != "r" or rls or rules):
                    skipped.append(name)
                    continue
                query = sql.SQL("SELECT pg_catalog.count(*) FROM {} {}").format(
                    sql.SQL("ONLY") if kind == "r" else sql.SQL(""), sql.Identifier(nsp, rel))
                try:
                    with c.transaction():
                        c.execute("SET TRANSACTION READ ONLY")
                        c.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true), "
                                  "pg_catalog.set_config('row_security', 'off', true), "
                                  "pg_catalog.set_config('statement_timeout', %s, true)", (str(timeout_ms),))
                        counted = c.execute(query).fetchone()
                    counts[name] = int(counted[0]) if counted else 0
                except psycopg.Error as exc:
                    counts[name] = (exc.diag.message_primary or type(exc).__name__).strip()
            if skipped:
                notes.append(f"rows not counted (the clone's role is privileged, and these tables have rules "
                             f"or row-level security): {', '.join(skipped[:8])}")
    except psycopg.Error as exc:
        notes.append(f"rows were not counted: the gate's clone did not answer ({type(exc).__name__})")
    return counts, notes


def _rows_lost(before: Mapping[str, int | str], after: Mapping[str, int | str], revision: str) -> list[Finding]:
    """A table that held rows before the revision and holds fewer after (or hides them)."""
    out: list[Finding] = []
    for table, was in sorted(before.items()):
        now = after.get(table)
        if not isinstance(was, int) or was == 0 or now is None:
            continue          # uncounted, empty, or gone (the catalog diff reports a dropped table)
        if isinstance(now, str):
            out.append(Finding(rule="rows-lost", kind="destructive", severity="error", revision=revision,
                               object=table, message=f"revision {revision}: the {was} rows of {table} can no "
                               f"longer be counted after it ({now}); it hid or removed data other "
                               "workspaces' code relies on"))
        elif now < was:
            out.append(Finding(rule="rows-lost", kind="destructive", severity="error", revision=revision,
                               object=table, message=f"revision {revision} deleted rows of {table} on the "
                               f"baseline's data: {was} → {now}; data other workspaces' code relies on is gone"))
    return out


_WHAT = {"tables": "table", "views": "view", "constraints": "constraint", "indexes": "index", "types": "type",
         "functions": "function", "sequences": "sequence", "behaviour": "rules, policies or triggers of"}


def _delta(before: Any, after: Any) -> dict[tuple[str, str], tuple[Any, Any]]:
    """What changed between two catalog snapshots: (part, name) → (before, after)."""
    out: dict[tuple[str, str], tuple[Any, Any]] = {}
    for part in _WHAT:
        b, a = getattr(before, part), getattr(after, part)
        for name in set(b) | set(a):
            if b.get(name) != a.get(name):
                out[(part, name)] = (b.get(name), a.get(name))
    return out


def _divergence(online: Mapping[tuple[str, str], tuple[Any, Any]],
                offline: Mapping[tuple[str, str], tuple[Any, Any]]) -> list[str]:
    """What the online run changed that the offline SQL did not, and the other way round."""
    def verb(change: tuple[Any, Any] | None) -> str:
        if change is None:
            return "leaves it alone"
        return "creates it" if change[0] is None else "drops it" if change[1] is None else "changes it"

    out = []
    for key in sorted(set(online) | set(offline)):
        on, off = online.get(key), offline.get(key)
        if on == off or (on is not None and off is not None and on[1] == off[1]):
            continue
        out.append(f"{_WHAT[key[0]]} {key[1]}: online it {verb(on)}, offline "
                   + (f"it {verb(off)}" if verb(off) != verb(on) else "differently"))
    return out


def _created_tables(sql: str) -> set[str]:
    """Tables a revision's SQL creates (schema-qualified; ``public`` by default)."""
    import pglast
    from pglast import ast

    out: set[str] = set()
    try:
        stmts = pglast.parse_sql(sql)
    except pglast.parser.ParseError:
        return out
    for raw in stmts:
        stmt = raw.stmt
        rel: Any = None
        if isinstance(stmt, ast.CreateStmt):
            rel = stmt.relation
        elif isinstance(stmt, ast.CreateTableAsStmt) and stmt.into is not None:
            rel = stmt.into.rel
        if rel is not None:
            out.add(f"{rel.schemaname or 'public'}.{rel.relname}")
    return out


class Coordinator:
    """Ordering, gate, rebase, merge queue and sync for one project."""

    def __init__(self, sb: "Sandbox") -> None:
        self.sb = sb
        self.root = sb.root
        self.tool = sb.tool
        self.policy = sb.config.migrations.policy
        self._main_cache: tuple[dict[str, Revision], list[str]] | None = None
        self._changed_cache: dict[Path, set[str]] = {}
        self._judged: dict[str, Path] = {}      # workspace -> the exported commit a running check judges
        self._views: dict[str, Path | None] = {}   # sha -> its exported migrations (status, other workspaces)

    # -- reading trees -------------------------------------------------------------------------
    def enabled(self) -> bool:
        return self.tool.available(self.root)

    def _main(self) -> tuple[dict[str, Revision], list[str]]:
        """Main's revisions and heads, read once per command (``_git_merge`` forgets them)."""
        if self._main_cache is None:
            self._main_cache = (self.tool.revisions(self.root), self.tool.heads(self.root))
        return self._main_cache

    def _tree(self, rec: WorkspaceRecord) -> Path:
        """The tree being judged: while a check of ``rec`` runs, its judged commit exported from main's
        object store (:meth:`_judging`); otherwise the workspace's checkout (rebase and sync upgrade
        the workspace's own database from its own files; status reads :meth:`_revisions_tree`)."""
        return self._judged.get(rec.name) or Path(rec.path)

    def _revisions_tree(self, rec: WorkspaceRecord) -> Path | None:
        """Where the workspace's revisions are read: the judged tree during its check, else its
        branch's committed migrations (never its checkout: uncommitted files and a detached HEAD
        do not count). None when the branch does not exist."""
        if rec.name in self._judged:
            return self._judged[rec.name]
        sha = self._branch_sha(rec)
        return self._committed_view(sha) if sha else None

    # -- the committed tree, read from main's object store ------------------------------------------
    def _branch_sha(self, rec: WorkspaceRecord) -> str | None:
        """The commit ``refs/heads/<branch>`` names in main's repository (after :meth:`Sandbox.collect`)."""
        res = _git(self.root, "rev-parse", "-q", "--verify", f"refs/heads/{rec.branch}^{{commit}}", check=False)
        return res.stdout.strip() or None if res.returncode == 0 else None

    def _gate_root(self) -> Path:
        """``.sandbox/gate/``: exported commits, one folder each, named ``…-<pid>``. A folder a killed
        process left behind (its pid gone) is removed here."""
        root = self.sb.config.state_dir / "gate"
        root.mkdir(parents=True, exist_ok=True)
        for left in root.iterdir():
            pid = left.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
                shutil.rmtree(left, ignore_errors=True)
        return root

    def _fresh(self, label: str) -> Path:
        dest = self._gate_root() / f"{label}-{os.getpid()}"
        if dest.exists() or dest.is_symlink():
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
        return dest

    def _committed_view(self, sha: str) -> Path | None:
        """``sha``'s alembic config and migration folders, exported once per command (cheap: a tree
        listing and the few blobs under those folders). Removed when the coordinator goes."""
        if sha in self._views:
            return self._views[sha]
        dest = self._fresh(f"view-{sha[:12]}")
        weakref.finalize(self, shutil.rmtree, str(dest), True)
        cfg = self.sb.config.migrations.config
        self.sb.repos.export(sha, dest, only=(cfg,))
        layout = None
        if hasattr(self.tool, "layout"):
            try:
                layout = self.tool.layout(dest)
            except MigrationError:
                layout = None               # a location outside the tree: available() says no, as before
        if layout is not None:          # none: no migrations on the branch (available() says so)
            base = dest.resolve()
            rels = {os.path.relpath(p, base) for p in (layout.script_location, *layout.version_locations)}
            self.sb.repos.export(sha, dest, only=None if "." in rels else tuple(sorted(rels)))
        self._views[sha] = dest
        return dest

    @contextlib.contextmanager
    def _judging(self, rec: WorkspaceRecord, sha: str) -> Iterator[Path]:
        """``sha``'s whole tree in a fresh folder sandbox owns, as :meth:`_tree` of ``rec`` while it is held."""
        from ..runtime.base import unprivileged_ids
        from ..worktrees import _chown_tree
        dest = self._fresh(f"{rec.name}-{sha[:12]}")
        try:
            self.sb.repos.export(sha, dest)
            if os.geteuid() == 0:
                # the gate's tests run as the unprivileged container user with the tree writable
                _chown_tree(dest, *unprivileged_ids())
            self._judged[rec.name] = dest
            yield dest
        finally:
            self._judged.pop(rec.name, None)
            shutil.rmtree(dest, ignore_errors=True)

    def new_revisions(self, rec: WorkspaceRecord, main_revs: dict[str, Revision]) -> list[Revision]:
        """The workspace's revisions that main does not have, oldest first (committed ones only)."""
        tree = self._revisions_tree(rec)
        if tree is None or not tree.exists() or not self.tool.available(tree):
            return []
        revs = self.tool.revisions(tree)
        new = {k: v for k, v in revs.items() if k not in main_revs}
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

    @staticmethod
    def _roots(new: list[Revision]) -> list[Revision]:
        ids = {r.id for r in new}
        return [r for r in new if not any(d in ids for d in r.down_revisions)]

    def _behind_count(self, main_revs: dict[str, Revision], main_head: str | None, base: str | None) -> int:
        """How many main revisions lie after ``base`` up to main's head."""
        if not main_head or base == main_head or (base is not None and base not in main_revs):
            return 0                      # at the head, or on a revision main does not have (no count)
        count, cur = 0, main_head
        cur_: str | None = cur
        seen: set[str] = set()
        while cur_ and cur_ != base and cur_ in main_revs and cur_ not in seen:
            seen.add(cur_)
            count += 1
            downs = main_revs[cur_].down_revisions
            cur_ = downs[0] if downs else None
        return count

    def workspace_summary(self, rec: WorkspaceRecord) -> dict[str, Any]:
        empty: dict[str, Any] = {"head": None, "base_head": None, "new": [], "behind": 0}
        try:
            if not self.enabled():
                return empty
            main_revs, main_heads = self._main()
            main_head = main_heads[0] if len(main_heads) == 1 else None
            tree = self._revisions_tree(rec)
            if tree is None or not tree.exists() or not self.tool.available(tree):
                return {**empty, "base_head": main_head}
            ws_heads = self.tool.heads(tree)
            new = self.new_revisions(rec, main_revs)
            roots = self._roots(new)
            if roots:
                base = roots[0].down_revisions[0] if roots[0].down_revisions else None
            else:
                base = ws_heads[0] if len(ws_heads) == 1 else None
            return {"head": ws_heads[0] if len(ws_heads) == 1 else None, "heads": ws_heads,
                    "base_head": main_head, "new": [r.id for r in new],
                    "root_revises": base, "behind": self._behind_count(main_revs, main_head, base)}
        except SandboxError as exc:
            return {**empty, "error": str(exc)}

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        if not self.enabled():
            return {"main_head": None, "main_heads": [], "baseline_head": None, "workspaces": [],
                    "message": f"no {self.sb.config.migrations.config}: migrations are not coordinated"}
        main_revs, main_heads = self._main()
        rows = []
        by_base: dict[str, list[str]] = {}
        by_rev: dict[str, list[str]] = {}
        for rec in self.sb.registry.all():
            try:
                self.sb.collect(rec)
            except SandboxError:
                pass              # its summary shows what it can; the branch is read as it was
            s = self.workspace_summary(rec)
            s["name"] = rec.name
            rows.append(s)
            if s["new"]:
                by_base.setdefault(str(s.get("root_revises")), []).append(rec.name)
                for rid in s["new"]:
                    by_rev.setdefault(rid, []).append(rec.name)
        for s in rows:
            conflicts: list[str] = []
            heads = s.get("heads") or []
            if len(heads) > 1:
                conflicts.append(f"{len(heads)} heads in the workspace")
            parent = s.get("root_revises")
            if s["new"] and parent and parent not in main_revs and parent not in s["new"]:
                conflicts.append(f"its first revision revises {parent}, which neither main nor the workspace "
                                 f"defines: run `sandbox migrate rebase {s['name']}`")
            elif s["new"] and s["behind"]:
                conflicts.append(f"behind main by {s['behind']}: run `sandbox migrate rebase {s['name']}`")
            peers = [n for n in by_base.get(str(s.get("root_revises")), []) if n != s["name"]]
            if s["new"] and peers:
                conflicts.append(f"builds on the same head as {', '.join(peers)}: whoever merges second must rebase")
            for rid in s["new"]:
                dup = [n for n in by_rev.get(rid, []) if n != s["name"]]
                if dup:
                    conflicts.append(f"revision id {rid} also created in {', '.join(dup)}")
            s["conflicts"] = conflicts
        return {"main_head": main_heads[0] if len(main_heads) == 1 else None, "main_heads": main_heads,
                "baseline_head": self.sb.registry.get_meta("baseline_head") or None, "workspaces": rows}

    # -- the gate -----------------------------------------------------------------------------------
    def _ordering(self, rec: WorkspaceRecord, main_revs: dict[str, Revision], main_heads: list[str],
                  new: list[Revision]) -> list[Finding]:
        out: list[Finding] = []
        name = rec.name

        def f(rule: str, msg: str, rev: str | None = None) -> None:
            out.append(Finding(rule=rule, kind="ordering", severity="error", message=msg, revision=rev))

        if len(main_heads) > 1:
            f("main-multiple-heads", f"main has {len(main_heads)} heads ({', '.join(main_heads)}); "
              "merge them on main first")
        tree = self._tree(rec)
        ws_heads = self.tool.heads(tree)
        if len(ws_heads) > 1:
            f("multiple-heads", f"the workspace has {len(ws_heads)} heads ({', '.join(ws_heads)}); "
              "its revisions must form one chain")
        ws_revs = self.tool.revisions(tree)
        for rid, rev in ws_revs.items():
            if rid in main_revs and rev.down_revisions != main_revs[rid].down_revisions:
                f("duplicate-revision-id", f"revision id {rid} exists on main with a different parent", rid)
        for rev in new:
            if rev.is_merge:
                f("merge-revision", f"{rev.id} is a merge revision; rebase instead so the history stays linear "
                  f"(`sandbox migrate rebase {name}`)", rev.id)
        children: dict[str, list[str]] = {}
        for rev in new:
            for d in rev.down_revisions:
                children.setdefault(d, []).append(rev.id)
        for fork, kids in children.items():
            if len(kids) > 1:
                f("branch-point", f"{fork} has {len(kids)} children among the new revisions "
                  f"({', '.join(kids)}); make them one chain", fork)
        roots = self._roots(new)
        if len(roots) > 1:
            f("multiple-roots", f"the new revisions start from {len(roots)} roots "
              f"({', '.join(r.id for r in roots)})")
        main_head = main_heads[0] if len(main_heads) == 1 else None
        for root in roots:
            parent: str | None = root.down_revisions[0] if root.down_revisions else None
            if parent is not None and parent not in main_revs and not root.is_merge:
                f("missing-parent", f"{root.id} revises {parent}, which neither main nor the workspace defines: "
                  f"run `sandbox migrate rebase {name}` to put it on main's head {main_head or ''}".rstrip(), root.id)
            elif main_head and parent != main_head and not root.is_merge:
                behind = self._behind_count(main_revs, main_head, parent)
                f("behind", f"{root.id} revises {parent or 'nothing'}, but main's head is {main_head} "
                  f"({behind} revision(s) ahead): run `sandbox migrate rebase {name}`", root.id)
        for other in self.sb.registry.all():
            if other.name == name:
                continue
            try:
                theirs = {r.id for r in self.new_revisions(other, main_revs)}
            except SandboxError:
                continue       # another workspace's broken history is its own problem, not this gate's
            for rev in new:
                if rev.id in theirs:
                    f("duplicate-revision-id", f"revision id {rev.id} was also created in workspace "
                      f"{other.name!r}", rev.id)
        return out

    # -- the gate's time ---------------------------------------------------------------------------
    def _start_clock(self) -> None:
        from ..config import duration_seconds
        self._deadline = time.monotonic() + (duration_seconds(self.sb.config.migrations.gate_timeout) or 900.0)

    def _left(self, doing: str) -> float:
        """Seconds left before the gate's deadline; past it, :class:`_GateTimeout`."""
        deadline = getattr(self, "_deadline", None)
        if deadline is None:
            self._start_clock()
            deadline = self._deadline
        left = deadline - time.monotonic()
        if left <= 0:
            raise _GateTimeout(doing)
        return left

    def _expired(self) -> bool:
        deadline = getattr(self, "_deadline", None)
        return deadline is not None and time.monotonic() >= deadline

    def _timed_out(self, report: Report, doing: str) -> None:
        if any(f.rule == "gate-timeout" for f in report.findings):
            return
        limit = self.sb.config.migrations.gate_timeout
        report.extend([Finding(rule="gate-timeout", kind="apply", severity="error",
                               message=f"the gate stopped after {limit} ([migrations] gate_timeout) while "
                               f"{doing}; its scratch clones were removed")])

    def _static(self, rec: WorkspaceRecord, new: list[Revision], report: Report) -> dict[str, str]:
        """Lint each revision's offline SQL; returns that SQL by revision (the replay traces it)."""
        from .lint import lint_sql
        self._start_clock()              # the gate's deadline counts from here: render, replay, tests
        created: set[str] = set()
        tree = self._tree(rec)
        rendered: dict[str, str] = {}
        for rev in new:
            doing = f"rendering the offline SQL of {rev.id}"
            try:
                sql = self.tool.offline_sql(tree, rev.id, env=self.sb.base_env(rec), timeout=self._left(doing))
            except _GateTimeout:
                self._timed_out(report, doing)
                break
            except MigrationError as exc:
                report.extra.setdefault("notes", []).append(
                    f"{rev.id}: no offline SQL ({exc}); judged by its online run only, without evidence")
                continue
            except SandboxError:
                if self._expired():
                    self._timed_out(report, doing)
                    break
                raise
            rendered[rev.id] = sql
            supp = _suppressions(tree, rev)
            report.extend(lint_sql(sql, revision=rev.id, suppressions=supp, created_before=created))
            created |= _created_tables(sql)
        return rendered

    def _dynamic(self, rec: WorkspaceRecord, new: list[Revision], report: Report,
                 run_tests: bool = False, offline: Mapping[str, str] | None = None) -> None:
        """Judge what runs online: alembic applies the revisions one by one to a fresh clone of the
        baseline, and the catalog diff and the row counts around each are what the policy judges. The
        offline SQL ``_static`` rendered is traced statement by statement on a second clone
        (``trace``): its evidence goes on the findings, and a revision whose offline SQL changes the
        catalog differently from its online run is an error of its own."""
        if any(f.rule == "gate-timeout" for f in report.findings):
            return
        try:
            self._replay(rec, new, report, run_tests, dict(offline or {}))
        except _GateTimeout as exc:
            self._timed_out(report, exc.doing)

    def _upgrade_on(self, tree: Path, conn: Any, rev: str, env: Mapping[str, str], rec: WorkspaceRecord,
                    what: str) -> None:
        doing = f"applying {rev} to {what}"
        try:
            self.tool.upgrade(tree, conn, rev, env=env, workspace=rec.name, what=what, timeout=self._left(doing))
        except MigrationError:
            if self._expired():
                raise _GateTimeout(doing) from None
            raise
        except SandboxError:
            if self._expired():
                raise _GateTimeout(doing) from None
            raise

    def _replay(self, rec: WorkspaceRecord, new: list[Revision], report: Report, run_tests: bool,
                offline: dict[str, str]) -> None:
        from . import catalog, trace
        tree = self._tree(rec)
        env = self.sb.base_env(rec)
        cfg = self.sb.config.migrations
        timeout_ms = _statement_timeout_ms(cfg.statement_timeout)
        notes: list[str] = report.extra.setdefault("notes", [])
        with contextlib.ExitStack() as clones:
            self._left("cloning the baseline")
            conn = clones.enter_context(self.sb.db.scratch(f"gate-{rec.name}"))
            # the offline SQL runs on a clone of its own: both start from the baseline, so each
            # revision's catalog change can be compared between the two
            shadow = clones.enter_context(self.sb.db.scratch(f"sql-{rec.name}")) if offline else None
            for info in (conn, shadow):
                if info is not None and not _limit_statements(info, timeout_ms):
                    notes.append(f"the statement timeout ({cfg.statement_timeout}) could not be set on a scratch "
                                 "clone's role: only the gate's deadline bounds its statements there")
            schemas, rename = None, None
            schema = _current_schema(conn)
            if schema not in (None, "public"):        # the schema strategy: the clone is a schema
                schemas, rename = [schema], {schema: "public"}
            shadow_schemas, shadow_rename = schemas, rename
            if shadow is not None:
                sschema = _current_schema(shadow)
                if sschema not in (None, "public"):
                    shadow_schemas, shadow_rename = [sschema], {sschema: "public"}
            before = catalog.snapshot(conn, schemas=schemas, rename=rename)
            shadow_before = catalog.snapshot(shadow, schemas=shadow_schemas, rename=shadow_rename) \
                if shadow is not None else None
            rows, row_notes = _row_counts(conn, schemas, rename, timeout_ms)
            notes.extend(row_notes)
            static_keys = {(f.rule, f.object, f.revision) for f in report.findings}
            writes: set[str] = set()            # tables the chain's DML wrote so far (trace.probe skips them)
            targets: dict[str, Any] | None = None
            for rev in new:
                # 1. what runs: the project's alembic, online, this one revision
                try:
                    self._upgrade_on(tree, conn, rev.id, env, rec, "the gate's fresh clone")
                except MigrationError as exc:
                    text = str(exc)
                    if "statement timeout" in text:
                        text += (f" (the gate's statement timeout is {cfg.statement_timeout}: "
                                 "[migrations] statement_timeout)")
                    failed = self._failing_statement(shadow, offline.get(rev.id), rev, shadow_schemas,
                                                     shadow_rename, writes)
                    if failed is not None:      # the offline SQL names the statement that fails
                        text = failed.describe() + ("" if failed.committed else f"; alembic: {text}")
                    report.extend([Finding(rule="apply-failed", kind="apply", severity="error", revision=rev.id,
                                           statement=failed.statement if failed else None,
                                           message=f"upgrade to {rev.id} failed on a fresh clone of the "
                                           f"baseline: {text}")])
                    return
                self._left(f"reading the catalog after {rev.id}")
                after = catalog.snapshot(conn, schemas=schemas, rename=rename)
                rows_after, row_notes = _row_counts(conn, schemas, rename, timeout_ms)
                notes.extend(n for n in row_notes if n not in notes)
                supp = _suppressions(tree, rev)
                judged = [f for f in catalog.diff(before, after, revision=rev.id)
                          if (f.rule, f.object, f.revision) not in static_keys]
                judged += _rows_lost(rows, rows_after, rev.id)
                for finding in judged:
                    reason = supp.get(finding.rule) or supp.get("*")
                    if reason and finding.kind in ("destructive", "lock"):
                        finding = finding.with_(severity="warning", suppressed=reason)
                    report.extend([finding])
                # 2. the evidence: the offline SQL, traced on the second clone
                traced: trace.Trace | None = None
                if shadow is not None and shadow_before is not None:
                    traced, shadow_after = self._trace_offline(tree, shadow, rev, offline.get(rev.id), env, rec,
                                                               shadow_schemas, shadow_rename, writes, report)
                    if shadow_after is None:
                        shadow = None           # it could not follow: later revisions have no evidence
                        notes.append(f"the offline SQL clone could not follow {rev.id}: later revisions "
                                     "have no evidence")
                    else:
                        if traced is not None:
                            differs = _divergence(_delta(before, after), _delta(shadow_before, shadow_after))
                            if differs:
                                report.extend([Finding(
                                    rule="online-offline-differ", kind="apply", severity="error", revision=rev.id,
                                    message=f"revision {rev.id} behaves differently online than offline: "
                                    + "; ".join(differs[:5]) + (f"; and {len(differs) - 5} more" if len(differs) > 5
                                                                else "")
                                    + ". The gate judged its online run; review what it does")])
                        shadow_before = shadow_after
                before, rows = after, rows_after
                if traced is None:
                    writes.add("*")             # what it wrote is unknown: later data checks are not probed
                    continue
                writes = traced.writes
                if targets is None and any(st.checks for st in traced.statements):
                    targets = self._live_databases(rec, report)
                probes, probe_notes = trace.probe(targets or {}, traced)
                report.findings = trace.annotate(report.findings, rev.id, traced, probes)
                notes.extend(probe_notes)
            if cfg.roundtrip and new:
                first = new[0]
                target = first.down_revisions[0] if first.down_revisions else "base"
                try:
                    self._left("the downgrade round trip")
                    self.tool.downgrade(tree, conn, target, env=env, workspace=rec.name)
                    self._upgrade_on(tree, conn, new[-1].id, env, rec, "the gate's fresh clone")
                except MigrationError as exc:
                    report.extend([Finding(rule="roundtrip-failed", kind="apply", severity="error",
                                           revision=new[-1].id,
                                           message=f"downgrade to {target} and upgrade again failed: {exc}")])
            if run_tests and cfg.test:
                self._left("running the gate's tests")
                self._run_tests(rec, conn, report)

    def _failing_statement(self, shadow: Any, sql: str | None, rev: Revision, schemas: list[str] | None,
                           rename: dict[str, str] | None, writes: set[str]) -> Any:
        """After the online run failed: the offline SQL's statement that fails on the second clone, if
        it fails there too (evidence for the ``apply-failed`` finding), else None."""
        from . import trace
        if shadow is None or sql is None or rev.id not in sql:
            return None
        try:
            traced = trace.trace(shadow, sql, schemas=schemas, rename=rename, prior_writes=writes,
                                 deadline=time.monotonic() + self._left(f"tracing the offline SQL of {rev.id}"))
        except MigrationError:
            return None
        return traced.failure

    def _trace_offline(self, tree: Path, shadow: Any, rev: Revision, sql: str | None, env: Mapping[str, str],
                       rec: WorkspaceRecord, schemas: list[str] | None, rename: dict[str, str] | None,
                       writes: set[str], report: Report) -> tuple[Any, Any]:
        """Trace ``rev``'s offline SQL on the second clone; returns (trace or None, its catalog after,
        or None when the clone could not be brought to ``rev``). A revision without usable offline SQL
        is applied there by alembic instead, so that the next one is traced from the right state."""
        from . import catalog, trace
        notes: list[str] = report.extra.setdefault("notes", [])
        traced: trace.Trace | None = None
        if sql is not None and rev.id in sql:    # the SQL records the revision in the version table
            doing = f"tracing the offline SQL of {rev.id}"
            try:
                traced = trace.trace(shadow, sql, schemas=schemas, rename=rename, prior_writes=writes,
                                     deadline=time.monotonic() + self._left(doing))
            except MigrationError as exc:
                if self._expired():
                    raise _GateTimeout(doing) from None
                notes.append(f"{rev.id}: its offline SQL could not be traced ({exc}): no evidence")
                return None, None
            if self._expired():
                raise _GateTimeout(doing)
            failed = traced.failure
            if failed is not None:
                notes.append(f"{rev.id}: its offline SQL failed on the clone ({failed.describe()}), but alembic "
                             "applied it online: the revision behaves differently offline, so it has no evidence")
                if failed.committed:
                    return None, None
                traced = None
            else:
                try:
                    self.tool.verify(shadow, [rev.id], what="the gate's offline SQL clone")
                except MigrationError as exc:
                    notes.append(f"{rev.id}: its offline SQL did not record the revision ({exc}): no evidence")
                    return None, None
        elif sql is not None:
            notes.append(f"{rev.id}: its offline SQL does not record the revision in the version table: "
                         "no evidence")
        if traced is None:
            try:
                self._upgrade_on(tree, shadow, rev.id, env, rec, "the gate's offline SQL clone")
            except MigrationError:
                return None, None
        return traced, catalog.snapshot(shadow, schemas=schemas, rename=rename)

    def _live_databases(self, rec: WorkspaceRecord, report: Report) -> dict[str, Any]:
        """The databases of the other live workspaces, for the replay's data checks."""
        out: dict[str, Any] = {}
        for other in self.sb.registry.all():
            if other.name == rec.name or other.state not in ("ready", "stopped") or not other.strategy:
                continue
            try:
                out[other.name] = self.sb.db.info(other.name, other.data.get("network"))
            except SandboxError as exc:
                report.extra.setdefault("notes", []).append(
                    f"workspace {other.name}'s database is unknown ({exc}): its data was not checked")
        return out

    def _run_tests(self, rec: WorkspaceRecord, conn: Any, report: Report) -> None:
        """The gate's test commands, in the project's environment, against the fresh clone only."""
        from .alembic import scrub_secrets
        tree = self._tree(rec)
        for command in self.sb.config.migrations.test:
            res = self.sb.runner.run(tree, ["sh", "-c", command], cwd=tree, env=self.sb.base_env(rec), db=conn,
                                     workspace=rec.name, writable=True)
            if res.code != 0:
                tail = scrub_secrets(res.output, conn.url()).splitlines()[-5:]
                report.extend([Finding(rule="tests-failed", kind="apply", severity="error",
                                       message=f"test command {command!r} exited {res.code}: "
                                       + " | ".join(tail))])
                return

    def _affected(self, rec: WorkspaceRecord, finding: Finding) -> tuple[str, ...]:
        """Other workspaces whose code references the object, or whose database wrote data into it."""
        if not finding.object:
            return ()
        parts = finding.object.split(".")
        # a table is found by its name; a column by its name in a file that also names its table
        needles = parts[1:] if len(parts) >= 2 else parts
        migrations_dirs = self._migrations_dirs()
        hits: list[str] = []
        for other in self.sb.registry.all():
            if other.name == rec.name or other.state not in ("ready", "stopped"):
                continue
            # Read from main's repository (the workspace's commits are collected into its branch):
            # never by running git inside a workspace's own repository.
            try:
                self.sb.collect(other)
            except SandboxError:
                pass
            ref = f"refs/heads/{other.branch}"
            if not self.sb.git.branch_exists(other.branch):
                continue
            args = ["grep", "-I", "-l", "-w", "-F", "--all-match"]
            for needle in needles:
                args += ["-e", needle]
            args += [ref, "--", "."]
            args += [f":(exclude){d}" for d in migrations_dirs]
            res = _git(self.root, *args, check=False)
            files = [ln.split(":", 1)[1] if ln.startswith(ref + ":") else ln for ln in res.stdout.splitlines() if ln]
            # main's own code using the object is main's business; count files that differ from main
            if any(fl in self._changed_files(other) for fl in files):
                hits.append(other.name)
                continue
            if self._holds_more_rows(other, parts):
                hits.append(other.name)
        return tuple(hits)

    def _trusted_changes(self, rec: WorkspaceRecord, sha: str | None = None) -> list[str]:
        """Files the branch (the judged commit ``sha``; else the branch's tip) changes that main trusts:
        sandbox's and alembic's config, env.py, seeds, the project's Dockerfile and devcontainer, git
        attributes and .worktreeinclude."""
        sha = sha or self._branch_sha(rec)
        if not sha:
            return []
        cfg = self.sb.config
        exact = {"sandbox.toml", cfg.migrations.config, ".worktreeinclude", *cfg.database.seed}
        if cfg.workspace.dockerfile:
            exact.add(cfg.workspace.dockerfile)
        try:
            layout = self.tool.layout(self.root) if hasattr(self.tool, "layout") else None
            if layout is not None:
                exact.add(str((layout.script_location / "env.py").relative_to(self.root)))
        except (MigrationError, ValueError):
            pass
        changed = _git(self.root, "diff", "--name-only", "-z", "--no-renames",
                       f"{self.sb.git.main_branch()}...{sha}", check=False).stdout.split("\0")
        return [f for f in changed if f in exact or f.startswith(".devcontainer/")
                or f.rsplit("/", 1)[-1] == ".gitattributes"]

    def _changed_files(self, other: WorkspaceRecord) -> set[str]:
        """Files a workspace's branch changed or added compared with main (once per command)."""
        key = Path(other.path)
        if key not in self._changed_cache:
            main = self.sb.git.main_branch()
            self._changed_cache[key] = set(_git(self.root, "diff", "--name-only", f"{main}...refs/heads/{other.branch}",
                                                check=False).stdout.split())
        return self._changed_cache[key]

    def _migrations_dirs(self) -> list[str]:
        dirs = set()
        for rev in self._main()[0].values():
            try:
                dirs.add(str(rev.path.parent.relative_to(self.root)))
            except ValueError:
                continue
        return sorted(dirs)

    def _holds_more_rows(self, other: WorkspaceRecord, parts: list[str]) -> bool:
        """Whether ``other``'s copy of table ``parts`` holds more rows than the baseline's.

        Counted as ``other``'s own login (:meth:`Strategy.info`), never as an admin, and by
        :func:`~sandbox.databases.pgadmin.count_rows`, which counts plain tables only (no view,
        rule or function of the workspace runs), read-only and under a statement timeout.
        """
        from ..databases.pgadmin import count_rows
        if len(parts) < 2:
            return False
        schema, table = parts[0], parts[1]
        try:
            info = self.sb.db.info(other.name, other.data.get("network"))
        except SandboxError:
            return False
        use_schema = not info.options
        mine = count_rows(info, schema if use_schema else None, table)
        if mine is None:
            return False
        try:
            base = count_rows(self.sb.db.baseline(), schema if use_schema else None, table)
        except SandboxError:
            base = None
        return mine > (base or 0)

    def _apply_policy(self, rec: WorkspaceRecord | None, report: Report, allow: str | None) -> list[Finding]:
        out: list[Finding] = []
        allowed: list[Finding] = []
        for f in report.findings:
            if f.kind in ("destructive", "lock") and self.policy == "off":
                continue
            if f.kind == "destructive":
                if rec is not None and f.severity == "error":
                    f = f.with_(affected_workspaces=self._affected(rec, f))
                if self.policy == "warn" and f.severity == "error":
                    f = f.with_(severity="warning")
                if allow and f.severity == "error":
                    f = f.with_(severity="warning", suppressed=f"--allow-destructive: {allow}")
                    allowed.append(f)
                f = explain_destructive(f, rec.name if rec is not None else None)
            out.append(f)
        report.findings = out
        return allowed

    def check(self, name: str, *, dry_run_tests: bool = False, allow: str | None = None) -> Report:
        """The gate's checks, without merging: on the branch's commit, resolved once (``judged``)."""
        rec = self.sb.record(name)
        report = Report(workspace=name)
        state = self._checkout_state(rec, report)       # collects the workspace into main first
        sha = self._branch_sha(rec)
        if sha is None:
            raise WorkspaceError(f"workspace {name!r} has no branch {rec.branch!r} in main's repository",
                                 hint="commit in the workspace first")
        report.extra["judged"] = sha
        report.extra["branch"] = rec.branch
        self._note_checkout(rec, sha, state, report)
        with self._judging(rec, sha):
            self._gate(rec, sha, report, dry_run_tests=dry_run_tests, allow=allow)
        return report

    def _gate(self, rec: WorkspaceRecord, sha: str, report: Report, *, dry_run_tests: bool,
              allow: str | None) -> None:
        """Every check, on the exported tree of ``sha`` (``self._tree(rec)``)."""
        trusted = self._trusted_changes(rec, sha)
        report.extra["trusted_changes"] = trusted
        if trusted:
            report.extra.setdefault("notes", []).append(
                f"this branch changes files sandbox trusts once merged (they run on the host or configure "
                f"what does): {', '.join(trusted[:8])}{' …' if len(trusted) > 8 else ''}; review them")
        planted = self._ignored_paths(sha)
        if not self.enabled():
            report.extend(planted)
            report.extra.setdefault("notes", []).append(
                f"no {self.sb.config.migrations.config} on main: no migrations to check")
            return
        main_revs, main_heads = self._main()
        report.base_head = main_heads[0] if len(main_heads) == 1 else None
        new = self.new_revisions(rec, main_revs)
        report.revisions = [r.id for r in new]
        report.extend(self._ordering(rec, main_revs, main_heads, new))
        ordered = report.ok          # only ordering findings so far: replaying needs the right parent
        report.extend(planted)
        if new:
            offline = self._static(rec, new, report)
            if ordered:   # the replay's evidence matters most when the static check found something
                self._dynamic(rec, new, report, run_tests=dry_run_tests, offline=offline)
            else:
                report.extra.setdefault("notes", []).append(
                    "dynamic replay skipped: fix the ordering first")
        elif dry_run_tests and self.sb.config.migrations.test:
            with self.sb.db.scratch(f"gate-{rec.name}") as conn:
                self._run_tests(rec, conn, report)
        allowed = self._apply_policy(rec, report, allow)
        if allowed:
            report.extra["allowed"] = [f.rule + (f" {f.object}" if f.object else "") for f in allowed]

    def _ignored_paths(self, sha: str) -> list[Finding]:
        """Paths the branch adds or changes that a merge would write over sandbox's state or over an
        ignored file of main's checkout: git merge replaces an *ignored* file silently (no conflict).

        Refused: anything under ``.sandbox/`` (sandbox's state, other workspaces' checkouts), and any
        path (or a folder above it) that main's checkout has, untracked and ignored (``.env``,
        ``.git/info/exclude`` entries, ...), as git's own ignore rules in main say.
        """
        main = self.sb.git.main_branch()
        diff = _git(self.root, "diff", "--name-only", "-z", "--no-renames", "--diff-filter=d",
                    f"{main}...{sha}", check=False)
        if diff.returncode != 0:
            raise WorkspaceError(f"cannot compare {sha[:12]} with {main}: {diff.stderr.strip()}")
        paths = [p for p in diff.stdout.split("\0") if p]
        state = self.sb.config.state_dir.name
        bad: dict[str, str] = {}
        candidates: set[str] = set()
        for rel in paths:
            parts = rel.split("/")
            if parts[0] == state:
                bad[rel] = f"it is under {state}/, sandbox's own state"
                continue
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i])
                if os.path.lexists(self.root / prefix):
                    candidates.add(prefix)
        if candidates:
            listed = sorted(candidates)
            ignored = _git(self.root, "-c", "core.fsmonitor=false", "check-ignore", "--no-index", "--stdin", "-z",
                           check=False, input="\0".join(listed) + "\0")
            hits = {p for p in ignored.stdout.split("\0") if p}
            if hits:
                tracked = set(_git(self.root, "ls-files", "-z", "--", *sorted(hits), check=False).stdout.split("\0"))
                hits = {h for h in hits if h not in tracked}
            for rel in paths:
                parts = rel.split("/")
                over = next(("/".join(parts[:i]) for i in range(1, len(parts) + 1)
                             if "/".join(parts[:i]) in hits), None)
                if over is not None and rel not in bad:
                    bad[rel] = f"main's checkout has {over} as an ignored file, which a merge would overwrite"
        return [Finding(rule="ignored-path", kind="ordering", severity="error", object=rel,
                        message=f"the branch writes {rel}: {why}; remove it from the branch (git rm --cached)")
                for rel, why in sorted(bad.items())]

    def _checkout_state(self, rec: WorkspaceRecord, report: Report) -> list[str]:
        """What the workspace's checkout holds beyond its branch (uncommitted work, stashes, other
        branches, a detached HEAD); collects the workspace. Only reported: it never changes what is judged."""
        managed = self.sb._managed_files()
        self.sb.collect(rec)            # an unreadable workspace repository fails the check here
        try:
            if self.sb.isolated(rec):
                return self.sb.repos.unsaved(rec.name, Path(rec.path), rec.branch, ignore=managed)
            return [_typed(ln) for ln in self.sb.git.dirty(Path(rec.path), ignore=managed)]
        except SandboxError as exc:
            report.extra.setdefault("notes", []).append(
                f"cannot tell what the checkout holds beyond its commits ({exc}); the branch was judged as collected")
            return []

    def _checkout_head(self, rec: WorkspaceRecord) -> str | None:
        """The commit the workspace's checkout has out (its HEAD, as last collected)."""
        if self.sb.isolated(rec):
            return self.sb.repos._resolve(f"{self.sb.repos.prefix(rec.name)}HEAD")
        try:
            return self.sb.git.head(Path(rec.path))
        except SandboxError:
            return None

    def _note_checkout(self, rec: WorkspaceRecord, sha: str, state: list[str], report: Report) -> None:
        notes = report.extra.setdefault("notes", [])
        judged = f"the gate judged commit {sha[:12]} of branch {rec.branch!r}"
        uncommitted = [u for u in state if kind_of(u) in UNCOMMITTED]
        if uncommitted:
            shown = ", ".join(what_of(u) for u in uncommitted[:5]) + (" …" if len(uncommitted) > 5 else "")
            notes.append(f"the checkout has {len(uncommitted)} uncommitted change(s) ({shown}): not checked; {judged}")
        head = self._checkout_head(rec)
        if head and head != sha:
            notes.append(f"the checkout has {head[:12]} out, not the branch's tip (a detached HEAD or another "
                         f"branch): not checked; {judged}, and merge refuses until the checkout is on it")
        for u in state:
            if kind_of(u) == "stash":
                notes.append(f"the checkout has stash entries: not checked; {judged}")
            elif kind_of(u) == "branch":
                notes.append(f"branch {what_of(u)!r} in the checkout has commits that are not on {rec.branch!r}: "
                             f"not checked; {judged}")

    # -- rebase / sync ---------------------------------------------------------------------------------
    def _merge_main_into(self, rec: WorkspaceRecord) -> bool:
        """Merge main into the workspace's branch; True if anything came in.

        The merge commit is made in main's repository without a worktree (``git merge-tree``),
        then the workspace fast-forwards to it (inside its container for a Docker workspace):
        a conflict changes nothing anywhere.
        """
        main = self.sb.git.main_branch()
        self.sb.collect(rec)
        if not self.sb.git.behind(rec.branch):
            return False
        self._require_clean(rec, "syncing")
        commit, conflicts = self.sb.repos.merge_commit(rec.branch, main, f"Merge {main} into {rec.branch} (sandbox sync)")
        if commit is None:
            raise WorkspaceError(f"merging {main} into {rec.branch!r} conflicts in "
                                 f"{', '.join(conflicts) or 'some files'}; nothing was changed",
                                 hint=f"resolve it in the workspace: `sandbox exec {rec.name} -- git merge {main}`")
        self.sb.advance(rec, commit)
        return True

    def _require_clean(self, rec: WorkspaceRecord, doing: str) -> None:
        """Refuse while the checkout has uncommitted changes or untracked files (by their kind; a
        stash, another branch or a detached HEAD are not uncommitted work in the checkout)."""
        path = Path(rec.path)        # the checkout itself, never the judged tree
        if self.sb.isolated(rec):
            found = self.sb.repos.unsaved(rec.name, path, rec.branch, ignore=self.sb._managed_files())
        else:
            found = [_typed(ln) for ln in self.sb.git.dirty(path, ignore=self.sb._managed_files())]
        dirty = [u for u in found if kind_of(u) in UNCOMMITTED]
        if dirty:
            raise WorkspaceError(f"workspace {rec.name!r} has uncommitted changes; commit them before {doing}",
                                 hint=", ".join(what_of(u) for u in dirty[:5]))

    def _rewrite_root(self, rec: WorkspaceRecord) -> str | None:
        """Point the root of the new revisions at main's head and commit; returns the old parent."""
        main_revs, main_heads = self._main()
        if len(main_heads) != 1:
            raise MigrationError(f"main has {len(main_heads)} heads; merge them on main first")
        head = main_heads[0]
        new = self.new_revisions(rec, main_revs)
        roots = self._roots(new)
        if not roots:
            return None
        if len(roots) > 1:
            raise MigrationError(f"the new revisions of {rec.name!r} start from {len(roots)} roots; "
                                 "make them one chain first")
        root = roots[0]
        if root.is_merge:
            raise MigrationError(f"{root.id} is a merge revision; rebase needs a linear chain")
        old = root.down_revisions[0] if root.down_revisions else None
        if old == head:
            return None
        self._require_clean(rec, "rebasing")
        tree = self._revisions_tree(rec) or self._tree(rec)     # where new_revisions read it
        rel = str(root.path.relative_to(tree.resolve()))
        # The committed file, read from main's object store (not the workspace's files), rewritten,
        # committed in main's repository; the workspace then fast-forwards to that commit.
        source = self.sb.repos.show(f"refs/heads/{rec.branch}", rel)
        try:
            from .alembic import rewrite_down_revision
            new_source = rewrite_down_revision(source, head)
        except (SyntaxError, ValueError) as exc:
            raise MigrationError(f"cannot rewrite down_revision in {rel}: {exc}") from exc
        commit = self.sb.repos.commit_file(rec.branch, rel, new_source,
                                           f"sandbox: rebase migration {root.id} onto {head}")
        self.sb.advance(rec, commit)
        return old or "base"

    def _upgrade_workspace(self, rec: WorkspaceRecord, info: Any) -> None:
        tree = self._tree(rec)
        if self.tool.available(tree):
            self.tool.upgrade(tree, info, "heads", env=self.sb.base_env(rec), workspace=rec.name)

    def _rebuild_db(self, rec: WorkspaceRecord, label: str, op: Operation | None = None) -> str | None:
        """Checkpoint, reset to the baseline, upgrade to the workspace's head (verified)."""
        if not rec.strategy:
            return None
        cp = None
        try:
            cp = self.sb.db.checkpoint(rec.name, label).label
        except SandboxError:
            cp = None
        if op is not None:
            op.step("checkpointed", checkpoint=cp)
        info = self.sb.db.reset(rec.name, rec.data.get("network"))
        if op is not None:
            op.step("reset")
        self._upgrade_workspace(rec, info)
        if op is not None:
            op.step("upgraded")
        return cp

    def rebase(self, name: str) -> dict[str, Any]:
        self.sb.record(name)                  # an unknown name is exit 2 before anything is locked
        if not self.enabled():
            raise UsageError(f"no {self.sb.config.migrations.config} on main: nothing to rebase")
        with self.sb.locked(name) as rec, self.sb.operation("migrate-rebase", name) as op:
            merged = self._merge_main_into(rec)
            op.step("merged-main", dirty=merged, merged=merged)
            old = self._rewrite_root(rec)
            op.step("rewritten", dirty=bool(old), old=old)
            if old is None and not merged:
                return {"name": name, "rebased": False, "message": f"{name}: already on main's head"}
            self.sb.recopy(rec)           # generated, git-ignored files the database step may import
            try:
                cp = self._rebuild_db(rec, _save_point("pre-rebase"), op)
            except MigrationError as exc:
                # the files are rebased and committed: the workspace stays usable, and only its
                # database step is left, which `sandbox db reset` redoes once the cause is fixed
                op.done()
                raise MigrationError(f"{name}: rebased onto main's head (its files are committed), but its database "
                                     f"could not be rebuilt: {exc.message}",
                                     hint=(exc.hint + "; then " if exc.hint else "fix the cause, then ")
                                     + f"`sandbox db reset {name}`") from exc
        _, heads = self._main()
        msg = f"{name}: " + (f"root moved from {old} onto {heads[0]}" if old else "main merged in")
        msg += "; database reset to the baseline and upgraded" + (f" (previous data in checkpoint {cp})" if cp else "")
        return {"name": name, "rebased": bool(old), "main_merged": merged, "checkpoint": cp, "message": msg}

    def sync(self, name: str) -> dict[str, Any]:
        self.sb.record(name)
        with self.sb.locked(name) as rec, self.sb.operation("sync", name) as op:
            merged = self._merge_main_into(rec)
            op.step("merged-main", dirty=merged, merged=merged)
            old = self._rewrite_root(rec) if self.enabled() else None
            op.step("rewritten", dirty=bool(old), old=old)
            cp = None
            if merged or old:
                self.sb.recopy(rec)
                try:
                    if old:
                        cp = self._rebuild_db(rec, _save_point("pre-sync"), op)
                    elif rec.strategy:
                        # nothing of ours to move: bring the database forward in place, keeping its data
                        self._upgrade_workspace(rec, self.sb.db.info(name, rec.data.get("network")))
                        op.step("upgraded")
                except MigrationError as exc:
                    op.done()       # as in rebase: the files are synced, the workspace stays usable
                    raise MigrationError(f"{name}: main merged in (its files are committed), but its database "
                                         f"could not be brought to the new head: {exc.message}",
                                         hint=(exc.hint + "; then " if exc.hint else "fix the cause, then ")
                                         + f"`sandbox db reset {name}`") from exc
        parts = [f"{name}: " + ("main merged in" if merged else "already up to date with main")]
        if old:
            parts.append(f"migration root moved from {old} onto main's head")
            parts.append("database rebuilt" + (f" (previous data in checkpoint {cp})" if cp else ""))
        elif merged:
            parts.append("database upgraded in place")
        return {"name": name, "merged": merged, "rebased": bool(old), "checkpoint": cp, "message": "; ".join(parts)}

    # -- merge -------------------------------------------------------------------------------------------
    def merge(self, name: str, *, dry_run: bool = False, allow_destructive: str | None = None) -> Report:
        rec = self.sb.record(name)
        git = self.sb.git
        main = git.main_branch()
        # Bounded by SANDBOX_REGISTRY_TIMEOUT: another merge can hold this lock for as long as its gate
        # runs. Exit 1 (LockBusy), not 3: nothing is unavailable, another sandbox command is working.
        with self.sb.registry.lock("merge", timeout=self.sb.registry.timeout), \
                self.sb.operation("merge", name) as op:
            self._require_clean(rec, "merging")
            main_dirty = [ln for ln in git.dirty(self.root) if not ln.startswith(("??", "stash:"))]
            if main_dirty:
                raise WorkspaceError("the main checkout has uncommitted changes; merging would touch them",
                                     hint=", ".join(ln[3:] for ln in main_dirty[:5]))
            if self.enabled() and self.sb.config.migrations.auto_rebase:
                st = self.workspace_summary(rec)
                if st["new"] and st["behind"]:
                    self.rebase(name)
            report = self.check(name, dry_run_tests=True, allow=allow_destructive)
            branch_sha = str(report.extra["judged"])        # the commit the gate judged, and the one merged
            main_sha = git.rev(main)
            if self.sb.config.migrations.merge == "ff" and \
                    _git(self.root, "merge-base", "--is-ancestor", main_sha, branch_sha, check=False).returncode != 0:
                report.extend([Finding(rule="branch-behind-main", kind="ordering", severity="error",
                                       message=f"branch {rec.branch!r} does not contain main's latest commits; "
                                       f"run `sandbox sync {name}` (merge = \"ff\")")])
            if not report.ok or dry_run:
                report.extra["dry_run"] = dry_run
                return report
            self._still_judged(rec, branch_sha)
            op.step("checked", dirty=False, main_sha=main_sha, branch_sha=branch_sha, revisions=report.revisions,
                    base_head=report.base_head, allow=allow_destructive, allowed=report.extra.get("allowed", []))
            commit = self._git_merge(rec.branch, main_sha, branch_sha)
            op.step("main-moved", commit=commit)
            self._record_merge(name, commit, report.base_head, report.revisions, allow_destructive,
                               report.extra.get("allowed", []))
            op.step("recorded")
            try:
                self._forward_baseline(report.revisions)
                op.step("baseline")
            except SandboxError as exc:
                # main moved: the baseline must follow. The intent stays, so the next command retries.
                op.leave(f"the baseline could not be brought forward: {exc}")
                report.extra["baseline_error"] = (f"merged, but the baseline could not be brought forward: "
                                                  f"{exc}; the next sandbox command retries (or run "
                                                  "`sandbox db baseline --refresh`)")
            report.merged = True
            report.extra["commit"] = commit
            return report

    def _still_judged(self, rec: WorkspaceRecord, sha: str) -> None:
        """Refuse to merge unless the branch is still at the judged commit and the checkout has it out."""
        self.sb.collect(rec)
        now = self._branch_sha(rec)
        if now != sha:
            raise WorkspaceError(f"branch {rec.branch!r} moved from {sha[:12]} (the commit the gate judged) to "
                                 f"{(now or 'nothing')[:12]} during the check; nothing was merged",
                                 hint=f"run `sandbox merge {rec.name}` again to judge the new commit")
        head = self._checkout_head(rec)
        if head and head != sha:
            raise WorkspaceError(f"workspace {rec.name!r} has {head[:12]} checked out (a detached HEAD or another "
                                 f"branch), not branch {rec.branch!r} at {sha[:12]}, the commit the gate judged; "
                                 "nothing was merged",
                                 hint=f"check out {rec.branch} in the workspace (`sandbox exec {rec.name} -- git "
                                 f"switch {rec.branch}`), then merge again")

    def _record_merge(self, name: str, commit: str, base_head: str | None, revisions: list[str],
                      allow: str | None, allowed: list[str]) -> None:
        if allow:
            self.sb.registry.record_allowance(name, revisions, allowed, allow, _who())
        self.sb.registry.set_meta("baseline_commit", commit)
        self.sb.registry.record_merge(name, base_head, revisions, commit)

    def _forward_baseline(self, revisions: list[str]) -> None:
        """After main moved: apply main's new revisions to the baseline (a copy, swapped in) and record its head."""
        if not (self.enabled() and revisions):
            return
        self.sb.progress("bringing the baseline forward")
        with self.sb.registry.lock("baseline"):
            def forward(conn: Any) -> None:
                self.tool.upgrade(self.root, conn, "heads", env=self.sb.base_env(), what="the baseline database")
            self.sb.db.update_baseline(forward)
            heads = self.tool.heads(self.root)
            self.sb.registry.set_meta("baseline_head", heads[0] if heads else "")

    # -- finishing what a killed process left (see sandbox.intents) --------------------------------------
    def finish(self, it: IntentRecord) -> tuple[str, str]:
        """Roll an interrupted rebase, sync or merge forward or back; called under its lock.

        The git side is finished first (it is what the workspace's files show), then the database is
        brought to match it: rebuilt from the baseline (a moved root) or upgraded in place.
        """
        if it.op == "merge":
            return self._finish_merge(it)
        rec = self.sb.registry.get(it.workspace or "")
        if rec is None:
            return "roll-back", "the workspace is gone"
        steps = STEPS[it.op]
        at = steps.index(it.step) if it.step in steps else 0
        label = _save_point("pre-rebase" if it.op == "migrate-rebase" else "pre-sync")
        if at == 0:
            return "roll-back", "nothing had changed"
        if it.step == "upgraded":
            return "roll-forward", "nothing left to do"
        if at <= steps.index("rewritten"):
            merged = bool(it.data.get("merged"))
            old = it.data.get("old") if it.step == "rewritten" else self._rewrite_root(rec)
            if old:
                cp = self._rebuild_db(rec, label)
                return "roll-forward", ("migration root moved onto main's head; database rebuilt and upgraded"
                                        + (f" (previous data in checkpoint {cp})" if cp else ""))
            if not merged:
                return "roll-back", "nothing had changed"
            if it.op == "sync":
                if rec.strategy:
                    self._upgrade_workspace(rec, self.sb.db.info(rec.name, rec.data.get("network")))
                return "roll-forward", "main merged in; database upgraded in place"
            cp = self._rebuild_db(rec, label)
            return "roll-forward", "main merged in; database rebuilt and upgraded" + (
                f" (previous data in checkpoint {cp})" if cp else "")
        if it.step == "checkpointed":
            info = self.sb.db.reset(rec.name, rec.data.get("network"))
        else:                                                       # "reset": only the upgrade is missing
            info = self.sb.db.info(rec.name, rec.data.get("network"))
        self._upgrade_workspace(rec, info)
        kept = it.data.get("checkpoint")
        return "roll-forward", "database rebuilt from the baseline and upgraded" + (
            f" (previous data in checkpoint {kept})" if kept else "")

    def _finish_merge(self, it: IntentRecord) -> tuple[str, str]:
        """Main moved: the merge is recorded and the baseline brought to main's head. It did not: a half-done
        ``git merge`` in the main checkout is aborted."""
        main_sha, branch_sha = it.data.get("main_sha"), it.data.get("branch_sha")
        head = self.sb.git.rev("HEAD")
        moved = it.step in ("main-moved", "recorded", "baseline") or bool(
            main_sha and branch_sha and head != main_sha
            and _git(self.root, "merge-base", "--is-ancestor", branch_sha, head, check=False).returncode == 0)
        if not moved:
            if main_sha and _git(self.root, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).returncode == 0:
                _git(self.root, "merge", "--abort", check=False)
                _git(self.root, "reset", "-q", "--keep", main_sha, check=False)
                return "roll-back", "a half-done git merge was aborted: main is unchanged"
            return "roll-back", "main was not changed"
        commit = str(it.data.get("commit") or head)
        revisions = list(it.data.get("revisions") or [])
        if it.step in ("checked", "main-moved"):
            self._record_merge(str(it.workspace), commit, it.data.get("base_head"), revisions,
                               it.data.get("allow"), list(it.data.get("allowed") or []))
        if it.step != "baseline":
            self._forward_baseline(revisions)
        return "roll-forward", f"main is at {commit[:12]}; the baseline is at main's head"

    def _git_merge(self, branch: str, main_sha: str, sha: str) -> str:
        """Merge ``sha`` (the judged commit of ``branch``, not whatever the branch names now) into the
        main checkout; on any failure main is put back exactly as it was."""
        mode = self.sb.config.migrations.merge
        args = ["merge", "--ff-only", sha] if mode == "ff" else \
            ["merge", "--no-ff", "--no-edit", "-m", f"Merge workspace {branch} at {sha[:12]} (sandbox)", sha]
        res = _git(self.root, *args, check=False)
        self._main_cache = None
        if res.returncode != 0:
            _git(self.root, "merge", "--abort", check=False)
            _git(self.root, "reset", "-q", "--keep", main_sha, check=False)
            raise WorkspaceError(f"git merge of {branch!r} into main failed; main is unchanged: "
                                 f"{(res.stderr or res.stdout).strip()[:300]}")
        return self.sb.git.rev("HEAD")


def _save_point(prefix: str) -> str:
    """A checkpoint label (a valid workspace-style name) such as ``pre-sync-2026-11-29T041500``."""
    from ..registry import now
    return f"{prefix}-" + now().replace(":", "").replace("+", "")[:17]


def _who() -> str:
    from ..api import user_name
    agent = os.environ.get("SANDBOX_AGENT") or os.environ.get("USER") or user_name()
    return agent


def _typed(line: str) -> Unsaved:
    """A ``git status --porcelain`` line (or :meth:`Worktrees.dirty`'s stash line) with its kind."""
    if line.startswith("stash:"):
        return Unsaved(line, "stash")
    if line.startswith("??"):
        return Unsaved(line, "untracked", line[3:])
    return Unsaved(line, "changed", line[3:])
