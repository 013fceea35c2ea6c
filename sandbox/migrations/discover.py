"""Finding a project's alembic migrations by asking alembic, in the project's environment.

The static reading (:mod:`.scan`) knows the common layouts: a ``script_location`` path, the
Flask-Migrate layout (``migrations/alembic.ini`` without ``script_location``, beside its
``env.py``), and ``package:path`` when the package is a folder of the checkout. What only the
project knows (a package resolved by its interpreter, version locations that ``env.py`` chooses at
run time) is asked of alembic itself: ``init`` (and ``doctor``) run the runner's ``describe`` in
the project's environment, under the project's wrapper, with no database, and record where alembic
found the revisions in ``.sandbox/alembic-layout.json`` (paths relative to the checkout's root,
applied to every checkout). Revision files are still read statically from there: listing and
ordering run no project code.

There is never a silent "no migrations": an alembic config that exists but cannot be resolved is
an error with the reason, and a missing one is an error when another alembic config is in the
checkout.
"""

from __future__ import annotations

import configparser
import json
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checks import Check
from ..errors import MigrationError, SandboxError
from .base import Revision
from .scan import AlembicLayout, heads_of, read_inside

__all__ = [
    "LAYOUT_FILE",
    "Discovery",
    "discover",
    "failure_cause",
    "failure_hint",
    "find_configs",
    "migrations_checks",
    "recorded_layout",
]

LAYOUT_FILE = "alembic-layout.json"
_SKIP = {".git", ".sandbox", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache", "site-packages"}
_MAX_DEPTH = 4


@dataclass(frozen=True)
class Discovery:
    """What ``init`` found: the config, where alembic reads the revisions, and what they are."""

    config: str
    script_location: str                       # relative to the checkout's root
    version_locations: tuple[str, ...]
    heads: tuple[str, ...]
    revisions: int
    interpreter: str
    source: str                                # "alembic" (asked in the project's environment) or "static"
    layout: str                                # "flask-migrate", "package", or "path"
    env_error: str | None = None               # env.py failed offline: the static answer stands
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "script_location": self.script_location,
                "version_locations": list(self.version_locations), "heads": list(self.heads),
                "revisions": self.revisions, "interpreter": self.interpreter, "source": self.source,
                "layout": self.layout, "env_error": self.env_error, "notes": list(self.notes)}

    def summary(self) -> str:
        return (f"alembic config {self.config} ({self.layout} layout): script location {self.script_location}, "
                f"version locations {', '.join(self.version_locations)}, {self.revisions} revision(s), "
                f"head(s) {', '.join(self.heads) or '(none)'}; interpreter {self.interpreter}; "
                f"{'asked of alembic' if self.source == 'alembic' else 'read from the config'}")


# -- finding the config -----------------------------------------------------------------------------
def find_configs(root: Path) -> list[str]:
    """Alembic configs in the checkout (``alembic.ini`` with an ``[alembic]`` section, or a
    ``pyproject.toml`` with ``[tool.alembic]``), relative to ``root``, shallowest first."""
    found: list[tuple[int, str]] = []
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        depth = len(rel.parts)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP and not d.startswith(".")) \
            if depth < _MAX_DEPTH else []
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(".ini") and "alembic" in name and _has_alembic_section(root, path) or name == "pyproject.toml" and _has_tool_alembic(root, path):
                found.append((depth, str(rel / name)))
    return [p for _, p in sorted(found)]


def _has_alembic_section(root: Path, path: Path) -> bool:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(read_inside(root, path).decode("utf-8", errors="replace"))
    except (configparser.Error, MigrationError):
        return False
    return parser.has_section("alembic")


def _has_tool_alembic(root: Path, path: Path) -> bool:
    try:
        data = tomllib.loads(read_inside(root, path).decode("utf-8", errors="replace"))
    except (tomllib.TOMLDecodeError, MigrationError):
        return False
    return bool(data.get("tool", {}).get("alembic"))


def missing_config_error(root: Path, config_path: str) -> MigrationError | None:
    """The error for a ``[migrations] config`` that is not there while another alembic config is."""
    if (Path(root) / config_path).is_file():
        return None
    others = [c for c in find_configs(root) if c != config_path]
    if not others:
        return None
    return MigrationError(f"no {config_path} in the checkout, but alembic configuration exists: {', '.join(others)}",
                          hint=f"set [migrations] config = \"{others[0]}\" in sandbox.toml")


# -- the recorded answer ----------------------------------------------------------------------------
def recorded_layout(layout_file: Path | None, tree: Path, config_path: str) -> AlembicLayout | None:
    """The layout alembic gave at ``init``, applied to ``tree``; None when there is none (or it was
    recorded for another config)."""
    if layout_file is None:
        return None
    try:
        data = json.loads(Path(layout_file).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("config") != config_path:
        return None
    tree = Path(tree).resolve()
    ini = tree / config_path
    if not ini.is_file():
        return None
    try:
        script = (tree / str(data["script_location"])).resolve()
        versions = tuple((tree / str(v)).resolve() for v in data["version_locations"])
    except (KeyError, TypeError):
        return None
    for p in (script, *versions):
        if p != tree and not p.is_relative_to(tree):
            raise MigrationError(f"{layout_file}: alembic location {p} is outside the checkout: not read",
                                 hint="`sandbox init` again")
    return AlembicLayout(ini=ini, script_location=script, version_locations=versions)


def _record(layout_file: Path | None, data: dict[str, Any]) -> None:
    if layout_file is None:
        return
    layout_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = layout_file.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, layout_file)


# -- asking alembic -----------------------------------------------------------------------------------
def interpreter_of(tool: Any, tree: Path) -> str:
    runner = getattr(tool, "runner", None)
    if runner is None:
        return "(none)"
    argv = " ".join(runner.python(Path(tree)))
    return f"{argv} in the project's image" if getattr(runner, "kind", "") == "docker" else argv


def _layout_kind(tree: Path, config_path: str, configured: str | None, flask: bool) -> str:
    if flask or not configured:
        return "flask-migrate" if flask else "path"
    from .scan import _is_package_form
    return "package" if _is_package_form(configured) else "path"


def discover(tool: Any, tree: Path, *, env: dict[str, str] | None = None) -> Discovery | None:
    """Ask alembic where the revisions are and record the answer (``tool.layout_file``).

    None when the checkout has no alembic config at all. Raises :class:`MigrationError` (exit 1)
    when a config exists but neither alembic nor the static reading can resolve it."""
    tree = Path(tree)
    config_path = tool.config_path
    missing = missing_config_error(tree, config_path)
    if missing is not None:
        raise missing
    if not (tree / config_path).is_file():
        return None
    layout_file = getattr(tool, "layout_file", None)
    if layout_file is not None and Path(layout_file).exists():
        Path(layout_file).unlink()          # re-asked: the old answer must not shadow the config
    static_error: MigrationError | None = None
    try:
        static = tool.layout(tree)
    except MigrationError as exc:
        static, static_error = None, exc
    if static is None and static_error is None:
        return None                         # a pyproject.toml without [tool.alembic]
    try:
        described = tool.describe(tree, env=env)
    except SandboxError as exc:
        if static_error is not None:
            raise MigrationError(f"{static_error.message}; and alembic, asked in the project's environment "
                                 f"({interpreter_of(tool, tree)}), could not resolve it either: {exc.message}",
                                 hint=static_error.hint or exc.hint) from exc
        raise MigrationError(f"alembic could not resolve {config_path} in the project's environment "
                             f"({interpreter_of(tool, tree)}): {exc.message}",
                             hint=exc.hint or (static_error.hint if static_error else None)
                             or "fix the alembic config; `sandbox doctor` shows what sandbox reads") from exc
    data = {"config": config_path, "script_location": described["script_location"],
            "version_locations": list(described["version_locations"])}
    outside = [p for p in (data["script_location"], *data["version_locations"]) if p.startswith("..")]
    if outside:
        raise MigrationError(f"alembic reads {config_path}'s revisions from outside the checkout ({', '.join(outside)})",
                             hint="sandbox gates the revisions of the checkout: install the package in editable "
                             "mode from the checkout, or point script_location at the checkout's folder")
    _record(layout_file, data)
    revisions = tool.revisions(tree)
    theirs = dict(described.get("revisions") or {})
    notes: list[str] = []
    if theirs and set(theirs) != set(revisions):
        only_alembic = sorted(set(theirs) - set(revisions))
        notes.append(f"alembic lists {len(theirs)} revision(s), sandbox read {len(revisions)} from the files"
                     + (f" (not read: {', '.join(only_alembic[:5])})" if only_alembic else ""))
    kind = _layout_kind(tree, config_path, described.get("configured"), bool(described.get("flask")))
    return Discovery(config=config_path, script_location=data["script_location"],
                     version_locations=tuple(data["version_locations"]), heads=tuple(heads_of(revisions)),
                     revisions=len(revisions), interpreter=interpreter_of(tool, tree), source="alembic",
                     layout=kind, env_error=described.get("env_error"), notes=tuple(notes))


def static_discovery(tool: Any, tree: Path) -> Discovery | None:
    """What sandbox reads without running anything (doctor's view before or besides ``init``)."""
    tree = Path(tree)
    missing = missing_config_error(tree, tool.config_path)
    if missing is not None:
        raise missing
    layout = tool.layout(tree)
    if layout is None:
        return None
    revisions: dict[str, Revision] = tool.revisions(tree)
    root = tree.resolve()
    recorded = getattr(tool, "layout_file", None)
    return Discovery(config=tool.config_path, script_location=str(layout.script_location.relative_to(root)),
                     version_locations=tuple(str(p.relative_to(root)) for p in layout.version_locations),
                     heads=tuple(heads_of(revisions)), revisions=len(revisions),
                     interpreter=interpreter_of(tool, tree),
                     source="alembic" if recorded is not None and Path(recorded).exists() else "static",
                     layout="flask-migrate" if layout.script_location == layout.ini.parent.resolve()
                     and (layout.ini.parent / "env.py").is_file() else "path")


# -- hints --------------------------------------------------------------------------------------------
def _module_files(module: str) -> Iterable[str]:
    parts = module.split(".")
    yield "/".join(parts) + ".py"
    yield "/".join(parts) + "/__init__.py"


# Modules whose RuntimeError means "no application context": Flask's proxies (flask.globals before
# Flask 2.2, werkzeug.local's LocalProxy since) raise it when current_app/g/request are unbound.
_APP_CONTEXT_MODULES = ("flask", "werkzeug.local")
# Exceptions that mean "not inside an event loop / worker thread", and the modules whose RuntimeError
# means the same (anyio.from_thread before NoEventLoopError existed; sniffio finds no async library).
_EVENT_LOOP_TYPES = ("anyio._core._exceptions.NoEventLoopError", "sniffio._impl.AsyncLibraryNotFoundError")
_EVENT_LOOP_MODULES = ("anyio", "sniffio", "asyncio")


def _within(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def failure_cause(parsed: dict[str, Any]) -> str | None:
    """Why the project's code failed under alembic, from the runner's typed facts (the exception's
    classes, the module that raised it, the class that lacked an attribute), never from its
    message: ``app-context``, ``event-loop``, ``foreign-config`` or None."""
    types = [str(t) for t in parsed.get("types") or ()]
    raised_in = str(parsed.get("raised_in") or "")
    runtime = "builtins.RuntimeError" in types
    if any(t in _EVENT_LOOP_TYPES or t.endswith(".NoEventLoopError") for t in types) or (
            runtime and _within(raised_in, _EVENT_LOOP_MODULES)):
        return "event-loop"
    if runtime and _within(raised_in, _APP_CONTEXT_MODULES):
        return "app-context"
    if "builtins.AttributeError" in types and str(parsed.get("attribute_of") or "") == "alembic.config.Config":
        return "foreign-config"
    return None


def failure_hint(tree: Path, main_root: Path | None, parsed: dict[str, Any], *, app: str | None,
                 wrap: str | None) -> str | None:
    """A hint for a failure of the project's code under alembic, from the runner's typed fields."""
    missing = parsed.get("missing_module")
    if missing and main_root is not None:
        for top in (Path(main_root), *(Path(main_root) / d for d in ("src",))):
            for candidate in _module_files(str(missing)):
                in_main, in_tree = top / candidate, Path(tree) / top.relative_to(main_root) / candidate
                if in_main.is_file() and not in_tree.exists():
                    rel = in_main.relative_to(main_root)
                    return (f"{rel} exists in main's checkout but not in {tree}: it is not committed (generated "
                            f"by the install?): add \"{rel}\" to [workspace] copy in sandbox.toml (copied on up, "
                            "sync and rebase)")
    cause = failure_cause(parsed)
    if cause == "app-context" and not app:
        return ("env.py needs a Flask app context: set [migrations] app = \"module:create_app\" in sandbox.toml "
                "(see README, \"Running alembic inside the project's wrapper\")")
    if cause == "event-loop" and not wrap:
        return ("env.py must run inside an event loop or worker thread: set [migrations] wrap = "
                "\"anyio-worker\" (or \"asyncio-thread\", or \"module:callable\") in sandbox.toml")
    if cause == "foreign-config" and not wrap:
        return ("env.py expects its own CLI's alembic Config: set [migrations] wrap = "
                "\"advanced-alchemy:module:config\" (the project's SQLAlchemy config object), or \"module:callable\" to the "
                "project's function that runs alembic (see README, \"Running alembic inside the project's wrapper\")")
    return None


# -- doctor -----------------------------------------------------------------------------------------
def migrations_checks(tool: Any, root: Path) -> list[Check]:
    """doctor's view, which never contradicts init's: the same reading of the same config."""
    try:
        found = static_discovery(tool, root)
    except SandboxError as exc:
        return [Check("migrations", False, str(exc.message),
                      exc.hint or "fix the alembic config, then `sandbox init` (exit 1 until then)")]
    if found is None:
        return [Check("migrations", True, f"no {tool.config_path} and no other alembic config in the checkout: "
                      "migrations disabled", required=False)]
    ok = len(found.heads) <= 1
    return [Check("migrations", ok, found.summary(),
                  None if ok else "merge the heads on main (`alembic merge heads`)")]
