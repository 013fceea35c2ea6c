"""The project's compose files in a workspace, checked before compose reads them.

``docker compose config`` reads more than the files named on its command line: ``.env``,
``env_file``, ``extends.file``, ``include``, ``label_file``, build contexts and the ``file``
of secrets and configs. In a workspace all of these are workspace-controlled. Before compose
runs, every such path is checked here: relative, inside the worktree, no ``${…}`` (it could
be anything after interpolation), and no symbolic link or special file on the way (each
component is looked at with ``lstat``, nothing is followed). Remote includes (git, OCI) and
remote build contexts are refused. Included and extended files are checked the same way,
recursively. What compose resolves from these files is checked again by :mod:`.policy`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import yaml

from ..errors import WorkspaceError

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDES = {"compose.yaml": "compose.override.yaml", "compose.yml": "compose.override.yml",
             "docker-compose.yaml": "docker-compose.override.yaml",
             "docker-compose.yml": "docker-compose.override.yml"}
MAX_FILE = 1 << 20
MAX_FILES = 64


class UnsafeCompose(WorkspaceError):
    """Raised when a workspace's compose file asks for something sandbox refuses (names the key)."""

    def __init__(self, file: str, key: str, why: str) -> None:
        super().__init__(f"{file}: {key}: refused: {why}")
        self.file = file
        self.key = key
        self.why = why


@dataclass(frozen=True)
class Found:
    """A path the compose files name, and where (``services.web.env_file``)."""

    file: str
    key: str
    value: str


def default_files(worktree: Path) -> tuple[str, ...]:
    """compose's own default: the first of :data:`DEFAULT_FILES` present, and its override."""
    for name in DEFAULT_FILES:
        if os.path.lexists(worktree / name):
            override = OVERRIDES[name]
            return (name, override) if os.path.lexists(worktree / override) else (name,)
    return ()


def check_path(worktree: Path, base: PurePosixPath, value: str, file: str, key: str, *,
               must_exist: bool = False) -> PurePosixPath:
    """``value`` (relative to ``base``, itself relative to the worktree) as a path inside the
    worktree, reached without following any link; raises :class:`UnsafeCompose` otherwise."""
    if not isinstance(value, str) or not value:
        raise UnsafeCompose(file, key, "not a path")
    if "$" in value:
        raise UnsafeCompose(file, key, f"{value!r}: a path in a workspace's compose file may not use ${{…}}")
    if value.startswith(("/", "~")) or "://" in value or value.startswith("git@"):
        raise UnsafeCompose(file, key, f"{value!r} is outside the worktree")
    parts: list[str] = []
    for part in (base / value).parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnsafeCompose(file, key, f"{value!r} is outside the worktree")
            parts.pop()
            continue
        parts.append(part)
    here = worktree
    for i, part in enumerate(parts):
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if must_exist:
                raise UnsafeCompose(file, key, f"{value!r} does not exist") from None
            return PurePosixPath(*parts)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeCompose(file, key, f"{value!r} goes through a symbolic link ({'/'.join(parts[:i + 1])})")
        last = i == len(parts) - 1
        if not last and not stat.S_ISDIR(st.st_mode):
            raise UnsafeCompose(file, key, f"{value!r}: {'/'.join(parts[:i + 1])} is not a directory")
        if last and not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise UnsafeCompose(file, key, f"{value!r} is a special file")
    return PurePosixPath(*parts)


def _load(worktree: Path, rel: PurePosixPath, file: str) -> Any:
    path = worktree / rel
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeCompose(file, "file", "not a regular file")
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        raise UnsafeCompose(file, "file", f"larger than {MAX_FILE} bytes")
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"{file}: not valid YAML: {str(exc).splitlines()[0]}") from exc


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, str):
                yield v
            elif isinstance(v, dict) and "path" in v:
                yield v["path"]


def _service_paths(name: str, svc: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(key, path, is_a_compose_file) of what a service names on the host."""
    where = f"services.{name}"
    for key in ("env_file", "label_file"):
        for p in _strings(svc.get(key)):
            yield f"{where}.{key}", p, False
    ext = svc.get("extends")
    if isinstance(ext, dict) and "file" in ext:
        yield f"{where}.extends.file", ext["file"], True
    build = svc.get("build")
    if isinstance(build, str):
        yield f"{where}.build", build, False
    elif isinstance(build, dict):
        context = build.get("context", ".")
        yield f"{where}.build.context", context, False
        if isinstance(build.get("dockerfile"), str) and isinstance(context, str):
            dockerfile = build["dockerfile"]
            yield f"{where}.build.dockerfile", dockerfile if dockerfile.startswith(("/", "~")) \
                else f"{context}/{dockerfile}", False
        extra = build.get("additional_contexts") or {}
        items = extra.values() if isinstance(extra, dict) else [e.split("=", 1)[-1] for e in extra]
        for v in items:
            if not str(v).startswith(("docker-image://", "service:", "target:", "oci-layout://")):
                yield f"{where}.build.additional_contexts", v, False


def _walk(worktree: Path, rel: PurePosixPath, seen: set[PurePosixPath]) -> None:
    file = str(rel)
    if rel in seen:
        return
    seen.add(rel)
    if len(seen) > MAX_FILES:
        raise UnsafeCompose(file, "include", f"more than {MAX_FILES} compose files")
    doc = _load(worktree, rel, file)
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise WorkspaceError(f"{file}: not a compose file (a mapping at the top)")
    base = rel.parent
    for entry in doc.get("include") or []:
        paths = entry if isinstance(entry, str) else (entry.get("path") if isinstance(entry, dict) else None)
        for p in _strings(paths):
            _walk(worktree, check_path(worktree, base, p, file, "include", must_exist=True), seen)
        if isinstance(entry, dict):
            for p in _strings(entry.get("env_file")):
                check_path(worktree, base, p, file, "include.env_file")
            if entry.get("project_directory") is not None:
                check_path(worktree, base, entry["project_directory"], file, "include.project_directory")
    for name, svc in (doc.get("services") or {}).items():
        if not isinstance(svc, dict):
            continue
        for key, p, is_compose in _service_paths(str(name), svc):
            checked = check_path(worktree, base, p, file, key, must_exist=is_compose)
            if is_compose:
                _walk(worktree, checked, seen)
    for section in ("secrets", "configs"):
        for name, item in (doc.get(section) or {}).items():
            if isinstance(item, dict) and "file" in item:
                check_path(worktree, base, item["file"], file, f"{section}.{name}.file")


def _check_dotenv(worktree: Path) -> None:
    """The project's ``.env`` may not steer compose itself (``COMPOSE_*``, ``DOCKER_*``: which files
    it reads, which engine it talks to); compose reads those from it."""
    try:
        fd = os.open(worktree / ".env", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeCompose(".env", "project .env", "not a regular file")
        data = os.read(fd, MAX_FILE)
    finally:
        os.close(fd)
    for line in data.decode("utf-8", "replace").splitlines():
        key = line.strip().removeprefix("export ").split("=", 1)[0].strip()
        if key.upper().startswith(("COMPOSE_", "DOCKER_")):
            raise UnsafeCompose(".env", key, "a workspace's .env may not set compose's or Docker's own variables")


def check_files(worktree: Path, files: tuple[str, ...]) -> None:
    """Check ``files`` (relative to the worktree) and everything they make compose read."""
    root = PurePosixPath(".")
    check_path(worktree, root, ".env", ".env", "project .env")      # read for ${…}: no link
    _check_dotenv(worktree)
    seen: set[PurePosixPath] = set()
    for f in files:
        _walk(worktree, check_path(worktree, root, f, f, "[compose] files", must_exist=True), seen)
