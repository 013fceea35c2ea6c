"""Reading an alembic project without running it: the config and the revision files, statically.

A workspace's files are untrusted, and importing a revision file runs whatever is at its top
level. So ``ls``, ``migrate status`` and the gate's ordering read revisions the way a linter
would: the config with :mod:`configparser`/:mod:`tomllib`, each revision file with :mod:`ast`,
taking ``revision``, ``down_revision``, ``branch_labels`` and ``depends_on`` only as literals.
A revision whose ids are not literals cannot be read this way and is reported as such.

Files are read without following symbolic links out of the tree (a workspace could point a
"revision" at a host file), and parsed results are cached by (path, size, mtime), so a
120-revision history is parsed once per process.
"""

from __future__ import annotations

import ast
import configparser
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import MigrationError
from .base import Revision

__all__ = ["AlembicLayout", "read_layout", "read_revision", "scan_revisions", "read_inside"]

_MAX_FILE = 4 * 1024 * 1024       # a revision file larger than this is not a revision file


@dataclass(frozen=True)
class AlembicLayout:
    """Where a tree's alembic config says its revisions live."""

    ini: Path                      # the config file (alembic.ini or pyproject.toml)
    script_location: Path          # the folder holding env.py
    version_locations: tuple[Path, ...]   # folders holding revision files

    @property
    def workdir(self) -> Path:
        """Where alembic is run from: the folder that holds the config."""
        return self.ini.parent


def read_inside(tree: Path, path: Path) -> bytes:
    """The bytes of ``path``, refusing anything that is, or resolves to, outside ``tree``."""
    root = os.path.realpath(tree)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root + os.sep):
        raise MigrationError(f"{path} points outside {tree}: not read")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise MigrationError(f"cannot read {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise MigrationError(f"{path} is not a regular file: not read")
        if st.st_size > _MAX_FILE:
            raise MigrationError(f"{path} is larger than {_MAX_FILE // 1024 // 1024} MB: not read")
        return fh.read()


def _anchor(base: Path, value: str, here: Path) -> Path:
    value = value.replace("%(here)s", str(here)).strip()
    p = Path(value)
    return (p if p.is_absolute() else base / p).resolve()


def _is_package_form(value: str) -> bool:
    """``package.sub:path`` (alembic's package resource form), not ``C:\\path`` or ``%(here)s/x``."""
    head, sep, _ = value.strip().partition(":")
    return bool(sep) and len(head) > 1 and all(part.isidentifier() for part in head.split("."))


def _package_dir(tree: Path, here: Path, value: str) -> Path:
    """The folder of ``package:path`` inside the checkout, found where the project's interpreter
    would import ``package`` from (the config's folder, the root, ``src/``). The package is not
    imported: only ``sandbox init``/``doctor`` ask alembic, in the project's environment."""
    package, *subs = value.strip().split(":")          # alembic: every further ":" is a path separator
    parts = package.split(".")
    rest = [part.strip() for sub in subs for part in sub.strip().split("/") if part.strip()]
    for base in dict.fromkeys((here, tree, tree / "src", here / "src")):
        candidate = base.joinpath(*parts)
        if candidate.is_dir():
            return candidate.joinpath(*rest).resolve()
    raise MigrationError(f"script_location {value!r}: package {package!r} is not a folder of the checkout "
                         "(looked beside the alembic config, at the root and under src/)",
                         hint="`sandbox init` asks alembic where it is, in the project's environment; if the "
                         "package is installed rather than in the checkout, its revisions cannot be gated")


def read_layout(tree: Path, config_path: str) -> AlembicLayout | None:
    """The tree's alembic layout, or None when it has no such config (or names no scripts).

    Paths in the config resolve against the config's folder, as alembic run from there
    resolves them; a location outside the tree is refused (:class:`MigrationError`).
    """
    tree = Path(tree).resolve()
    ini = tree / config_path
    if not ini.is_file():
        return None
    text = read_inside(tree, ini).decode("utf-8", errors="replace")
    here = ini.parent
    script: str | None
    versions: str | None
    if ini.suffix == ".toml":
        try:
            section = tomllib.loads(text).get("tool", {}).get("alembic", {})
        except tomllib.TOMLDecodeError as exc:
            raise MigrationError(f"{ini}: not valid TOML: {exc}") from exc
        if not section:
            return None     # a pyproject.toml without [tool.alembic]: no alembic config here
        script = section.get("script_location")
        locs = section.get("version_locations")
        versions = " ".join(locs) if isinstance(locs, list) else locs
        sep = "space"
    else:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text)
        except configparser.Error as exc:
            raise MigrationError(f"{ini}: not a valid alembic config: {str(exc).splitlines()[0]}") from exc
        if not parser.has_section("alembic"):
            raise MigrationError(f"{ini}: no [alembic] section",
                                 hint="point [migrations] config in sandbox.toml at the project's alembic config")
        script = parser.get("alembic", "script_location", fallback=None)
        versions = parser.get("alembic", "version_locations", fallback=None)
        sep = parser.get("alembic", "version_path_separator", fallback="os")
    if not isinstance(script, str) or not script.strip():
        if (here / "env.py").is_file():
            # Flask-Migrate's layout: no script_location, env.py beside the ini (its Config
            # points alembic at the ini's folder)
            script = str(here)
        else:
            raise MigrationError(f"{ini}: no script_location in its [alembic] section, and no env.py beside it",
                                 hint="set script_location (a folder, or package:folder) in it, or [migrations] "
                                 "config in sandbox.toml to the alembic config the project uses")
    script_dir = _package_dir(tree, here, script) if _is_package_form(script) else _anchor(here, script, here)
    if versions:
        if ini.suffix != ".toml" and sep not in ("os", "space", "newline"):
            raw = versions.split({"colon": ":", "semicolon": ";"}.get(sep, os.pathsep))
        elif ini.suffix != ".toml" and sep == "os":
            raw = versions.split(os.pathsep)
        else:
            raw = versions.split()
        version_dirs = tuple(_package_dir(tree, here, v) if _is_package_form(v) else _anchor(here, v, here)
                             for v in raw if v.strip())
    else:
        version_dirs = (script_dir / "versions",)
    for p in (script_dir, *version_dirs):
        if p != tree and not p.is_relative_to(tree):
            raise MigrationError(f"{ini}: alembic location {p} is outside the checkout: not read")
    return AlembicLayout(ini=ini, script_location=script_dir, version_locations=version_dirs)


def _literal(node: ast.expr | None) -> object:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(ast.unparse(node)) from None


def _ids(value: object, what: str, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)  # type: ignore[arg-type]
    raise MigrationError(f"{path.name}: {what} is not a revision id or a list of them")


_CACHE: dict[tuple[str, int, int], Revision | None] = {}


def read_revision(tree: Path, path: Path) -> Revision | None:
    """The revision a file declares (None if it declares none), read with :mod:`ast` only."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        raise MigrationError(f"cannot read {path}: {exc.strerror}") from exc
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    source = read_inside(tree, path)
    try:
        module = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError) as exc:
        raise MigrationError(f"{path.name} is not valid Python: {getattr(exc, 'msg', exc)}") from exc
    values: dict[str, ast.expr | None] = {}
    for stmt in module.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = list(stmt.targets), stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            targets, value = [stmt.target], stmt.value
        for t in targets:
            if isinstance(t, ast.Name) and t.id in ("revision", "down_revision", "branch_labels", "depends_on"):
                values[t.id] = value
    if "revision" not in values:
        _CACHE[key] = None
        return None
    try:
        rev = _literal(values.get("revision"))
        down = _literal(values.get("down_revision"))
        labels = _literal(values.get("branch_labels"))
        depends = _literal(values.get("depends_on"))
    except ValueError as exc:
        raise MigrationError(f"{path.name}: revision identifiers must be literals, found `{exc}` "
                             "(sandbox reads revision files without running them)") from None
    if not isinstance(rev, str) or not rev:
        raise MigrationError(f"{path.name}: revision is not a non-empty string")
    doc = ast.get_docstring(module) or ""
    message = "" if doc.strip().startswith("Revision ID:") else doc.strip().split("\n\n")[0]
    result = Revision(id=rev, down_revisions=_ids(down, "down_revision", path), path=path, message=message,
                      branch_labels=_ids(labels, "branch_labels", path),
                      depends_on=_ids(depends, "depends_on", path))
    _CACHE[key] = result
    return result


def scan_revisions(tree: Path, layout: AlembicLayout) -> dict[str, Revision]:
    """Every revision in the layout's version folders (recursively, as alembic's
    ``recursive_version_locations`` would; plain layouts have no subfolders), keyed by id."""
    tree = Path(tree).resolve()
    found: dict[str, Revision] = {}
    for folder in layout.version_locations:
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            for fname in sorted(filenames):
                if not fname.endswith(".py") or fname.startswith(("_", ".")):
                    continue
                rev = read_revision(tree, Path(dirpath) / fname)
                if rev is None:
                    continue
                if rev.id in found:
                    raise MigrationError(f"revision id {rev.id} is declared twice: "
                                         f"{found[rev.id].path.name} and {fname}")
                found[rev.id] = rev
    return found


def heads_of(revs: dict[str, Revision]) -> list[str]:
    """Revisions that no other revision revises (``depends_on`` does not count)."""
    parents = {d for r in revs.values() for d in r.down_revisions}
    return sorted(r for r in revs if r not in parents)
