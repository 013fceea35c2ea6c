"""The alembic adapter: reads a tree's revision graph and runs its migrations, in process.

A *tree* is a checkout (main or a workspace's worktree). Every call builds alembic's
:class:`~alembic.config.Config` in code from ``<tree>/<config_path>``, with paths resolved
against that tree rather than the current directory, so the same process can work on main and
on any number of worktrees.

alembic keeps process-global state (``alembic.context``, ``alembic.op``) and ``env.py`` files
import the project's own modules, so each call that loads the tree's Python:

- holds a module-level lock;
- puts the tree (and ``prepend_sys_path``) first on ``sys.path``, and exports ``DATABASE_URL``;
- writes no ``__pycache__`` into the tree (a worktree must stay clean for ``sandbox rm``);
- afterwards restores both, and forgets the modules it imported from the tree, so that the next
  call on another tree imports that tree's ``myapp.models`` instead of reusing this one's;
- turns ``logging.config.fileConfig`` into a no-op, because a library must not print and must
  not reconfigure its host's logging (alembic's standard ``env.py`` calls it).

Failures, alembic's ``CommandError``, revision-graph errors, SQLAlchemy and psycopg errors, and
anything the project's own ``env.py`` or revision code raises, become :class:`MigrationError`
chained with ``from``; passwords are scrubbed from the message.
"""

from __future__ import annotations

import ast
import configparser
import contextlib
import importlib
import importlib.util
import io
import logging.config
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.errors import MigrationError
from sandbox.migrations.base import Revision

__all__ = ["AlembicTool", "rewrite_down_revision", "scrub_secrets", "to_sqlalchemy_url"]

_LOCK = threading.RLock()
"""Serialises every call that touches alembic's process-global state."""

# "package:resource" script locations are resolved by alembic through importlib.resources.
_RESOURCE_LOCATION = re.compile(r"^[A-Za-z_][\w.]*:[^/\\]")


def to_sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` (libpq style) → ``postgresql+psycopg://…``; other URLs unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


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


def _describe(exc: BaseException, url: str | None) -> str:
    text = str(exc).strip() or type(exc).__name__
    # SQLAlchemy appends a link to its docs; it is noise in a one-line CLI message.
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)
    return scrub_secrets(f"{type(exc).__name__}: {text}", url)


def _search_path_schema(url: str) -> str | None:
    """The first schema of ``-c search_path=…`` in the URL's ``options`` (None if absent)."""
    try:
        options = parse_qs(urlsplit(url).query).get("options", [])
    except ValueError:
        return None
    for opt in options:
        m = re.search(r"-c\s*search_path\s*=\s*([^\s]+)", opt)
        if not m:
            continue
        for part in m.group(1).replace("\\,", ",").split(","):
            part = part.strip().strip('"')
            if part and part != "$user":
                return part
    return None


class _TreeConfig:
    """Builds alembic's Config for one tree with every relative path anchored in that tree."""

    @staticmethod
    def build(ini: Path, output: io.StringIO) -> Any:
        from alembic.config import Config

        base = ini.parent

        def anchor(value: str) -> str:
            if os.path.isabs(value) or _RESOURCE_LOCATION.match(value):
                return value
            return os.path.normpath(os.path.join(base, value))

        class TreeConfig(Config):  # type: ignore[misc]
            def get_alembic_option(self, name: str, default: Any = None) -> Any:
                value = super().get_alembic_option(name, default)
                if name == "script_location" and isinstance(value, str):
                    return anchor(value)
                return value

            def get_version_locations_list(self) -> list[str] | None:
                values = super().get_version_locations_list()
                return [anchor(v) for v in values] if values else values

            def get_prepend_sys_paths_list(self) -> list[str] | None:
                values = super().get_prepend_sys_paths_list()
                return [anchor(v) for v in values] if values else values

        if ini.suffix == ".toml":
            return TreeConfig(toml_file=str(ini), output_buffer=output, stdout=io.StringIO())
        return TreeConfig(file_=str(ini), output_buffer=output, stdout=io.StringIO())


def _module_roots(module: Any) -> Iterable[str]:
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        yield file
    path = getattr(module, "__path__", None)
    if path is not None:
        try:
            yield from (p for p in path if isinstance(p, str))
        except Exception:  # noqa: BLE001 - a broken namespace path is simply not ours
            return


def _under(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r + os.sep) for r in roots)


class AlembicTool:
    """:class:`~sandbox.migrations.base.MigrationTool` for alembic projects.

    ``config_path`` is the alembic config relative to the tree (``alembic.ini``, or a
    ``pyproject.toml`` holding ``[tool.alembic]``). ``version_table`` is the table
    :meth:`current` reads.
    """

    name = "alembic"

    def __init__(self, config_path: str = "alembic.ini", *,
                 version_table: str = "alembic_version") -> None:
        self.config_path = config_path
        self.version_table = version_table

    # -- the environment of one call --------------------------------------------------------

    def _ini(self, tree: Path) -> Path:
        return Path(tree).resolve() / self.config_path

    @contextlib.contextmanager
    def _session(self, tree: Path, action: str, url: str | None = None,
                 output: io.StringIO | None = None) -> Iterator[Any]:
        """Lock, prepare sys.path/environ/modules for ``tree``, yield its Config, then undo."""
        tree = Path(tree).resolve()
        ini = self._ini(tree)
        if not ini.is_file():
            raise MigrationError(f"alembic config not found: {ini}")
        with _LOCK:
            saved_path = list(sys.path)
            saved_env = os.environ.get("DATABASE_URL")
            saved_modules = dict(sys.modules)
            saved_file_config = logging.config.fileConfig
            saved_bytecode = sys.dont_write_bytecode
            roots = [os.path.realpath(tree), os.path.realpath(ini.parent)]
            try:
                sys.path.insert(0, str(tree))
                sys.dont_write_bytecode = True   # no __pycache__ litter in the worktree
                importlib.invalidate_caches()
                logging.config.fileConfig = _no_file_config  # type: ignore[assignment]
                with self._translate(action, tree, url):
                    cfg = _TreeConfig.build(ini, output if output is not None else io.StringIO())
                    roots += [os.path.realpath(p) for p in cfg.get_prepend_sys_paths_list() or []]
                    if url is not None:
                        cfg.set_main_option("sqlalchemy.url",
                                            to_sqlalchemy_url(url).replace("%", "%%"))
                        os.environ["DATABASE_URL"] = url
                    yield cfg
            finally:
                logging.config.fileConfig = saved_file_config  # type: ignore[assignment]
                sys.dont_write_bytecode = saved_bytecode
                sys.path[:] = saved_path
                if saved_env is None:
                    os.environ.pop("DATABASE_URL", None)
                else:
                    os.environ["DATABASE_URL"] = saved_env
                self._forget_modules(saved_modules, roots)

    @staticmethod
    def _forget_modules(before: dict[str, Any], roots: list[str]) -> None:
        """Drop modules this call imported from the tree; modules present before stay."""
        for name, module in list(sys.modules.items()):
            if before.get(name) is module:
                continue
            if any(_under(p, roots) for p in _module_roots(module)):
                if name in before:
                    sys.modules[name] = before[name]
                else:
                    del sys.modules[name]

    @staticmethod
    @contextlib.contextmanager
    def _translate(action: str, tree: Path, url: str | None) -> Iterator[None]:
        try:
            yield
        except MigrationError:
            raise
        except Exception as exc:
            # alembic's CommandError and RevisionError, SQLAlchemy and psycopg errors, and
            # whatever the project's env.py or revision code raises (ImportError, NameError, …):
            # all mean "the migration tool failed" to the caller, who must not crash on them.
            raise MigrationError(f"alembic {action} failed in {tree}: {_describe(exc, url)}") from exc

    def _script(self, cfg: Any) -> Any:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(cfg)

    # -- reading the revision graph ---------------------------------------------------------

    def available(self, tree: Path) -> bool:
        """True when ``<tree>/<config_path>`` exists and names a ``script_location``."""
        ini = self._ini(tree)
        if not ini.is_file():
            return False
        if ini.suffix == ".toml":
            import tomllib

            try:
                data = tomllib.loads(ini.read_text())
            except (OSError, tomllib.TOMLDecodeError):
                return False
            return "script_location" in data.get("tool", {}).get("alembic", {})
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(ini)
        except (OSError, configparser.Error):
            return False
        return parser.has_option("alembic", "script_location")

    def revisions(self, tree: Path) -> dict[str, Revision]:
        """Every revision of the tree, keyed by id."""
        with self._session(tree, "revisions") as cfg:
            from alembic.util import to_tuple

            result: dict[str, Revision] = {}
            for script in self._script(cfg).walk_revisions("base", "heads"):
                result[script.revision] = Revision(
                    id=script.revision,
                    down_revisions=tuple(to_tuple(script.down_revision, default=())),
                    path=Path(script.path),
                    message=_message(script.doc),
                )
            return result

    def heads(self, tree: Path) -> list[str]:
        with self._session(tree, "heads") as cfg:
            return sorted(self._script(cfg).get_heads())

    def branch_points(self, tree: Path) -> list[str]:
        """Revisions with two or more children."""
        revs = self.revisions(tree)
        children: dict[str, int] = {}
        for rev in revs.values():
            for down in rev.down_revisions:
                children[down] = children.get(down, 0) + 1
        return sorted(r for r, n in children.items() if n > 1)

    def chain(self, tree: Path, base: str | None, head: str) -> list[Revision]:
        """Ancestors of ``head`` (inclusive) that are not ancestors of ``base`` (inclusive).

        Oldest first. ``base=None`` means from the root. When ``base`` is not an ancestor of
        ``head`` (a branch that is behind), the result is still the revisions of ``head``'s
        history that ``base`` lacks.
        """
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

    # -- running ----------------------------------------------------------------------------

    def offline_sql(self, tree: Path, revision: str) -> str:
        """SQL that upgrading ``<down>:<revision>`` emits in offline (``--sql``) mode.

        A root revision gives the SQL from an empty database (it includes creating the
        version table). A merge revision is rendered from all of its parents.
        """
        from alembic import command

        revs = self.revisions(tree)
        if revision not in revs:
            raise MigrationError(f"unknown alembic revision {revision!r} in {tree}")
        downs = revs[revision].down_revisions
        output = io.StringIO()
        # Offline mode needs a dialect but no server: a placeholder URL without a password.
        placeholder = "postgresql://sandbox@localhost/offline"
        with self._session(tree, f"offline SQL for {revision}", placeholder, output) as cfg:
            if len(downs) <= 1:
                command.upgrade(cfg, f"{downs[0]}:{revision}" if downs else revision, sql=True)
            else:
                # command.upgrade's "start:end" takes one start; a merge has several.
                from alembic.runtime.environment import EnvironmentContext

                script = self._script(cfg)
                with EnvironmentContext(
                        cfg, script, as_sql=True, starting_rev=downs, destination_rev=revision,
                        fn=lambda rev, context: script._upgrade_revs(revision, downs)):
                    script.run_env()
        return output.getvalue()

    def upgrade(self, tree: Path, url: str, target: str = "heads") -> None:
        from alembic import command

        with self._session(tree, f"upgrade to {target}", url) as cfg:
            command.upgrade(cfg, target)

    def downgrade(self, tree: Path, url: str, target: str) -> None:
        from alembic import command

        with self._session(tree, f"downgrade to {target}", url) as cfg:
            command.downgrade(cfg, target)

    def current(self, tree: Path, url: str) -> list[str]:
        """Revisions in the database's version table, sorted (empty when there is none).

        The table is looked up in the first schema of a ``search_path`` given in the URL's
        ``options`` (``?options=-csearch_path%3Dws``), else through the server's search_path.
        """
        from alembic.runtime.migration import MigrationContext
        from sqlalchemy import create_engine, pool

        with _LOCK, self._translate("current", Path(tree), url):
            engine = create_engine(to_sqlalchemy_url(url), poolclass=pool.NullPool)
            try:
                with engine.connect() as conn:
                    ctx = MigrationContext.configure(conn, opts={
                        "version_table": self.version_table,
                        "version_table_schema": _search_path_schema(url)})
                    return sorted(ctx.get_current_heads())
            finally:
                engine.dispose()

    # -- rewriting --------------------------------------------------------------------------

    def set_down_revision(self, revision: Revision, new_down: str) -> None:
        """Point ``revision`` at ``new_down``: its ``down_revision`` value and ``Revises:`` line.

        Every other byte of the file stays as it was. The ``down_revision`` value is located
        with :mod:`ast` (plain and annotated assignments); the docstring's ``Revises:`` line is
        rewritten only inside the module docstring.
        """
        path = Path(revision.path)
        try:
            source = path.read_bytes()
        except OSError as exc:
            raise MigrationError(f"cannot read revision file {path}: {exc}") from exc
        try:
            new_source = rewrite_down_revision(source, new_down)
        except (SyntaxError, ValueError) as exc:
            raise MigrationError(f"cannot rewrite down_revision in {path}: {exc}") from exc
        try:
            path.write_bytes(new_source)
        except OSError as exc:
            raise MigrationError(f"cannot write revision file {path}: {exc}") from exc
        # A same-size rewrite within the same second would let Python reuse the stale .pyc.
        with contextlib.suppress(OSError, NotImplementedError, ValueError):
            Path(importlib.util.cache_from_source(str(path))).unlink(missing_ok=True)


def _message(doc: str | None) -> str:
    """The revision's message: its docstring's first paragraph, unless that is the header."""
    doc = (doc or "").strip()
    return "" if doc.startswith("Revision ID:") else doc


def _no_file_config(*args: Any, **kwargs: Any) -> None:
    """Stands in for logging.config.fileConfig while a tree's env.py runs."""


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
