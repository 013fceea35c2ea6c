"""The alembic adapter: reads a tree's revision graph statically, runs alembic in the project's
environment, and verifies the effect.

A *tree* is a checkout (main, or a workspace's). sandbox never imports a tree's Python:

- the revision graph comes from :mod:`.scan` (the config with configparser, each revision file
  with :mod:`ast`; ids must be literals), so ``ls`` and ``migrate status`` run no project code;
- ``offline_sql``, ``upgrade`` and ``downgrade`` run :mod:`.runner` with the project's own
  interpreter, through a :class:`~sandbox.project.ProjectRunner` (a container of the project's
  image under the Docker runtime), with the working directory at the alembic config's folder;
- after every upgrade, the target database's version table is read and compared with what
  was asked for: a project whose ``env.py`` sent the migrations elsewhere fails loudly
  (:class:`~sandbox.errors.MigrationsMisdirected`) instead of leaving an empty database behind.

Failures of the project's code become :class:`MigrationError`; passwords are scrubbed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sandbox.databases.base import ConnInfo
from sandbox.errors import DatabaseError, MigrationError, MigrationsMisdirected
from sandbox.migrations.base import Revision
from sandbox.migrations.scan import AlembicLayout, heads_of, read_inside, read_layout, scan_revisions

__all__ = ["AlembicTool", "rewrite_down_revision", "scrub_secrets"]

# The last line of the runner's output (sandbox/migrations/runner.py, which sandbox never imports).
RESULT_MARK = "@@sandbox-result@@"


def scrub_secrets(text: str, url: str | None = None) -> str:
    """Hide passwords: in any ``scheme://user:pw@`` URL, ``password=…`` pairs, and ``url``'s own."""
    text = re.sub(r"([A-Za-z][\w+.-]*://[^:/@\s]*:)([^@\s]*)(@)", r"\1***\3", text)
    text = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", r"\1***", text, flags=re.IGNORECASE)
    if url:
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            for secret in {password, unquote(password)}:
                text = re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", "***", text)
    return text


_PLACEHOLDER = ConnInfo(host="localhost", port=5432, user="sandbox", password="offline", dbname="offline")
_UNREACHABLE = ("connection refused", "could not connect", "connect call failed", "could not translate host name",
                "name or service not known", "temporary failure in name resolution", "no such host",
                "timeout expired", "network is unreachable", "operationalerror", "connectionrefusederror",
                "cannot assign requested address", "oserror: multiple exceptions")


MISDIRECTED = "the migrations did not reach the workspace database"


def _which(what: str) -> str:
    """" (the baseline database)" when the target is not a workspace's own database."""
    return "" if what == "the workspace database" else f" ({what})"


def misdirected_hint(config_path: str) -> str:
    whose = f"the env.py of {config_path}" if config_path else "its env.py"
    return (f"{whose} must connect to the URL sandbox gives it: honour DATABASE_URL or sqlalchemy.url, or map "
            "the project's own variables in sandbox.toml [workspace.env] (e.g. POSTGRES_SERVER = \"${PGHOST}\"); "
            "see README, \"Using sandbox on your project\"")


class AlembicTool:
    """:class:`~sandbox.migrations.base.MigrationTool` for alembic projects.

    Reading (``available``, ``revisions``, ``heads``) is static (:mod:`.scan`): nothing of the
    project is imported. Running (``offline_sql``, ``upgrade``, ``downgrade``) goes through a
    :class:`~sandbox.project.ProjectRunner`, in the project's environment, and every upgrade is
    verified by reading the version table in the target database.
    """

    name = "alembic"

    def __init__(self, config_path: str = "alembic.ini", *, runner: Any = None,
                 version_table: str = "alembic_version", version_table_schema: str | None = None,
                 cache_dir: Path | None = None, app: str | None = None, wrap: str | None = None,
                 layout_file: Path | None = None, main_root: Path | None = None) -> None:
        self.config_path = config_path
        self.runner = runner
        self.version_table = version_table
        self.version_table_schema = version_table_schema
        self.cache_dir = cache_dir
        self.app = app                  # [migrations] app: the Flask app whose context env.py needs
        self.wrap = wrap                # [migrations] wrap: what alembic runs inside
        self.layout_file = layout_file  # where alembic said the revisions are (sandbox.migrations.discover)
        self.main_root = main_root      # main's checkout: what a worktree may lack (generated files)

    # -- reading (static) --------------------------------------------------------------------

    def layout(self, tree: Path) -> AlembicLayout | None:
        """The tree's layout: where alembic itself said the revisions are when ``init`` asked it
        (``layout_file``), else what the config says, read statically."""
        from sandbox.migrations.discover import recorded_layout
        recorded = recorded_layout(self.layout_file, Path(tree), self.config_path)
        return recorded if recorded is not None else read_layout(Path(tree), self.config_path)

    def available(self, tree: Path) -> bool:
        """True when ``<tree>/<config_path>`` is an alembic config, even one that cannot be
        resolved: then every use of it fails with the reason, never as "no migrations"."""
        try:
            return self.layout(tree) is not None
        except MigrationError:
            return (Path(tree) / self.config_path).is_file()

    def _require(self, tree: Path) -> AlembicLayout:
        layout = self.layout(tree)
        if layout is None:
            raise MigrationError(f"alembic config not found: {Path(tree) / self.config_path}")
        return layout

    def revisions(self, tree: Path) -> dict[str, Revision]:
        """Every revision of the tree, keyed by id (read with ast, never imported)."""
        return scan_revisions(Path(tree), self._require(tree))

    def heads(self, tree: Path) -> list[str]:
        return heads_of(self.revisions(tree))

    def branch_points(self, tree: Path) -> list[str]:
        """Revisions with two or more children."""
        revs = self.revisions(tree)
        children: dict[str, int] = {}
        for rev in revs.values():
            for down in rev.down_revisions:
                children[down] = children.get(down, 0) + 1
        return sorted(r for r, n in children.items() if n > 1)

    def chain(self, tree: Path, base: str | None, head: str) -> list[Revision]:
        """Ancestors of ``head`` (inclusive) that are not ancestors of ``base`` (inclusive), oldest first."""
        revs = self.revisions(tree)
        for rev_id in (head, base):
            if rev_id is not None and rev_id not in revs:
                raise MigrationError(f"unknown alembic revision {rev_id!r} in {tree}")
        wanted = _ancestors(revs, head) - (_ancestors(revs, base) if base else set())
        return _topological(revs, wanted)

    def new_revisions(self, main_tree: Path, ws_tree: Path) -> list[Revision]:
        """Revisions in ``ws_tree`` that ``main_tree`` lacks, parents before children."""
        main = self.revisions(main_tree)
        ws = self.revisions(ws_tree)
        return _topological(ws, set(ws) - set(main))

    # -- running (in the project's environment) ----------------------------------------------

    def _run(self, tree: Path, request: dict[str, Any], *, db: ConnInfo, env: Mapping[str, str],
             network: bool, workspace: str | None, what: str,
             target_name: str = "the workspace database", timeout: float | None = None) -> dict[str, Any]:
        if self.runner is None:
            raise MigrationError("no project runner: sandbox runs alembic only in the project's environment")
        try:
            layout = self._require(tree)
            ini, workdir = layout.ini, layout.workdir
        except MigrationError:
            if request.get("action") != "describe":
                raise
            # asking alembic is how a config sandbox cannot read statically gets resolved
            ini = Path(tree).resolve() / self.config_path
            workdir = ini.parent
        # The URL is the runner's view of the database: SANDBOX_DATABASE_URL, set by the runner.
        req = {"config": ini.name, "url_from_env": network,
               "root": os.path.relpath(Path(tree).resolve(), workdir),
               **({"app": self.app} if self.app else {}), **({"wrap": self.wrap} if self.wrap else {}),
               **request}
        argv = [*self.runner.python(Path(tree)), self.runner.runner_script(), json.dumps(req)]
        # the gate bounds each run by what is left of its deadline; others keep the runner's default
        bound: dict[str, Any] = {"timeout": max(1.0, timeout)} if timeout is not None else {}
        result = self.runner.run(Path(tree), argv, cwd=workdir, env=env, db=db, workspace=workspace,
                                 network=network, **bound)
        parsed: dict[str, Any] | None = None
        for line in reversed(result.stdout.splitlines()):
            if line.startswith(RESULT_MARK):
                try:
                    parsed = json.loads(line[len(RESULT_MARK):])
                except ValueError:
                    parsed = None
                break
        if parsed is None:
            tail = scrub_secrets(" | ".join(result.output.splitlines()[-4:]), db.url())
            raise MigrationError(f"alembic {what} failed in {tree}: the project's interpreter "
                                 f"({' '.join(self.runner.python(Path(tree)))}) exited "
                                 f"{result.code} before alembic ran: {tail or 'no output'}",
                                 hint="does the project's image or interpreter have alembic installed? "
                                 "(see [workspace] dockerfile / [migrations] python)")
        if not parsed.get("ok"):
            error = scrub_secrets(str(parsed.get("error") or "unknown error"), db.url())
            error = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", error)
            if network and any(word in error.lower() for word in _UNREACHABLE):
                # env.py aimed at a server that is not there (with Docker, only the target is
                # reachable): the same failure as a misdirected upgrade, and the same fix
                raise MigrationsMisdirected(
                    f"{MISDIRECTED}{_which(target_name)}: env.py could not connect to it "
                    f"(alembic {what} in {tree}: {error.splitlines()[0]})", hint=misdirected_hint(self.config_path))
            raise MigrationError(f"alembic {what} failed in {tree}: {error}",
                                 hint=self._failure_hint(Path(tree), parsed))
        return parsed

    def _failure_hint(self, tree: Path, parsed: dict[str, Any]) -> str | None:
        """What to do about a failure of the project's code: a missing module that main's checkout
        has (a git-ignored, generated file), or an env.py that needs a wrapper."""
        from sandbox.migrations.discover import failure_hint
        return failure_hint(tree, self.main_root, parsed, app=self.app, wrap=self.wrap)

    def describe(self, tree: Path, *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Ask alembic, in the project's environment, where the revisions are (after env.py ran
        offline, under the project's wrapper). No database is reachable."""
        out = self._run(Path(tree), {"action": "describe"}, db=_PLACEHOLDER, env=env or {}, network=False,
                        workspace=None, what="describe (where are the revisions?)")
        return dict(out.get("describe") or {})

    def offline_sql(self, tree: Path, revision: str, *, env: Mapping[str, str] | None = None,
                    timeout: float | None = None) -> str:
        """SQL that upgrading ``<down>:<revision>`` emits in offline (``--sql``) mode, cached per file hash.

        A root revision gives the SQL from an empty database (it includes creating the version
        table). A merge revision is rendered from all of its parents. No database is reachable.
        """
        revs = self.revisions(tree)
        if revision not in revs:
            raise MigrationError(f"unknown alembic revision {revision!r} in {tree}")
        rev = revs[revision]
        key = self._cache_key(Path(tree), rev)
        cached = self.cache_dir / f"{key}.sql" if self.cache_dir and key else None
        if cached is not None and cached.is_file():
            return cached.read_text()
        out = self._run(Path(tree), {"action": "sql", "target": revision, "downs": list(rev.down_revisions)},
                        db=_PLACEHOLDER, env=env or {}, network=False, workspace=None,
                        what=f"offline SQL for {revision}", timeout=timeout)
        sql = str(out.get("sql") or "")
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(sql)
            os.replace(tmp, cached)
        return sql

    def _cache_key(self, tree: Path, rev: Revision) -> str | None:
        """The revision and everything its rendering can read: the content of every file under
        the alembic config's folder (helpers a revision imports, env.py's settings), not only the
        revision file. The gate replays the SQL it renders, so a stale entry would let a workspace
        change a helper after one check and have the next replay an SQL that alembic no longer runs."""
        try:
            layout = self._require(tree)
            h = hashlib.sha256(_folder_digest(Path(tree), layout.workdir).encode())
            h.update(json.dumps([rev.id, list(rev.down_revisions), getattr(self.runner, "kind", ""),
                                 str(rev.path.relative_to(Path(tree).resolve()))]).encode())
            return h.hexdigest()[:32]
        except (MigrationError, OSError, ValueError):
            return None

    def upgrade(self, tree: Path, db: ConnInfo, target: str = "heads", *, env: Mapping[str, str] | None = None,
                workspace: str | None = None, what: str = "the workspace database",
                timeout: float | None = None) -> list[str]:
        """Upgrade ``db`` to ``target`` with the tree's alembic, then verify it got there.

        Returns the revisions now in the version table. Raises :class:`MigrationsMisdirected`
        when the version table of ``db`` does not show ``target`` afterwards.
        """
        expected = self.heads(tree) if target in ("head", "heads") else [target]
        self._run(Path(tree), {"action": "upgrade", "target": target}, db=db, env=env or {}, network=True,
                  workspace=workspace, what=f"upgrade to {target}", target_name=what, timeout=timeout)
        return self.verify(db, expected, what=what, tree=Path(tree))

    def downgrade(self, tree: Path, db: ConnInfo, target: str, *, env: Mapping[str, str] | None = None,
                  workspace: str | None = None) -> list[str]:
        self._run(Path(tree), {"action": "downgrade", "target": target}, db=db, env=env or {}, network=True,
                  workspace=workspace, what=f"downgrade to {target}")
        return self.verify(db, [] if target == "base" else [target], what="the workspace database", tree=Path(tree))

    def verify(self, db: ConnInfo, expected: list[str], *, what: str = "the workspace database",
               tree: Path | None = None) -> list[str]:
        """The target database's version table must hold exactly ``expected``.

        Before blaming the URL, the revisions found are checked against sandbox's own view: a
        database at revisions sandbox did not read means that view is wrong (the revisions were
        read from the wrong place), not that the migrations went elsewhere."""
        found = self.current(db)
        if sorted(found) != sorted(expected) and found and tree is not None:
            try:
                known = self.revisions(tree)
                layout = self._require(tree)
            except MigrationError:
                known, layout = {}, None
            unknown = [r for r in found if r not in known]
            if unknown or (layout is not None and not set(expected) <= set(known)):
                where = (", ".join(str(p) for p in layout.version_locations) if layout is not None
                         else str(Path(tree) / self.config_path))
                raise MigrationError(
                    f"the migrations reached {what.removeprefix('the ')}: its {self.version_table} holds "
                    f"{', '.join(found)}, but sandbox expected {', '.join(sorted(expected)) or 'nothing'}: sandbox's "
                    f"view of the revisions is wrong ({', '.join(unknown) or 'its heads'} not among the "
                    f"{len(known)} revision(s) it read from {where})",
                    hint="run `sandbox doctor` to see where alembic finds them; a script_location in package form "
                    "or version_locations chosen by env.py are asked of alembic at `sandbox init` "
                    "(run it again, or `sandbox db baseline --refresh`, after changing them)")
        if sorted(found) != sorted(expected):
            raise MigrationsMisdirected(
                f"{MISDIRECTED}{_which(what)}: its {self.version_table} holds "
                f"{', '.join(found) or 'nothing'}, expected {', '.join(sorted(expected)) or 'nothing'}",
                hint=misdirected_hint(self.config_path), found=found, expected=expected)
        return found

    def current(self, db: ConnInfo) -> list[str]:
        """Revisions in the database's version table, sorted (empty when there is none)."""
        from ..databases.versions import VersionTableUnreadable, read_versions
        try:
            return read_versions(db, self.version_table, self.version_table_schema)
        except VersionTableUnreadable as exc:
            raise DatabaseError(f"cannot read {self.version_table} in {db.dbname}: "
                                f"{scrub_secrets(exc.detail)}") from exc


_DIGEST_SKIP = {".git", ".sandbox", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache"}


def _folder_digest(tree: Path, folder: Path) -> str:
    """A content hash of the files under ``folder`` (symbolic links by their target's name, never
    followed). Content, not timestamps: a workspace can set a file's mtime to anything."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in _DIGEST_SKIP)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            if path.is_symlink():
                h.update(b"->" + os.readlink(path).encode())
            elif path.is_file():
                h.update(hashlib.sha256(read_inside(tree, path)).digest() if path.stat().st_size <= (4 << 20)
                         else f"{path.stat().st_size}".encode())
    return h.hexdigest()


def _ancestors(revs: dict[str, Revision], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        rev_id = stack.pop()
        if rev_id in seen or rev_id not in revs:
            continue
        seen.add(rev_id)
        stack.extend(revs[rev_id].down_revisions)
    return seen


def _topological(revs: dict[str, Revision], wanted: set[str]) -> list[Revision]:
    """``wanted`` revisions with every parent before its children; ties broken by id."""
    order: list[Revision] = []
    done: set[str] = set()

    def visit(rev_id: str) -> None:
        # Iterative DFS: long histories must not hit the recursion limit.
        stack: list[tuple[str, bool]] = [(rev_id, False)]
        while stack:
            current, expanded = stack.pop()
            if current in done:
                continue
            if expanded:
                done.add(current)
                order.append(revs[current])
                continue
            stack.append((current, True))
            for down in sorted(revs[current].down_revisions, reverse=True):
                if down in wanted and down not in done:
                    stack.append((down, False))

    for rev_id in sorted(wanted):
        visit(rev_id)
    return order


# -- rewriting a revision file ----------------------------------------------------------------

_REVISES = re.compile(rb"^([ \t]*Revises:)([^\r\n]*)", re.MULTILINE)


def _line_offsets(source: bytes) -> list[int]:
    offsets = [0]
    for line in source.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))
    return offsets


def rewrite_down_revision(source: bytes, new_down: str) -> bytes:
    """``source`` with its module-level ``down_revision`` value and ``Revises:`` line replaced.

    Raises ValueError when the file has no module-level ``down_revision`` assignment.
    """
    tree = ast.parse(source)
    offsets = _line_offsets(source)   # ast columns are UTF-8 byte offsets: work in bytes

    def span(node: ast.expr) -> tuple[int, int]:
        assert node.end_lineno is not None and node.end_col_offset is not None
        return (offsets[node.lineno - 1] + node.col_offset,
                offsets[node.end_lineno - 1] + node.end_col_offset)

    def assigned(name: str) -> ast.expr | None:
        found: ast.expr | None = None
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == name for t in stmt.targets) or (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                  and stmt.target.id == name and stmt.value is not None):
                found = stmt.value
        return found

    value = assigned("down_revision")
    if value is None:
        raise ValueError("no module-level down_revision assignment")

    start, end = span(value)
    # Keep the file's quoting: the old value's, else the first string in it, else revision's.
    quote = b"'"
    for node in (value, *ast.walk(value), assigned("revision")):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            q_start, _ = span(node)
            quote = b'"' if source[q_start:q_start + 1] == b'"' else b"'"
            break
    literal = repr(new_down).encode()
    if quote == b'"' and literal.startswith(b"'") and '"' not in new_down and "\\" not in new_down:
        literal = b'"' + literal[1:-1] + b'"'
    edits = [(start, end, literal)]

    doc = tree.body[0] if tree.body else None
    if (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)):
        d_start, d_end = span(doc.value)
        m = _REVISES.search(source, d_start, d_end)
        if m:
            text = m.group(2)
            lead = text[: len(text) - len(text.lstrip())] or b" "
            edits.append((m.start(2), m.end(2), lead + new_down.encode()))

    for e_start, e_end, replacement in sorted(edits, reverse=True):
        source = source[:e_start] + replacement + source[e_end:]
    return source
