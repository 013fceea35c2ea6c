"""Per-workspace stacks of the project's own services (web, worker, redis…) from its compose files.

For each workspace ``NAME`` sandbox writes ``.sandbox/compose/NAME.yml``, generated from
compose's own resolution of the files on the workspace's branch (``docker compose config``:
v2's JSON, v1's YAML) by :mod:`.rewrite`, after :mod:`.files` checked every path compose will
read and :mod:`.policy` checked what the stack asks of the engine. The stack runs as compose
project ``sbx-<project>-<workspace>`` on the workspace's network, beside its database. Its
published ports come from a block of host ports of its own (registry purpose ``compose``,
beside the workspace container's block), and the mapping is recorded in
``.sandbox/compose/NAME.json`` (mode 0600, like the file: it holds the database's password).

A service that fails is reported with its logs' tail; the workspace stays as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from ..config import Config, duration_seconds
from ..errors import SandboxError, UsageError, WorkspaceError
from ..registry import Registry
from ..runtime import compose_objects
from ..runtime.compose_objects import ServiceState, StackObject
from . import binary, files, policy, rewrite
from .binary import Compose
from .files import UnsafeCompose
from .rewrite import PortMapping, StackParams, project_name

__all__ = ["Compose", "PortMapping", "StackInfo", "StackResult", "StackWorkspace", "Stacks", "UnsafeCompose",
           "project_name"]

PORTS_PURPOSE = "compose"
STACK_DIR = "compose"


class StackFailed(WorkspaceError):
    """Raised when compose could not resolve or start a workspace's stack (the workspace stays)."""


@dataclass(frozen=True)
class StackWorkspace:
    """What a stack needs of its workspace."""

    name: str
    path: Path
    network: str | None
    env: Mapping[str, str]                  # as seen inside the workspace's network
    database_container: str | None = None


@dataclass(frozen=True)
class StackInfo:
    """A workspace's stack as last generated: its compose project, file and port mapping."""

    workspace: str
    compose_project: str
    compose: str
    file: str
    services: list[str]
    replaced: list[str]
    ports: list[PortMapping] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """``SANDBOX_SERVICE_WEB_8000=http://127.0.0.1:20012`` for each published port."""
        return {p.variable: p.url for p in self.ports}

    def to_json(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "compose_project": self.compose_project, "compose": self.compose,
                "file": self.file, "services": self.services, "replaced": self.replaced,
                "ports": [p.to_json() for p in self.ports]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StackInfo":
        ports = [PortMapping(p["service"], int(p["target"]), p["protocol"], int(p["host_port"]))
                 for p in data.get("ports") or []]
        return cls(data["workspace"], data["compose_project"], data["compose"], data["file"],
                   list(data.get("services") or []), list(data.get("replaced") or []), ports)


@dataclass
class StackResult:
    """What ``up`` did with a workspace's stack; ``error`` when it failed (the workspace stays)."""

    workspace: str
    ok: bool
    info: StackInfo | None = None
    error: str | None = None
    services: list[ServiceState] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "ok": self.ok, "error": self.error,
                "stack": self.info.to_json() if self.info else None,
                "services": [s.to_json() for s in self.services]}


class Stacks:
    """The compose stacks of a project's workspaces."""

    def __init__(self, config: Config, registry: Registry, *,
                 progress: Callable[[str], None] | None = None,
                 warn: Callable[[str, str | None], None] | None = None) -> None:
        self.config = config
        self.registry = registry
        self.progress = progress or (lambda msg: None)
        self.warn = warn or (lambda msg, workspace: self.progress(f"{workspace}: warning: {msg}"))
        self.dir = config.state_dir / STACK_DIR

    # -- which files, which compose ----------------------------------------------------------------
    def files(self, worktree: Path) -> tuple[str, ...]:
        """The project's compose files in ``worktree`` (``[compose] files`` or compose's defaults)."""
        if not self.config.compose.enabled:
            return ()
        return self.config.compose.files or files.default_files(worktree)

    def compose(self) -> Compose:
        return binary.find(self.config.compose.command)

    def file_of(self, name: str) -> Path:
        return self.dir / f"{name}.yml"

    def _info_path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    # -- generation --------------------------------------------------------------------------------
    def resolve(self, ws: StackWorkspace, compose: Compose) -> dict[str, Any]:
        """compose's own resolution of the workspace's files, after checking what it will read."""
        names = self.files(ws.path)
        files.check_files(ws.path, names)
        args = ["-p", project_name(self.config.project_name, ws.name), "--project-directory", str(ws.path)]
        for f in names:
            args += ["-f", str(ws.path / f)]
        args += ["config", "--format", "json"] if compose.major == 2 else ["config"]
        ran = binary.run(compose, args, cwd=ws.path, timeout=120)
        if ran.code != 0:
            raise StackFailed(f"{ws.name}: {compose.label} config: {ran.tail(3)}")
        try:
            doc = json.loads(ran.stdout) if compose.major == 2 else yaml.safe_load(ran.stdout)
        except (ValueError, yaml.YAMLError) as exc:
            raise StackFailed(f"{ws.name}: {compose.label} config printed no compose document") from exc
        if not isinstance(doc, dict):
            raise StackFailed(f"{ws.name}: {compose.label} config printed no compose document")
        return doc

    def _params(self, ws: StackWorkspace) -> StackParams:
        cc = self.config.compose
        return StackParams(project=self.config.project_id, workspace=ws.name,
                           compose_project=project_name(self.config.project_name, ws.name),
                           network=ws.network or "", env=ws.env, services=cc.services, replace=cc.replace,
                           database_container=ws.database_container, pids=self.config.workspace.pids,
                           memory=self.config.workspace.memory)

    def prepare(self, ws: StackWorkspace, compose: Compose) -> StackInfo:
        """Resolve, check and rewrite the workspace's stack into ``.sandbox/compose/NAME.yml``."""
        if not ws.network:
            raise StackFailed(f"{ws.name}: a compose stack needs the workspace's network "
                              "([workspace] runtime = \"docker\")")
        doc = self.resolve(ws, compose)
        policy.check(doc, ws.path, self.config.compose.allow, source=" + ".join(self.files(ws.path)))
        params = self._params(ws)
        unknown = sorted(set(params.services) - set(doc.get("services") or {}))
        if unknown:
            raise UsageError(f"[compose] services: {', '.join(unknown)} not in the workspace's compose files")
        wanted = rewrite.published_ports(doc, params)
        if wanted:
            host_ports = self.registry.allocate(ws.name, PORTS_PURPOSE, len(wanted),
                                                base=self.config.workspace.port_base)
        else:
            self.registry.release(ws.name, PORTS_PURPOSE)
            host_ports = []
        out, mapping = rewrite.rewrite(doc, params, host_ports, major=compose.major)
        info = StackInfo(ws.name, params.compose_project, compose.label, str(self.file_of(ws.name)),
                         sorted(out["services"]), sorted(set(params.replace) & set(doc.get("services") or {})),
                         mapping)
        self._write(self.file_of(ws.name), json.dumps(out, indent=2, sort_keys=True) + "\n")
        self._write(self._info_path(ws.name), json.dumps(info.to_json(), indent=2) + "\n")
        return info

    def _write(self, path: Path, text: str) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    # -- lifecycle ---------------------------------------------------------------------------------
    def _args(self, info: StackInfo, *rest: str) -> list[str]:
        return ["-p", info.compose_project, "--project-directory", str(self.dir), "-f", info.file, *rest]

    def up(self, ws: StackWorkspace) -> StackResult | None:
        """Generate and start the workspace's stack; None when the project has no compose files.

        Failures are returned, not raised: the workspace stays as it is."""
        if not self.files(ws.path):
            return None
        info = None
        try:
            compose = self.compose()
            self.progress(f"{ws.name}: compose stack ({compose.label})")
            info = self.prepare(ws, compose)
            ran = binary.run(compose, self._args(info, "up", "-d", "--remove-orphans"), cwd=self.dir)
            states = self._settled(ws.name, ran.code == 0)
            failed = [s for s in states if s.failed]
            if ran.code != 0 or failed:
                return StackResult(ws.name, False, info, self._failure(info, ran, failed), states)
            return StackResult(ws.name, True, info, services=states)
        except SandboxError as exc:
            return StackResult(ws.name, False, info, str(exc))

    def _settled(self, name: str, started: bool) -> list[ServiceState]:
        """The services' states once they had ``[compose] settle`` to fail (sooner when one did)."""
        settle = (duration_seconds(self.config.compose.settle) or 0.0) if started else 0.0
        deadline = time.monotonic() + settle
        while True:
            states = compose_objects.states(self.config.project_id, name)
            if any(s.failed for s in states) or time.monotonic() >= deadline:
                return states
            time.sleep(0.25)

    @staticmethod
    def _failure(info: StackInfo, ran: binary.Ran, failed: Sequence[ServiceState]) -> str:
        parts = [f"stack {info.compose_project} ({info.compose}) did not start"]
        if ran.code != 0:
            parts.append(f"compose exited {ran.code}: {ran.tail(4)}")
        for s in failed:
            logs = " | ".join(s.logs.splitlines()[-5:])
            parts.append(f"service {s.service} {s.status} (exit {s.exit_code})" + (f": {logs}" if logs else ""))
        return "; ".join(parts)

    def info(self, name: str) -> StackInfo | None:
        """The stack last generated for ``name`` (None: it has none)."""
        try:
            data = json.loads(self._info_path(name).read_text())
            return StackInfo.from_json(data)
        except (OSError, ValueError, KeyError):
            return None

    def env(self, name: str) -> dict[str, str]:
        info = self.info(name)
        return info.env() if info else {}

    def stop(self, name: str) -> None:
        info = self.info(name)
        if info is None or not Path(info.file).exists():
            return
        try:
            compose = self.compose()
            ran = binary.run(compose, self._args(info, "stop"), cwd=self.dir)
        except SandboxError as exc:
            self.warn(f"the compose stack was not stopped: {exc}", name)
            return
        if ran.code != 0:
            self.warn(f"{compose.label} stop: {ran.tail(3)}", name)

    def remove(self, name: str) -> list[StackObject]:
        """``down -v --remove-orphans``, then whatever carries the workspace's labels; files and ports go."""
        info = self.info(name)
        if info is not None and Path(info.file).exists():
            with contextlib.suppress(SandboxError):     # the labels sweep below removes what down left
                compose = self.compose()
                binary.run(compose, self._args(info, "down", "-v", "--remove-orphans"), cwd=self.dir)
        left = compose_objects.remove_all(self.config.project_id, name)
        for path in (self.file_of(name), self._info_path(name)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.registry.release(name, PORTS_PURPOSE)
        return left

    def passthrough(self, name: str, args: Sequence[str]) -> int:
        """``docker compose ARGS`` for the workspace's stack (right project and file); its exit code."""
        if not args:
            raise UsageError("no compose command given: sandbox compose NAME -- ps|logs|exec ...")
        info = self.info(name)
        if info is None or not Path(info.file).exists():
            raise WorkspaceError(f"workspace {name!r} has no compose stack",
                                 hint=f"[compose] in sandbox.toml, then `sandbox up {name}`")
        return binary.passthrough(self.compose(), self._args(info, *args), cwd=self.dir)

    def remove_everything(self) -> list[StackObject]:
        """Every workspace's stack objects (``deinit``): the project goes."""
        return compose_objects.remove_all(self.config.project_id, None)

    def orphans(self, known: set[str]) -> list[StackObject]:
        """Stack objects (and generated files) of workspaces the registry does not know."""
        found = [o for o in compose_objects.owned(self.config.project_id) if o.workspace not in known]
        if self.dir.is_dir():
            for path in sorted(self.dir.iterdir()):
                if path.suffix in (".yml", ".json") and path.stem not in known and not path.name.startswith("."):
                    found.append(StackObject("file", str(path), path.stem, None, path.name))
        return found

    @staticmethod
    def remove_object(obj: StackObject) -> None:
        if obj.kind == "file":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(obj.id)
            return
        compose_objects.remove(obj)
