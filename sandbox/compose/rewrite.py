"""From compose's own resolution of the project's files to one workspace's stack (pure functions).

Starting from what ``docker compose config`` printed (v2's JSON, v1's YAML), never from the raw
files: replaced services and the ``depends_on``/``links`` that point at them are dropped; the
others join the workspace's network (where its database answers as ``db``, and as each replaced
service's name); ``DATABASE_URL``, ``PG*`` and ``[workspace.env]`` are injected; every published
port becomes ``127.0.0.1:<a port of the stack's block>:<target>`` in a stable order;
``container_name`` and ``name`` go; locally built images get a per-workspace tag; every object
carries sandbox's labels; and the workspace containers' hardening is applied.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..runtime.labels import LABEL_PROJECT, LABEL_ROLE, LABEL_WORKSPACE, ROLE_COMPOSE

NETWORK_KEY = "sandbox"
# Docker's default capabilities that ordinary images need (entrypoints that chown and drop to
# their own user); NET_RAW, MKNOD, AUDIT_WRITE, SETFCAP, SYS_CHROOT, FSETID and SETPCAP go.
KEPT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE")


def project_name(project: str, workspace: str) -> str:
    """``sbx-<project>-<workspace>``, in the form both v1 and v2 keep as it is (lower case,
    ``[a-z0-9_-]``); a name that had to change gets a hash, so ``A`` and ``a`` never collide."""
    raw = f"sbx-{project}-{workspace}"
    name = re.sub(r"[^a-z0-9_-]+", "-", raw.lower())
    if name != raw:
        name = f"{name}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"
    return name


@dataclass(frozen=True)
class PortMapping:
    """One published port of the stack: ``service``'s ``target`` answers on the host's ``host_port``."""

    service: str
    target: int
    protocol: str
    host_port: int

    @property
    def variable(self) -> str:
        """``SANDBOX_SERVICE_WEB_8000`` (``_UDP`` appended for udp)."""
        svc = re.sub(r"[^A-Z0-9]+", "_", self.service.upper())
        return f"SANDBOX_SERVICE_{svc}_{self.target}" + ("" if self.protocol == "tcp" else f"_{self.protocol.upper()}")

    @property
    def url(self) -> str:
        scheme = "http" if self.protocol == "tcp" else self.protocol
        return f"{scheme}://127.0.0.1:{self.host_port}"

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "target": self.target, "protocol": self.protocol,
                "host_port": self.host_port, "url": self.url, "variable": self.variable}


@dataclass(frozen=True)
class StackParams:
    """What the rewrite needs to know of the workspace."""

    project: str                        # Config.project_id (label value)
    workspace: str
    compose_project: str
    network: str                        # the workspace's network (external to the stack)
    env: Mapping[str, str]              # injected into every service
    services: Sequence[str] = ()        # which to run (empty: all)
    replace: Mapping[str, str] = field(default_factory=dict)
    database_container: str | None = None
    pids: int = 1024
    memory: str | None = None


def _published(port: Any) -> list[tuple[int, str]]:
    """(target, protocol) of one ``ports`` entry (v2's dict, v1's dict or string); ranges expand."""
    if isinstance(port, dict):
        target, protocol = str(port.get("target")), str(port.get("protocol") or "tcp")
    else:
        text = str(port)
        target, _, protocol = text.partition("/")
        target = target.rsplit(":", 1)[-1]
        protocol = protocol or "tcp"
    if "-" in target:
        lo, hi = (int(x) for x in target.split("-", 1))
        return [(p, protocol) for p in range(lo, hi + 1)]
    return [(int(target), protocol)]


def kept_services(doc: Mapping[str, Any], params: StackParams) -> list[str]:
    """The services the workspace runs, sorted (the stable order of its ports)."""
    names = [str(n) for n in (doc.get("services") or {})]
    wanted = set(params.services) if params.services else set(names)
    return sorted(n for n in names if n in wanted and n not in params.replace)


def published_ports(doc: Mapping[str, Any], params: StackParams) -> list[tuple[str, int, str]]:
    """(service, target, protocol) of every published port, in the stable order ports are given out."""
    out: list[tuple[str, int, str]] = []
    services = doc.get("services") or {}
    for name in kept_services(doc, params):
        seen: set[tuple[int, str]] = set()
        for port in services[name].get("ports") or []:
            for target, protocol in _published(port):
                if (target, protocol) not in seen:
                    seen.add((target, protocol))
                    out.append((name, target, protocol))
    return out


def _escape(value: str) -> str:
    """A value compose must take literally (it interpolates the file it runs again)."""
    return value.replace("$", "$$")


def _environment(svc: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    current = svc.get("environment") or {}
    if isinstance(current, list):                       # v1 may print KEY=VALUE lines
        current = dict(item.split("=", 1) if "=" in item else (item, None) for item in current)
    return {**current, **{k: _escape(v) for k, v in env.items()}}


def _depends_on(svc: dict[str, Any], kept: set[str]) -> Any:
    deps = svc.get("depends_on")
    if isinstance(deps, dict):
        return {k: v for k, v in deps.items() if k in kept}
    if isinstance(deps, list):
        return [d for d in deps if d in kept]
    return deps


def _labels(svc_labels: Any, labels: Mapping[str, str]) -> dict[str, str]:
    current = svc_labels or {}
    if isinstance(current, list):
        current = dict(item.split("=", 1) if "=" in item else (item, "") for item in current)
    return {**current, **labels}


def _networks(svc: dict[str, Any], name: str) -> dict[str, Any]:
    aliases: list[str] = [name]
    nets = svc.get("networks")
    if isinstance(nets, dict):
        for net in nets.values():
            for alias in (net or {}).get("aliases") or []:
                if alias not in aliases:
                    aliases.append(alias)
    return {NETWORK_KEY: {"aliases": aliases}}


def _harden(svc: dict[str, Any], params: StackParams) -> None:
    opts = [o for o in svc.get("security_opt") or [] if not str(o).startswith("no-new-privileges")]
    svc["security_opt"] = [*opts, "no-new-privileges:true"]
    svc["cap_drop"] = ["ALL"]
    svc["cap_add"] = list(KEPT_CAPABILITIES)
    svc.setdefault("pids_limit", params.pids)
    svc.setdefault("init", True)          # signals reach the service's process, as in workspace containers
    if params.memory and not svc.get("mem_limit"):
        svc["mem_limit"] = params.memory


def _service(name: str, svc: dict[str, Any], params: StackParams, kept: set[str],
             ports: Mapping[tuple[str, int, str], int], labels: Mapping[str, str]) -> dict[str, Any]:
    svc = copy.deepcopy(svc)
    svc.pop("container_name", None)
    if str(svc.get("network_mode", "")) in ("bridge", "default"):
        svc.pop("network_mode")          # the workspace's network instead
    deps = _depends_on(svc, kept)
    if deps is not None:
        svc["depends_on"] = deps
    if svc.get("links"):
        svc["links"] = [link for link in svc["links"] if str(link).split(":")[0] in kept]
    svc["environment"] = _environment(svc, params.env)
    svc["labels"] = _labels(svc.get("labels"), labels)
    if not str(svc.get("network_mode", "")).startswith(("service:", "none")):
        svc["networks"] = _networks(svc, name)
        aliases = sorted(a for a in params.replace if a != "db")
        if aliases and params.database_container:
            svc["external_links"] = [f"{params.database_container}:{a}" for a in aliases]
    if svc.get("ports"):
        svc["ports"] = [f"127.0.0.1:{ports[(name, target, protocol)]}:{target}/{protocol}"
                        for target, protocol in dict.fromkeys(
                            tp for port in svc["ports"] for tp in _published(port))]
    if svc.get("build") is not None:
        build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
        build["labels"] = _labels(build.get("labels"), labels)
        svc["build"] = build
        svc["image"] = f"{params.compose_project}-{name}:sandbox"   # never the project's own tag
    _harden(svc, params)
    return svc


def rewrite(doc: Mapping[str, Any], params: StackParams, host_ports: Sequence[int],
            *, major: int = 2) -> tuple[dict[str, Any], list[PortMapping]]:
    """The workspace's compose document and its port mapping, from compose's resolution ``doc``."""
    order = published_ports(doc, params)
    if len(host_ports) < len(order):
        raise ValueError(f"{len(order)} published ports, {len(host_ports)} host ports")
    ports = {key: host_ports[i] for i, key in enumerate(order)}
    labels = {LABEL_PROJECT: params.project, LABEL_WORKSPACE: params.workspace, LABEL_ROLE: ROLE_COMPOSE}
    names = kept_services(doc, params)
    kept = set(names)
    services = {n: _service(n, (doc.get("services") or {})[n] or {}, params, kept, ports, labels) for n in names}
    out: dict[str, Any] = {}
    if major == 1:
        out["version"] = str(doc.get("version") or "3.9")
    out["services"] = services
    out["networks"] = {NETWORK_KEY: {"external": True, "name": params.network}}
    volumes = {}
    for vname, vol in (doc.get("volumes") or {}).items():
        vol = dict(vol or {})
        vol.pop("name", None)            # compose names it <project>_<volume>: per workspace
        vol["labels"] = _labels(vol.get("labels"), labels)
        volumes[vname] = vol
    if volumes:
        out["volumes"] = volumes
    for section in ("secrets", "configs"):
        if doc.get(section):
            out[section] = copy.deepcopy(doc[section])
    mapping = [PortMapping(s, t, p, ports[(s, t, p)]) for (s, t, p) in order]
    return out, mapping
