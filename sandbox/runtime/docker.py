"""Runtime ``docker``: one hardened container per workspace, with git working inside it.

Each workspace ``NAME`` of project ``P`` gets a container and a bridge network, both named
``sandbox-P-NAME`` and labelled ``dev.sandbox.project``/``workspace``/``role``. The workspace's
checkout is a repository of its own (see :mod:`sandbox.worktrees`), bind-mounted at its host
path; main's object store is mounted read-only at its host path so that the checkout's
alternates resolve, and nothing else of main's ``.git`` is visible. The container runs as an
unprivileged user (the invoking user, or uid 1000 when that is root), drops every capability,
cannot gain privileges, and publishes the workspace's port block 1:1 on 127.0.0.1.

Errors from the docker SDK are translated here: an unreachable engine or a missing image is
:class:`ServiceUnavailable` (exit 3), anything else :class:`WorkspaceError`.
"""

from __future__ import annotations

import codecs
import contextlib
import ipaddress
import os
import sqlite3
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from ..checks import Check, OwnedResource
from ..errors import SandboxError, ServiceUnavailable, UsageError, WorkspaceError
from .base import OutputSink, WorkspaceSpec
from .errors import BUILD_HINT, INSTALL_HINT, reason, translated
from .labels import LABEL_PROJECT, LABEL_ROLE, LABEL_WORKSPACE, ROLE_DATABASE, ROLE_NETWORK, ROLE_WORKSPACE
from .subnets import SubnetPool

__all__ = [
    "BUILD_HINT",
    "INSTALL_HINT",
    "ROLE_NETWORK",
    "ROLE_WORKSPACE",
    "ClientFactory",
    "DockerRuntime",
    "connect",
    "resource_name",
    "shared_client",
]

ClientFactory = Callable[[], docker.DockerClient]

DEFAULT_IMAGES = ("sandbox/workspace:bookworm", "sandbox/postgres:15")

# The container's main process: it only keeps the container alive; `exec` does the work.
KEEPALIVE = ["sleep", "infinity"]
STOP_TIMEOUT = 5  # seconds; tini forwards SIGTERM to sleep, so this is rarely reached
_SUBNET_ATTEMPTS = 16   # subnets tried when the engine reports an overlap sandbox did not know of


def resource_name(project: str, name: str) -> str:
    """The name of a workspace's container and of its network."""
    return f"sandbox-{project}-{name}"


def connect(client_factory: ClientFactory | None = None) -> docker.DockerClient:
    """A client of a Docker engine that answers, or :class:`ServiceUnavailable`.

    ``client_factory`` defaults to ``docker.from_env`` (``DOCKER_HOST`` etc.).
    """
    try:
        if client_factory is None:
            # asks the engine for its API version: it answers, or this fails. Every call has a
            # deadline (SANDBOX_DOCKER_TIMEOUT, default 60 s); streamed exec output and builds
            # are not cut by it (the SDK lifts the socket timeout for attached streams)
            client = docker.from_env(timeout=client_timeout())
        else:
            client = client_factory()
            client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise ServiceUnavailable(f"Docker engine not reachable: {reason(exc)}", hint=INSTALL_HINT) from exc
    return client


def client_timeout() -> int:
    """Seconds one Docker API call may take (``SANDBOX_DOCKER_TIMEOUT``, default 60)."""
    raw = os.environ.get("SANDBOX_DOCKER_TIMEOUT", "").strip()
    try:
        value = int(raw) if raw else 60
    except ValueError:
        raise UsageError(f"SANDBOX_DOCKER_TIMEOUT={raw!r} is not a whole number of seconds") from None
    if value <= 0:
        raise UsageError(f"SANDBOX_DOCKER_TIMEOUT={raw!r} must be positive")
    return value


_shared: dict[tuple[str | None, ...], docker.DockerClient] = {}
_shared_lock = threading.Lock()


def shared_client() -> docker.DockerClient:
    """The process's client of the engine ``DOCKER_HOST`` etc. name (see :func:`connect`).

    The workspace runtime and the database clusters share it, so a command asks the engine
    for its API version once, not once per client (15-35 ms each on a busy 2-core machine).
    The SDK's client is safe to use from several threads (a pooled ``requests`` session).
    """
    key = tuple(os.environ.get(k) for k in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"))
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = _shared[key] = connect()
        return client


def _with_safe_directory(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus ``safe.directory=*`` through GIT_CONFIG_* (keeps entries already there).

    Git refuses repositories owned by another uid ("dubious ownership"); the mounted
    repository may be owned by someone other than the container's user.
    """
    out = dict(env)
    try:
        count = int(out.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    out[f"GIT_CONFIG_KEY_{count}"] = "safe.directory"
    out[f"GIT_CONFIG_VALUE_{count}"] = "*"
    out["GIT_CONFIG_COUNT"] = str(count + 1)
    return out


class DockerRuntime:
    """Runs each workspace in its own container on a Docker engine (docker SDK)."""

    name = "docker"

    def __init__(self, client_factory: ClientFactory | None = None, *,
                 images: Sequence[str] | None = None, subnet_pool: str | SubnetPool | None = None) -> None:
        """``client_factory`` builds the client on first use (default ``docker.from_env``).

        ``images`` are the tags ``doctor`` checks (default: the configured workspace and
        postgres images, honouring SANDBOX_WORKSPACE_IMAGE / SANDBOX_POSTGRES_IMAGE).
        """
        self._factory = client_factory
        self._subnets = subnet_pool if isinstance(subnet_pool, SubnetPool) else SubnetPool(subnet_pool)
        self._client: docker.DockerClient | None = None
        self._ncpu: int | None = None          # the engine's CPU count, asked once
        self._lock = threading.Lock()
        if images is None:
            images = (os.environ.get("SANDBOX_WORKSPACE_IMAGE") or DEFAULT_IMAGES[0],
                      os.environ.get("SANDBOX_POSTGRES_IMAGE") or DEFAULT_IMAGES[1])
        self.images = tuple(images)

    @property
    def client(self) -> docker.DockerClient:
        """The engine's client, connected on first use (:class:`ServiceUnavailable` if none)."""
        with self._lock:
            if self._client is None:
                self._client = shared_client() if self._factory is None else connect(self._factory)
            return self._client

    # -- labels and lookups -----------------------------------------------------------------------
    @staticmethod
    def _labels(project: str, name: str, role: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**(extra or {}), LABEL_PROJECT: project, LABEL_WORKSPACE: name, LABEL_ROLE: role}

    def _container(self, project: str, name: str) -> Any | None:
        """The workspace's container, or None. Refuses a same-named container sandbox did not make."""
        cname = resource_name(project, name)
        with translated(f"looking up container {cname}"):
            try:
                container = self.client.containers.get(cname)
            except docker.errors.NotFound:
                return None
        labels = container.labels or {}
        if labels.get(LABEL_PROJECT) != project or labels.get(LABEL_WORKSPACE) != name:
            raise WorkspaceError(f"a container named {cname} exists but was not created by sandbox",
                                 hint=f"remove it: docker rm -f {cname}")
        return container

    def _networks(self, netname: str) -> list[Any]:
        """Networks named exactly ``netname`` (the engine's name filter matches substrings)."""
        return [n for n in self.client.networks.list(names=[netname]) if n.name == netname]

    # -- Runtime protocol -------------------------------------------------------------------------
    def ensure_network(self, project: str, name: str) -> str | None:
        netname = self._ensure_network(project, name, None)
        self._engine_ncpu()    # `up` needs it next: asked now, while git makes the worktree
        return netname

    def _ensure_network(self, project: str, name: str, extra_labels: Mapping[str, str] | None) -> str:
        """The workspace's bridge network, on a /28 of the subnet pool (see :mod:`.subnets`)."""
        netname = resource_name(project, name)
        with translated(f"creating network {netname}"):
            if self._networks(netname):
                return netname
            labels = self._labels(project, name, ROLE_NETWORK, extra_labels)
            with self.subnets.allocation(netname, self._engine_networks) as next_subnet:
                if self._networks(netname):           # made by another process while this one waited
                    return netname
                for _ in range(_SUBNET_ATTEMPTS):
                    subnet = next_subnet()
                    ipam = docker.types.IPAMConfig(pool_configs=[
                        docker.types.IPAMPool(subnet=str(subnet), gateway=str(subnet.network_address + 1))])
                    try:
                        self.client.networks.create(netname, driver="bridge", labels=labels, ipam=ipam,
                                                    check_duplicate=True)
                        return netname
                    except docker.errors.APIError as exc:
                        if self._networks(netname):   # another process created it meanwhile
                            return netname
                        if "overlap" not in reason(exc).lower():
                            raise
                        # used by something sandbox's table does not know (another state folder,
                        # another tool): try the next subnet
                raise WorkspaceError(f"creating network {netname}: the engine refused {_SUBNET_ATTEMPTS} subnets "
                                     "as overlapping", hint="give [workspace] subnet_pool a range nobody uses")
        return netname

    @property
    def subnets(self) -> SubnetPool:
        return self._subnets

    def _engine_networks(self) -> tuple[list[ipaddress.IPv4Network], set[str]]:
        """Every IPv4 subnet of every network on the engine, and the networks' names."""
        subnets: list[ipaddress.IPv4Network] = []
        names: set[str] = set()
        for network in self.client.networks.list():
            names.add(str(network.name))
            for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
                with contextlib.suppress(ValueError, TypeError):
                    net = ipaddress.ip_network(config.get("Subnet") or "", strict=False)
                    if isinstance(net, ipaddress.IPv4Network):
                        subnets.append(net)
        return subnets, names

    def _release_subnet(self, netname: str) -> None:
        with contextlib.suppress(SandboxError, OSError, sqlite3.Error):   # taken back later if this fails
            self.subnets.release(netname)

    def up(self, spec: WorkspaceSpec) -> None:
        netname = self._ensure_network(spec.project, spec.name, spec.labels)
        # Create first (the common case); a name conflict means it exists: start that one.
        if self._create(spec, netname):
            return
        container = self._container(spec.project, spec.name)
        if container is None:
            raise WorkspaceError(f"container {resource_name(spec.project, spec.name)} vanished "
                                 "while being created")
        if container.status != "running":
            with translated(f"starting container {container.name}"):
                container.start()

    def _create(self, spec: WorkspaceSpec, netname: str) -> bool:
        """Create and start the container; False if a container of that name exists already."""
        cname = resource_name(spec.project, spec.name)
        client = self.client
        worktree, common = str(spec.worktree), str(spec.git_common_dir)
        if not os.path.isabs(worktree) or not os.path.isabs(common):
            raise WorkspaceError(f"workspace {spec.name!r}: worktree and git dir must be absolute paths")
        mounts = [docker.types.Mount(target=worktree, source=worktree, type="bind")]
        if spec.isolated:
            # The workspace's own repository borrows main's objects (alternates): read-only, and
            # nothing else of main's .git (config, hooks, refs) is visible at all.
            objects = os.path.join(common, "objects")
            mounts.append(docker.types.Mount(target=objects, source=objects, type="bind", read_only=True))
        elif not (common + os.sep).startswith(worktree + os.sep) and common != worktree:
            # A worktree nested in .git, or .git inside the worktree, is covered by the other mount.
            mounts.append(docker.types.Mount(target=common, source=common, type="bind"))
        env = {"HOME": "/tmp", **spec.env}
        env = _with_safe_directory(env)
        kwargs: dict[str, Any] = {
            "image": spec.image,
            "command": KEEPALIVE,
            "name": cname,
            "detach": True,
            "init": True,
            "user": f"{spec.uid}:{spec.gid}",
            "working_dir": worktree,
            "environment": env,
            "labels": self._labels(spec.project, spec.name, ROLE_WORKSPACE, spec.labels),
            "mounts": mounts,
            "network": netname,
            # Lets the workspace reach services published on the host (Docker >= 20.10).
            "extra_hosts": {"host.docker.internal": "host-gateway"},
            "ports": {f"{p}/tcp": ("127.0.0.1", p) for p in spec.ports},
            "privileged": False,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": spec.pids,
            "mem_limit": spec.memory,
            "nano_cpus": self._nano_cpus(spec.cpus),
        }
        with translated(f"creating container {cname}"):
            try:
                container = client.containers.create(**kwargs)
            except docker.errors.ImageNotFound as exc:
                raise ServiceUnavailable(f"Docker image {spec.image} is missing", hint=BUILD_HINT) from exc
            except docker.errors.APIError as exc:
                if exc.status_code == 409:   # name taken: it exists, or was created concurrently
                    return False
                raise
        try:
            with translated(f"starting container {cname}"):
                container.start()
        except SandboxError:
            # Leave nothing half-made: a retry (maybe with other ports) creates it afresh.
            try:
                container.remove(force=True, v=True)
            except docker.errors.DockerException:
                pass
            raise
        return True

    def _engine_ncpu(self) -> int:
        """The engine's CPU count (0 if it does not say), asked once."""
        client = self.client
        with self._lock:
            if self._ncpu is None:
                try:
                    self._ncpu = int(client.info().get("NCPU") or 0)
                except (docker.errors.DockerException, requests.exceptions.RequestException, ValueError):
                    self._ncpu = 0
            return self._ncpu

    def _nano_cpus(self, cpus: float) -> int:
        """``cpus`` as nano-CPUs, capped at the engine's CPU count (the engine refuses more)."""
        ncpu = self._engine_ncpu()
        if ncpu > 0:
            cpus = min(cpus, float(ncpu))
        return max(int(cpus * 1e9), 10_000_000)

    def stop(self, project: str, name: str) -> None:
        container = self._container(project, name)
        if container is None or container.status not in ("running", "restarting", "paused"):
            return
        with translated(f"stopping container {container.name}"):
            try:
                container.stop(timeout=STOP_TIMEOUT)
            except docker.errors.NotFound:
                pass

    def remove(self, project: str, name: str) -> None:
        cname = resource_name(project, name)
        container = self._container(project, name)
        if container is not None:
            with translated(f"removing container {cname}"):
                try:
                    container.remove(force=True, v=True)
                except docker.errors.NotFound:
                    pass
        with translated(f"removing network {cname}"):
            for network in self._networks(cname):
                labels = network.attrs.get("Labels") or {}
                if labels.get(LABEL_PROJECT) == project:
                    self._remove_network(network)

    def remove_every_workspace(self, project: str, parallel: int = 8) -> None:
        """Kill and remove every workspace's container and its database's container (SIGKILL:
        no grace period, everything is being destroyed), several at once, then the workspaces'
        networks (``deinit --force``: each workspace's own teardown then finds them gone)."""
        with translated("listing the workspaces' containers"):
            containers = [c for c in self.client.containers.list(
                              all=True, sparse=True, filters={"label": [f"{LABEL_PROJECT}={project}", LABEL_WORKSPACE]})
                          if (c.attrs.get("Labels") or {}).get(LABEL_WORKSPACE)
                          and (c.attrs.get("Labels") or {}).get(LABEL_ROLE) in (ROLE_WORKSPACE, ROLE_DATABASE)]

        def remove_container(c: Any) -> None:
            with translated(f"removing container {c.id[:12]}"):
                try:
                    self.client.api.remove_container(c.id, force=True, v=True)
                except docker.errors.NotFound:
                    pass

        def remove_network(n: Any) -> None:
            with translated(f"removing network {n.name}"):
                self._remove_network(n)
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(remove_container, containers))
            with translated("listing the workspaces' networks"):
                networks = self.client.networks.list(
                    filters={"label": [f"{LABEL_PROJECT}={project}", f"{LABEL_ROLE}={ROLE_NETWORK}"]})
            list(pool.map(remove_network, networks))

    def _remove_network(self, network: Any) -> None:
        """Remove a network, first detaching whatever is still attached (the workspace is going away);
        its subnet goes back to the pool."""
        try:
            network.reload()
            for cid in (network.attrs.get("Containers") or {}):
                try:
                    network.disconnect(cid, force=True)
                except docker.errors.NotFound:
                    pass
            network.remove()
        except docker.errors.NotFound:
            pass
        self._release_subnet(network.name)

    def status(self, project: str, name: str) -> str:
        container = self._container(project, name)
        if container is None:
            return "none"
        return "running" if container.status == "running" else "exited"

    def statuses(self, project: str) -> dict[str, str]:
        """Every workspace container's status (``running`` or ``exited``) by workspace name, from
        one list call filtered by the project's label (``ls`` of many workspaces); a workspace
        without a container is absent (``none``)."""
        with translated("listing the workspaces' containers"):
            # sparse: the list's own fields (labels, state), no inspection of each container
            containers = self.client.containers.list(
                all=True, sparse=True,
                filters={"label": [f"{LABEL_PROJECT}={project}", f"{LABEL_ROLE}={ROLE_WORKSPACE}"]})
        out: dict[str, str] = {}
        for c in containers:
            ws = (c.attrs.get("Labels") or {}).get(LABEL_WORKSPACE)
            if ws:
                out[ws] = "running" if c.status == "running" else "exited"
        return out

    def exec(self, spec: WorkspaceSpec, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
             interactive: bool = False, output: OutputSink | None = None,
             errors: OutputSink | None = None) -> int:
        if not argv:
            raise WorkspaceError("nothing to run: the command is empty")
        container = self._container(spec.project, spec.name)
        if container is None or container.status != "running":
            raise WorkspaceError(f"workspace {spec.name!r} has no running container",
                                 hint=f"run `sandbox up {spec.name}`")
        extra = dict(env or {})
        if interactive:
            return self._exec_cli(spec, container.name, argv, extra)
        return self._exec_api(spec, container.id, argv, extra, output, errors)

    def _exec_cli(self, spec: WorkspaceSpec, cname: str, argv: Sequence[str], env: dict[str, str]) -> int:
        """``docker exec -it``: the one use of the CLI, since the SDK cannot attach a terminal."""
        cli = shutil.which("docker")
        if cli is None:
            raise ServiceUnavailable("the docker command-line client is missing (needed for interactive shells)",
                                     hint=INSTALL_HINT)
        cmd = [cli, "exec", "-i"]
        if sys.stdin.isatty() and sys.stdout.isatty():
            cmd.append("-t")
        cmd += ["-w", str(spec.worktree)]
        for key in env:
            cmd += ["-e", key]   # the value comes from the client's environment, not argv (ps)
        cmd += [cname, *argv]
        try:
            return subprocess.call(cmd, env={**os.environ, **env})
        except OSError as exc:
            raise ServiceUnavailable(f"could not run docker exec: {exc}", hint=INSTALL_HINT) from exc

    def _exec_api(self, spec: WorkspaceSpec, cid: str, argv: Sequence[str], env: dict[str, str],
                  output: OutputSink | None, errors: OutputSink | None = None) -> int:
        api = self.client.api
        with translated(f"running {argv[0]!r} in workspace {spec.name!r}"):
            exec_id = api.exec_create(cid, list(argv), stdout=True, stderr=True, stdin=False, tty=False,
                                      environment=env or None, workdir=str(spec.worktree))["Id"]
            if output is not None and errors is not None:
                _split_lines(api.exec_start(exec_id, stream=True, demux=True), output, errors)
            elif output is not None:
                _stream_lines(api.exec_start(exec_id, stream=True), output)
            else:
                _stream_to_stdio(api.exec_start(exec_id, stream=True, demux=True))
            return self._exit_code(exec_id)

    def _exit_code(self, exec_id: str) -> int:
        deadline = time.monotonic() + 10
        while True:
            info = self.client.api.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() > deadline:
                raise WorkspaceError("the command's output ended but it did not exit")
            time.sleep(0.05)

    def owned(self, project: str) -> list[OwnedResource]:
        found: list[OwnedResource] = []
        with translated("listing sandbox's Docker objects"):
            # ignore_removed: a container can vanish between the listing and its inspection (the
            # engine rolls back a create whose client was killed mid-request)
            containers = self.client.containers.list(
                all=True, ignore_removed=True,
                filters={"label": [f"{LABEL_PROJECT}={project}", f"{LABEL_ROLE}={ROLE_WORKSPACE}"]})
            for c in containers:
                found.append(OwnedResource("container", str(c.id), (c.labels or {}).get(LABEL_WORKSPACE),
                                           detail=f"{c.name} ({c.status})"))
            networks = self.client.networks.list(
                filters={"label": [f"{LABEL_PROJECT}={project}", f"{LABEL_ROLE}={ROLE_NETWORK}"]})
            for n in networks:
                labels = n.attrs.get("Labels") or {}
                found.append(OwnedResource("network", str(n.id), labels.get(LABEL_WORKSPACE), detail=str(n.name)))
        return found

    def remove_owned(self, resource: OwnedResource) -> None:
        with translated(f"removing {resource.kind} {resource.detail or resource.id}"):
            if resource.kind == "container":
                try:
                    self.client.containers.get(resource.id).remove(force=True, v=True)
                except docker.errors.NotFound:
                    pass
            elif resource.kind == "network":
                try:
                    self._remove_network(self.client.networks.get(resource.id))
                except docker.errors.NotFound:
                    pass
            else:
                raise WorkspaceError(f"the docker runtime does not own a {resource.kind!r}")

    def doctor(self) -> list[Check]:
        try:
            client = self.client
            version = client.version()
        except (SandboxError, docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            why = exc.message if isinstance(exc, SandboxError) else reason(exc)
            checks = [Check("docker engine", False, why, INSTALL_HINT)]
            checks += [Check(f"image {tag}", False, "not checked: no Docker engine", BUILD_HINT)
                       for tag in self.images]
            return checks
        checks = [Check("docker engine", True,
                        f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) "
                        f"at {client.api.base_url}")]
        for tag in self.images:
            try:
                image = client.images.get(tag)
                checks.append(Check(f"image {tag}", True, f"present ({image.short_id})"))
            except docker.errors.ImageNotFound:
                checks.append(Check(f"image {tag}", False, "missing", BUILD_HINT))
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                checks.append(Check(f"image {tag}", False, reason(exc), BUILD_HINT))
        cli = shutil.which("docker")
        checks.append(Check("docker cli", cli is not None, cli or "missing: `sandbox shell` needs it",
                            None if cli else INSTALL_HINT, required=False))
        return checks


def _stream_lines(chunks: Iterator[bytes], output: OutputSink) -> None:
    """Feed a byte stream to ``output`` one line at a time (without the newline)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            output(line.rstrip("\r"))
    pending += decoder.decode(b"", final=True)
    if pending:
        output(pending.rstrip("\r"))


def _split_lines(frames: Iterator[tuple[bytes | None, bytes | None]], output: OutputSink,
                 errors: OutputSink) -> None:
    """Feed demultiplexed exec output to two sinks, one line at a time (without the newline)."""
    pending: dict[int, str] = {1: "", 2: ""}
    decoders = {n: codecs.getincrementaldecoder("utf-8")(errors="replace") for n in pending}
    sinks = {1: output, 2: errors}

    def feed(n: int, data: bytes, final: bool = False) -> None:
        pending[n] += decoders[n].decode(data, final=final)
        *lines, pending[n] = pending[n].split("\n")
        for line in lines:
            sinks[n](line.rstrip("\r"))

    for out, err in frames:
        if out:
            feed(1, out)
        if err:
            feed(2, err)
    for n in pending:
        feed(n, b"", final=True)
        if pending[n]:
            sinks[n](pending[n].rstrip("\r"))


def _stream_to_stdio(frames: Iterator[tuple[bytes | None, bytes | None]]) -> None:
    """Copy demultiplexed exec output to this process's stdout and stderr."""
    for out, err in frames:
        for data, stream in ((out, sys.stdout), (err, sys.stderr)):
            if not data:
                continue
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                buffer.write(data)
            else:
                stream.write(data.decode("utf-8", errors="replace"))
            stream.flush()
