"""A PostgreSQL cluster run by the ``sandbox/postgres`` image over a bind-mounted volume."""


from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..checks import Check, OwnedResource
from ..errors import DatabaseError, ServiceUnavailable
from ..runtime.labels import (
    LABEL_ROLE,
    LABEL_SUPERVISE,
    LABEL_WORKSPACE,
    ROLE_DATABASE,
    ROLE_DATABASE_NETWORK,
)
from .base import ConnInfo
from .pgserver import (
    PG_HBA_DOCKER,
    READY_TIMEOUT,
    SANDBOX_SETTINGS,
    _settings_args,
    preload_client,
    wait_ready,
)

SUPERVISED_LABEL = LABEL_SUPERVISE
HOLD_FILE = ".hold"      # in the mount: while it exists, a supervised container keeps PostgreSQL down
CTL_FIFO = ".ctl"        # in the mount: a line written to it asks the supervisor for a restart

# Database containers are hardened like workspace containers: every capability dropped except
# what the entrypoint needs to hand the data directory to `postgres` and drop to it (chown,
# reading files it does not own, setuid/setgid), no privilege gain, and bounded memory and pids.
DB_HARDENING: dict[str, Any] = {
    "cap_drop": ["ALL"],
    "cap_add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"],
    "security_opt": ["no-new-privileges"],
    "pids_limit": 512,
    "mem_limit": "1g",
}


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """:func:`sandbox.runtime.errors.translated` (the one translation of Docker errors) with the
    database layer's error; imported when first used, like the Docker SDK itself."""
    from ..runtime.errors import translated

    with translated(what, DatabaseError):
        yield


class DockerCluster:
    """A cluster run by the ``sandbox/postgres`` image over a bind-mounted data directory.

    The volume (``datadir.parent``) is mounted at ``/sandbox`` and ``PGDATA`` is
    ``/sandbox/data``; the port is published on 127.0.0.1 only. A container made for a
    workspace is created on that workspace's ``network`` with the alias ``db`` (no separate
    connect call); :meth:`attach` connects an existing container to another network.
    """

    kind = "docker"

    def __init__(self, datadir: Path, port: int, *, image: str, container_name: str,
                 labels: Mapping[str, str], docker_factory: Callable[[], Any], password: str,
                 superuser: str = "postgres", settings: Mapping[str, str] | None = None,
                 network: str | None = None, mount: Path | None = None) -> None:
        if Path(datadir).name != "data":
            raise ValueError("DockerCluster expects datadir = <volume>/data")
        self.datadir = Path(datadir)
        # The host directory mounted at /sandbox: the volume itself, or (for a workspace) the
        # volume's parent, so that the volume can be swapped under a running container.
        self.mount = Path(mount) if mount is not None else self.datadir.parent
        if not self.datadir.is_relative_to(self.mount):
            raise ValueError("DockerCluster's datadir must be inside its mount")
        self.pgdata = "/sandbox/" + self.datadir.relative_to(self.mount).as_posix()
        self.port = port
        self.image = image
        self.container_name = container_name
        self.labels = {**labels, LABEL_ROLE: ROLE_DATABASE}
        self._docker_factory = docker_factory
        self._client: Any = None
        self.superuser = superuser
        self._password = password
        self.settings = {**SANDBOX_SETTINGS, **(settings or {}), "listen_addresses": "*"}
        self.network = network
        self._attached: set[str] = set()      # networks this object knows the container is on

    def __repr__(self) -> str:
        return f"DockerCluster(container={self.container_name!r}, port={self.port})"

    @property
    def docker(self) -> Any:
        if self._client is None:
            try:
                self._client = self._docker_factory()
            except ServiceUnavailable:
                raise
            except Exception as exc:
                raise ServiceUnavailable(f"Docker engine not reachable: {exc}",
                                         hint="start Docker or use server = \"local\"") from exc
        return self._client

    def _container(self) -> Any | None:
        import docker.errors

        with _translated(f"cannot look up container {self.container_name}"):
            try:
                return self.docker.containers.get(self.container_name)
            except docker.errors.NotFound:
                return None

    def _create(self, env: Mapping[str, str], *, as_root: bool = False) -> Any:
        """The container. Only the first start of a new cluster (``initdb``, which hands the
        data directory to ``postgres``) runs the entrypoint as root; every later one runs as the
        image's ``postgres`` user from the start."""
        import docker.errors

        net: dict[str, Any] = {}
        if self.network:
            self._ensure_network()
            net = {"network": self.network, "networking_config": {
                self.network: self.docker.api.create_endpoint_config(aliases=["db"])}}
        command = ["postgres", *_settings_args(self.settings)]
        labels = dict(self.labels)
        if self.mount != self.datadir.parent and not as_root and self._image_supervises():
            command = ["supervise", *command]
            labels[SUPERVISED_LABEL] = "1"
            self.make_ctl()
        with _translated(f"cannot create container {self.container_name}"):
            try:
                container = self.docker.containers.create(
                self.image, command=command,
                name=self.container_name, labels=labels,
                environment={"PGDATA": self.pgdata, "SANDBOX_HOLD": f"/sandbox/{HOLD_FILE}",
                             "SANDBOX_CTL": f"/sandbox/{CTL_FIFO}", **env},
                volumes={str(self.mount.absolute()): {"bind": "/sandbox", "mode": "rw"}},
                ports={"5432/tcp": ("127.0.0.1", self.port)},
                shm_size="64m", stop_signal="SIGINT", **DB_HARDENING, **net,
                **({} if as_root else {"user": "postgres"}))
            except docker.errors.ImageNotFound as exc:
                from ..runtime.errors import BUILD_HINT
                raise ServiceUnavailable(f"Docker image {self.image} is missing", hint=BUILD_HINT) from exc
        if self.network:
            self._attached.add(self.network)
        return container

    def _image_supervises(self) -> bool:
        """Whether the image's entrypoint knows ``supervise`` (images built before it do not)."""
        try:
            with _translated(f"cannot read image {self.image}"):
                labels = self.docker.images.get(self.image).labels or {}
        except (DatabaseError, ServiceUnavailable):
            return False          # create() reports a missing image
        return bool(labels.get(SUPERVISED_LABEL) == "1")

    def swap_data(self, replace: Callable[[], None], timeout: float = READY_TIMEOUT,
                  on_ready: Callable[[Any], None] | None = None) -> bool:
        """Replace the data directory under the running container: stop PostgreSQL at once,
        call ``replace`` (which swaps the volume under :attr:`mount`), start PostgreSQL on the
        new data and wait until it accepts connections. The container, its port, networks and
        address stay. False (nothing done) when the container is not a running supervised one;
        the caller then stops, replaces and starts the usual way."""
        hold = self.mount / HOLD_FILE
        ctl = self._ctl_writer()
        if ctl is not None:         # the supervisor listens: no Docker API call (nor SDK import)
            container = None
        else:
            container = self._container()
            if container is None or container.status != "running" or \
                    (container.labels or {}).get(SUPERVISED_LABEL) != "1":
                return False
        preload_client()
        hold.touch()
        try:
            self._signal_restart(container, ctl)
            self._wait_stopped(timeout)
            replace()
        finally:
            hold.unlink(missing_ok=True)          # the supervisor starts PostgreSQL again
        if container is None:
            wait_ready(self.admin(), timeout=timeout, alive=lambda: self._ctl_listening(), on_ready=on_ready)
        else:
            self._wait(container, timeout, on_ready)
        return True

    def _ctl_writer(self) -> int | None:
        """The write end of the supervisor's FIFO, if a supervisor reads it right now."""
        try:
            return os.open(self.mount / CTL_FIFO, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:          # absent (an older container), or nobody reading (ENXIO)
            return None

    def _ctl_listening(self) -> bool:
        fd = self._ctl_writer()
        if fd is None:
            return False
        os.close(fd)
        return True

    def _signal_restart(self, container: Any, ctl: int | None) -> None:
        if ctl is not None:
            try:
                os.write(ctl, b"restart\n")
            finally:
                os.close(ctl)
            return
        with _translated(f"cannot signal container {self.container_name}"):
            container.kill(signal="SIGUSR1")

    def make_ctl(self) -> None:
        """The supervisor's FIFO in the mount, for the container made next (owned by the data's
        owner: the container's ``postgres``)."""
        ctl = self.mount / CTL_FIFO
        if not ctl.exists():
            os.mkfifo(ctl, 0o600)
        st = os.stat(self.datadir)
        if os.geteuid() == 0:
            os.chown(ctl, st.st_uid, st.st_gid)

    def _wait_stopped(self, timeout: float) -> None:
        """Until the postmaster is gone: it removes postmaster.pid last, when its children are."""
        pidfile = self.datadir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while pidfile.exists():
            if time.monotonic() > deadline:
                raise DatabaseError(f"PostgreSQL in {self.container_name} did not stop within {timeout:.0f}s")
            time.sleep(0.002)

    def _ensure_network(self) -> None:
        """The network the container is made on exists (a workspace's is made by its runtime; the
        shared server's own network, which keeps it off Docker's default bridge, is made here)."""
        import docker.errors

        assert self.network
        with _translated(f"cannot create network {self.network}"):
            if any(n.name == self.network for n in self.docker.networks.list(names=[self.network])):
                return
            try:
                self.docker.networks.create(self.network, driver="bridge",
                                            labels={**self.labels, LABEL_ROLE: ROLE_DATABASE_NETWORK})
            except docker.errors.APIError:     # made by another process meanwhile is fine
                if not any(n.name == self.network for n in self.docker.networks.list(names=[self.network])):
                    raise

    def initdb(self) -> None:
        """Let the image's entrypoint create the cluster (its first start), then stop it."""
        self.datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = self._container()
        if old is not None:
            old.remove(force=True)
        # The password goes through a 0600 file in the volume (read by the entrypoint as root),
        # never through the container's environment or command line.
        pwfile = self.datadir.parent / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._password)
        container = self._create(as_root=True, env={"POSTGRES_USER": self.superuser, "POSTGRES_DB": "postgres",
                                  "POSTGRES_PASSWORD_FILE": f"/sandbox/{pwfile.name}"})
        try:
            with _translated(f"cannot start container {self.container_name}"):  # e.g. its port taken
                container.start()
            self._wait(container)
            (self.datadir / "pg_hba.conf").write_text(PG_HBA_DOCKER)
        finally:
            pwfile.unlink(missing_ok=True)
            self._remove(container)

    def _remove(self, container: Any) -> None:
        import docker.errors

        self._attached.clear()
        with _translated(f"cannot remove container {self.container_name}"):
            try:
                container.stop(timeout=60)
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

    def _wait(self, container: Any, timeout: float = READY_TIMEOUT,
              on_ready: Callable[[Any], None] | None = None) -> None:
        def alive() -> bool:
            container.reload()
            return bool(container.status in ("created", "running", "restarting"))

        def log() -> str:
            try:
                return " | ".join(container.logs(tail=3).decode(errors="replace").strip().splitlines())
            except Exception:  # noqa: BLE001 - diagnostics only
                return ""

        wait_ready(self.admin(), timeout=timeout, alive=alive, log=log, on_ready=on_ready)

    def is_running(self) -> bool:
        c = self._container()
        return c is not None and c.status == "running"

    def ensure_running(self, timeout: float = READY_TIMEOUT) -> None:
        # A swap that a crash interrupted left PostgreSQL held: the supervisor starts it now.
        (self.mount / HOLD_FILE).unlink(missing_ok=True)

        if not (self.datadir / "PG_VERSION").exists():
            raise DatabaseError(f"no PostgreSQL cluster in {self.datadir}")
        container = self._container() or self._create({})
        with _translated(f"cannot start container {self.container_name}"):
            if container.status != "running":
                preload_client()
                container.start()
        self._wait(container, timeout)

    def admin(self) -> ConnInfo:
        return ConnInfo(host="127.0.0.1", port=self.port, user=self.superuser,
                        password=self._password, dbname="postgres", container=self.container_name)

    def address(self, network: str | None) -> tuple[str, int] | None:
        """Host and port of the server as seen from ``network`` (once attached to it)."""
        return ("db", 5432) if network else None

    def attach(self, network: str | None) -> tuple[str, int] | None:
        if not network:
            return None
        if network in self._attached:
            return self.address(network)
        container = self._container()
        if container is None:
            raise DatabaseError(f"container {self.container_name} does not exist")
        with _translated(f"cannot attach {self.container_name} to network {network}"):
            # the lookup above inspected the container: already on the network, nothing more to ask
            if network not in (container.attrs.get("NetworkSettings") or {}).get("Networks", {}):
                self.docker.networks.get(network).connect(container, aliases=["db"])
        self._attached.add(network)
        return self.address(network)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server and remove its container (the data directory stays)."""
        container = self._container()
        if container is None:
            return
        if mode == "immediate":
            self._attached.clear()
            container.remove(force=True)
        else:
            self._remove(container)
        self._remove_own_network()

    def _remove_own_network(self) -> None:
        """The shared server's own network goes with its container (a workspace's stays)."""
        if not self.network:
            return
        with contextlib.suppress(DatabaseError, ServiceUnavailable), \
                _translated(f"cannot remove network {self.network}"):
            for n in self.docker.networks.list(names=[self.network]):
                if n.name == self.network and (n.attrs.get("Labels") or {}).get(LABEL_ROLE) == \
                        ROLE_DATABASE_NETWORK:
                    n.remove()         # still in use, or already gone: gc and deinit see it again

    def run_client(self, tool: str, args: list[str], *, dbname: str, input_file: Path | None = None,
                   options: str | None = None, timeout: float | None = None) -> str:
        """Run ``tool`` inside the container; ``input_file`` becomes its standard input
        (copied into the mounted volume for the time of the call)."""
        container = self._container()
        if container is None:
            raise DatabaseError(f"container {self.container_name} is not running")
        env = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": self.superuser,
               "PGPASSWORD": self._password, "PGDATABASE": dbname}
        if options:
            env["PGOPTIONS"] = options
        argv = [tool, *args]
        staged: Path | None = None
        if input_file is not None:
            staged = self.datadir.parent / f".input-{os.getpid()}-{time.monotonic_ns()}"
            try:
                subprocess.run(["cp", "--reflink=auto", "--", str(input_file), str(staged)],
                               check=True, capture_output=True)
                os.chmod(staged, 0o644)
            except (OSError, subprocess.CalledProcessError) as exc:
                staged.unlink(missing_ok=True)
                raise DatabaseError(f"cannot read {input_file}") from exc
            # A constant script; the file and the command are passed as arguments.
            argv = ["sh", "-c", 'f="$1"; shift; exec "$@" < "$f"', "sh",
                    f"/sandbox/{staged.name}", *argv]
        try:
            with _translated(f"{tool} in {self.container_name} failed"):
                code, out = container.exec_run(argv, environment=env, demux=True, user="postgres")
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        stdout, stderr = out if isinstance(out, tuple) else (out, None)
        if code != 0:
            lines = (stderr or stdout or b"").decode(errors="replace").strip().splitlines()
            raise DatabaseError(f"{tool} failed: {lines[-1] if lines else f'exit {code}'}")
        return (stdout or b"").decode(errors="replace")

    def pids(self) -> list[int]:
        container = self._container()
        if container is None or container.status != "running":
            return []
        try:
            top = container.top(ps_args="-o pid")
            return [int(p[0]) for p in top.get("Processes") or []]
        except Exception:  # noqa: BLE001 - diagnostics only
            return []

    def owned(self) -> list[OwnedResource]:
        c = self._container()
        if c is None:
            return []
        return [OwnedResource("container", c.name, self.labels.get(LABEL_WORKSPACE) or None,
                              f"postgres on 127.0.0.1:{self.port}")]

    def remove_owned(self, resource: OwnedResource) -> None:
        self.stop(mode="immediate")

    def doctor(self) -> list[Check]:
        import docker.errors

        try:
            self.docker.ping()
        except (ServiceUnavailable, docker.errors.DockerException) as exc:
            return [Check("docker", False, f"engine not reachable: {exc}", "start the Docker engine")]
        try:
            self.docker.images.get(self.image)
        except docker.errors.ImageNotFound:
            return [Check("postgres image", False, f"{self.image} is missing", "run scripts/build-images")]
        return [Check("postgres image", True, self.image)]
