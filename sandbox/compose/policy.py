"""What a workspace's stack may ask of the engine, judged on compose's own resolution.

A workspace's compose file is workspace-controlled. Its stack may not reach the host: no bind
mount outside the worktree (nor through a link inside it), no Docker socket, no privileged
container, no host network, pid, ipc, uts, user or cgroup namespace, no added capability or
device, no security profile switched off, no other container's volumes or links, no external
or driver-backed volumes. Each refusal is one line naming the file's key
(``services.web.privileged``). ``[compose] allow`` in main's ``sandbox.toml`` (trusted) lifts a
refusal by key name, for projects that need one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Iterable, Iterator

from .files import UnsafeCompose

RESOLVED = "the resolved compose file"
_NAMESPACES = ("network_mode", "pid", "ipc", "uts", "userns_mode", "cgroup")
_NEVER = {
    "privileged": "privileged containers reach the host",
    "cap_add": "capabilities are not added to a workspace's services",
    "devices": "host devices are not passed to a workspace's services",
    "device_cgroup_rules": "host devices are not passed to a workspace's services",
    "external_links": "a workspace's services link only to their own stack",
    "runtime": "a workspace's services use the engine's default runtime",
    "cgroup_parent": "a workspace's services stay in the engine's cgroup",
    "isolation": "a workspace's services use the engine's default isolation",
    "credential_spec": "no credential specs",
    "use_api_socket": "the Docker socket controls the host",
    "provider": "provider services run plugins on the host",
}
_SECURITY_OFF = ("unconfined", "disable", "systempaths", "apparmor", "seccomp", "label")
SOCKETS = ("docker.sock", "containerd.sock", "podman.sock", "dockershim.sock")


def _refuse(key: str, why: str) -> UnsafeCompose:
    return UnsafeCompose(RESOLVED, key, why)


def check(doc: dict[str, Any], worktree: Path, allow: Iterable[str] = (), *, source: str = RESOLVED) -> None:
    """Raise the first :class:`UnsafeCompose` of the resolved compose document ``doc`` (from ``source``)."""
    allowed = frozenset(allow)
    problems = [p for name, svc in sorted((doc.get("services") or {}).items())
                for p in service_problems(str(name), svc or {}, worktree, allowed)]
    problems += list(_top_level(doc, worktree, allowed))
    if problems:
        first = problems[0]
        raise UnsafeCompose(source, first.key, first.why)


def bind_source(volume: Any) -> tuple[str | None, str]:
    """(host source of a bind mount or None, its type) of a service's ``volumes`` entry (v2 dicts,
    v1 ``src:dst[:mode]`` strings)."""
    if isinstance(volume, dict):
        kind = str(volume.get("type") or "volume")
        return (str(volume.get("source") or ""), kind) if kind == "bind" else (None, kind)
    if isinstance(volume, str):
        parts = volume.split(":")
        if len(parts) >= 2 and (parts[0].startswith(("/", ".", "~")) or os.sep in parts[0]):
            return parts[0], "bind"
        return None, "volume"
    return None, "unknown"


def _inside(worktree: Path, source: str) -> str | None:
    """Why ``source`` (absolute, from compose) is not a safe bind source inside the worktree."""
    if any(source.rstrip("/").endswith(s) for s in SOCKETS) or "/docker.sock" in source:
        return "the Docker socket controls the host"
    path = Path(os.path.normpath(source))
    root = Path(os.path.normpath(worktree))
    if not path.is_absolute() or not (path == root or path.is_relative_to(root)):
        return f"{source} is outside the worktree"
    here = root
    for part in path.relative_to(root).parts:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return f"{source} goes through a symbolic link ({here})"
    return None


def _namespaces(name: str, svc: dict[str, Any], allow: frozenset[str]) -> Iterator[UnsafeCompose]:
    for key in _NAMESPACES:
        value = svc.get(key)
        if value is None or key in allow:
            continue
        value = str(value)
        if value == "host" or value.startswith("container:") or (key == "network_mode" and value not in (
                "none", "bridge", "default") and not value.startswith("service:")):
            yield _refuse(f"services.{name}.{key}", f"{key}: {value} shares the host's or another container's "
                                                     "namespace")


def _security(name: str, svc: dict[str, Any]) -> Iterator[UnsafeCompose]:
    for opt in svc.get("security_opt") or []:
        text = str(opt).lower()
        if text.startswith("no-new-privileges"):
            if text.endswith(("false", "=0")):
                yield _refuse(f"services.{name}.security_opt", f"{opt}: privileges may not be regained")
            continue
        if any(word in text for word in _SECURITY_OFF):
            yield _refuse(f"services.{name}.security_opt", f"{opt}: security profiles stay on")


def _mounts(name: str, svc: dict[str, Any], worktree: Path, allow: frozenset[str]) -> Iterator[UnsafeCompose]:
    if "volumes" not in allow:
        for volume in svc.get("volumes") or []:
            source, kind = bind_source(volume)
            if kind in ("npipe", "cluster", "image"):
                yield _refuse(f"services.{name}.volumes", f"{kind} mounts are not allowed")
            if source is not None:
                why = _inside(worktree, source)
                if why:
                    yield _refuse(f"services.{name}.volumes", why)
    for v in svc.get("volumes_from") or []:
        if str(v).startswith("container:") and "volumes_from" not in allow:
            yield _refuse(f"services.{name}.volumes_from", f"{v}: another container's volumes")
    build = svc.get("build")
    if isinstance(build, dict):
        for key, bad in (("network", "host"), ("privileged", True)):
            if build.get(key) == bad:
                yield _refuse(f"services.{name}.build.{key}", f"{key}: {bad} reaches the host while building")
        for key in ("entitlements", "ssh"):
            if build.get(key) and f"build.{key}" not in allow:
                yield _refuse(f"services.{name}.build.{key}", f"build {key} hands host credentials to the build")


def service_problems(name: str, svc: dict[str, Any], worktree: Path,
                     allow: frozenset[str]) -> Iterator[UnsafeCompose]:
    for key, why in _NEVER.items():
        if svc.get(key) and key not in allow:
            yield _refuse(f"services.{name}.{key}", why)
    yield from _namespaces(name, svc, allow)
    if "security_opt" not in allow:
        yield from _security(name, svc)
    yield from _mounts(name, svc, worktree, allow)


def _top_level(doc: dict[str, Any], worktree: Path, allow: frozenset[str]) -> Iterator[UnsafeCompose]:
    if doc.get("models") and "models" not in allow:
        yield _refuse("models", "models run through a provider plugin on the host")
    for vname, vol in (doc.get("volumes") or {}).items():
        vol = vol or {}
        for key in ("external", "driver", "driver_opts"):
            if vol.get(key) and key not in allow:
                yield _refuse(f"volumes.{vname}.{key}", "a workspace's volumes are its own, on the local driver")
    for section in ("secrets", "configs"):
        for sname, item in (doc.get(section) or {}).items():
            item = item or {}
            if item.get("external"):
                yield _refuse(f"{section}.{sname}.external", "a workspace's secrets are its own")
            if item.get("file"):
                why = _inside(worktree, str(item["file"]))
                if why:
                    yield _refuse(f"{section}.{sname}.file", why)
