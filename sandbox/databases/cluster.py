"""One PostgreSQL cluster over a given data directory: on the host, or in Docker.

Both implement the :class:`~sandbox.databases.base.Server` protocol, plus what the
snapshot strategy needs to build a baseline (``initdb``) and load dumps
(``run_client``). A cluster's data directory is ``<volume>/data``; its volume
(``datadir.parent``) also holds its log, so that deleting the volume removes all.

Settings for sandboxes (:data:`SANDBOX_SETTINGS`) keep an idle cluster small
(well under 64 MB of memory) and cheap to clone:

* ``fsync=off``: these are disposable development databases. A host crash may
  corrupt a *running* workspace cluster; the remedy is ``sandbox db reset`` (or a
  restore from a checkpoint). Baselines and checkpoints are taken from stopped
  clusters or atomic snapshots, and the pool is synced after a baseline is built,
  so they survive host crashes. A crash of PostgreSQL itself (a SIGKILL, a
  ``docker kill``, the OOM killer) loses nothing: ``synchronous_commit`` stays on,
  so each commit's WAL is written to the kernel before the commit returns (with
  ``fsync=off`` that is a ``write()``, not a flush: it costs next to nothing), and
  the kernel keeps it when the processes die. With ``synchronous_commit=off`` the
  last ~600 ms of commits lived only in shared memory and were lost.
* ``full_page_writes`` stays on, so an atomic snapshot of a running cluster
  recovers cleanly.
* ``wal_level=minimal``, no WAL senders, ``wal_init_zero``/``wal_recycle`` off
  (cheaper on copy-on-write filesystems), small WAL.
* ``shared_buffers=16MB``, ``max_connections=20``, few background workers, no JIT,
  autovacuum wakes every two minutes with one worker.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..checks import Check, OwnedResource
from ..errors import DatabaseError, ServiceUnavailable
from .base import ConnInfo

SANDBOX_SETTINGS: dict[str, str] = {
    "shared_buffers": "16MB",
    "max_connections": "20",
    "superuser_reserved_connections": "2",
    "fsync": "off",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "wal_buffers": "1MB",
    "wal_init_zero": "off",
    "wal_recycle": "off",
    "min_wal_size": "32MB",
    "max_wal_size": "256MB",
    "checkpoint_timeout": "15min",
    "max_worker_processes": "4",
    "max_parallel_workers": "2",
    "max_parallel_workers_per_gather": "1",
    "maintenance_work_mem": "32MB",
    "autovacuum_naptime": "120s",
    "autovacuum_max_workers": "1",
    "jit": "off",
    "huge_pages": "off",
    "dynamic_shared_memory_type": "posix",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "password_encryption": "scram-sha-256",
}

# Written into every cluster we create: passwords everywhere, nothing trusted.
PG_HBA = """\
# written by sandbox: password (SCRAM) authentication only
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""
PG_HBA_DOCKER = PG_HBA + "host    all   all   0.0.0.0/0      scram-sha-256\n"

READY_TIMEOUT = 60.0
_POLL = 0.02
_ALIVE_EVERY = 0.25      # seconds between checks that a starting server still lives
PGDATA_IN_CONTAINER = "/sandbox/data"     # the volume is mounted at /sandbox


def _settings_args(settings: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for k, v in settings.items():
        args += ["-c", f"{k}={v}"]
    return args


def find_bin_dir(bin_dir: str | Path | None = None) -> Path | None:
    """The directory holding ``initdb``/``postgres``: given, $SANDBOX_PG_BIN, Debian's, or PATH."""
    candidates: list[str | None] = [str(bin_dir) if bin_dir else None, os.environ.get("SANDBOX_PG_BIN")]
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += [str(p) for p in debian]
    for c in candidates:
        if c and (Path(c) / "postgres").exists():
            return Path(c)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def preload_client() -> None:
    """Import psycopg in the background (~0.15 s of CPU): call it before waiting on a server
    or a container to start, so the import overlaps that wait instead of following it."""
    if "psycopg" not in sys.modules:
        threading.Thread(target=importlib.import_module, args=("psycopg",), name="sandbox-psycopg",
                         daemon=True).start()


def wait_ready(conn: ConnInfo, *, timeout: float = READY_TIMEOUT,
               alive: Callable[[], bool] | None = None, log: Callable[[], str] | None = None) -> None:
    """Poll until ``conn`` accepts connections (bounded), or the server died."""
    import psycopg   # here, not at module level: it loads while the server starts

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    next_alive_check = time.monotonic() + _ALIVE_EVERY
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(**conn.kwargs(), connect_timeout=2, autocommit=True) as c:
                c.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            last = exc
        now = time.monotonic()
        if alive is not None and now >= next_alive_check:   # ``alive`` may be an API call: not every poll
            next_alive_check = now + _ALIVE_EVERY
            if not alive():
                tail = log() if log else ""
                raise DatabaseError(f"PostgreSQL on port {conn.port} exited while starting"
                                    + (f": {tail}" if tail else "")) from last
        time.sleep(_POLL)
    raise DatabaseError(f"PostgreSQL on port {conn.port} did not accept connections within "
                        f"{timeout:.0f}s") from last


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class LocalCluster:
    """A cluster run with the host's PostgreSQL binaries, on 127.0.0.1 only.

    When sandbox runs as root, PostgreSQL runs as the ``postgres`` OS user (it refuses
    root); the data directory's ancestors must then be traversable by that user.
    The unix socket lives in a private directory under the system temp dir.
    """

    kind = "local"

    def __init__(self, datadir: Path, port: int, *, password: str, superuser: str = "postgres",
                 bin_dir: str | Path | None = None, settings: Mapping[str, str] | None = None,
                 os_user: str = "postgres", log_file: Path | None = None,
                 socket_dir: Path | None = None) -> None:
        self.datadir = Path(datadir)
        self.port = port
        self.superuser = superuser
        self._password = password
        self._bin_dir_arg = bin_dir
        self.settings = {**SANDBOX_SETTINGS, **(settings or {})}
        self.log_file = Path(log_file) if log_file else self.datadir.parent / "postgres.log"
        digest = hashlib.sha1(str(self.datadir.absolute()).encode()).hexdigest()[:12]
        self.socket_dir = Path(socket_dir) if socket_dir else Path(tempfile.gettempdir()) / f"sbx-pg-{digest}"
        self._as_root = os.geteuid() == 0
        self.os_user = os_user if self._as_root else pwd.getpwuid(os.geteuid()).pw_name
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalCluster(datadir={str(self.datadir)!r}, port={self.port})"

    # -- helpers ---------------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        found = find_bin_dir(self._bin_dir_arg)
        if found is None:
            raise ServiceUnavailable("PostgreSQL binaries not found",
                                     hint="apt-get install postgresql-15, set [database] bin_dir, "
                                          "or use server = \"docker\"")
        return found

    def _user_kwargs(self) -> dict[str, Any]:
        if not self._as_root:
            return {}
        pw = pwd.getpwnam(self.os_user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self._as_root:
            pw = pwd.getpwnam(self.os_user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _tool(self, argv: list[str], what: str, env: Mapping[str, str] | None = None,
              timeout: float | None = None, stdin: Any = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8",
                    **(env or {})}
        try:
            return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd="/",
                                  env=full_env, timeout=timeout, stdin=stdin, **self._user_kwargs())
        except FileNotFoundError as exc:
            raise ServiceUnavailable(f"{what}: {cmd[0]} not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise DatabaseError(f"{what} timed out after {timeout:.0f}s") from exc
        except subprocess.CalledProcessError as exc:
            lines = (exc.stderr or exc.stdout or "").strip().splitlines()
            hint = self._access_hint()
            raise DatabaseError(f"{what} failed: {lines[-1] if lines else f'exit {exc.returncode}'}",
                                hint=hint) from exc

    def _access_hint(self) -> str | None:
        """Explain the usual cause of failures as root: the postgres user cannot reach the volume."""
        if not self._as_root:
            return None
        pw = pwd.getpwnam(self.os_user)
        p = self.datadir.parent.absolute()
        for d in [p, *p.parents]:
            try:
                st = os.stat(d)
            except OSError:
                continue
            if not (st.st_mode & 0o001 or (st.st_uid == pw.pw_uid and st.st_mode & 0o100)
                    or (st.st_gid == pw.pw_gid and st.st_mode & 0o010)):
                return (f"PostgreSQL runs as the `{self.os_user}` user and cannot enter {d}: "
                        f"make it traversable (chmod o+x {d}) or use server = \"docker\"")
        return None

    def _pidfile_pid(self) -> int | None:
        """The PID of the postmaster running on *this* data directory, if any."""
        try:
            lines = (self.datadir / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
            same_dir = len(lines) > 1 and Path(lines[1]) == self.datadir.absolute()
        except (OSError, ValueError, IndexError):
            return None
        if not same_dir:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            if not Path(exe).name.startswith("postgres"):
                return None
        except OSError:
            pass
        return pid

    # -- Server ----------------------------------------------------------------------------

    def initdb(self) -> None:
        """Create a new cluster in ``datadir`` (which must be absent or empty)."""
        self.datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._chown(self.datadir)
        fd, pwfile = tempfile.mkstemp(prefix=".pw-", dir=self.datadir.parent)
        try:
            os.write(fd, self._password.encode())
            os.close(fd)
            self._chown(Path(pwfile))
            self._tool(["initdb", "-D", str(self.datadir), "-U", self.superuser, "--pwfile", pwfile,
                        "-A", "scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
                        "--no-instructions"], "initdb")
        finally:
            Path(pwfile).unlink(missing_ok=True)
        (self.datadir / "pg_hba.conf").write_text(PG_HBA)

    def is_running(self) -> bool:
        return self._pidfile_pid() is not None

    def ensure_running(self, timeout: float = READY_TIMEOUT) -> None:
        if not (self.datadir / "PG_VERSION").exists():
            raise DatabaseError(f"no PostgreSQL cluster in {self.datadir}")
        if not self.is_running():
            self._start()
        wait_ready(self.admin(), timeout=timeout, alive=self.is_running_or_starting,
                   log=lambda: _tail(self.log_file))

    def is_running_or_starting(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.is_running()

    def _start(self) -> None:
        preload_client()
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.socket_dir)
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.socket_dir}",
                *_settings_args(self.settings)]
        with open(self.log_file, "ab") as log:
            try:
                # Our own session: a Ctrl-C in the terminal must not reach the postmaster.
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                              cwd="/", start_new_session=True,
                                              env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"},
                                              **self._user_kwargs())
            except OSError as exc:
                raise ServiceUnavailable(f"cannot start PostgreSQL: {exc}") from exc

    def admin(self) -> ConnInfo:
        return ConnInfo(host="127.0.0.1", port=self.port, user=self.superuser,
                        password=self._password, dbname="postgres")

    def address(self, network: str | None) -> tuple[str, int] | None:
        """A host cluster listens on 127.0.0.1 only: containers cannot reach it."""
        return None

    def attach(self, network: str | None) -> tuple[str, int] | None:
        return self.address(network)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Shut down (``fast``: roll back sessions, checkpoint; ``immediate``: like a crash)."""
        pid = self._pidfile_pid()
        if pid is not None:
            sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive(pid):
                time.sleep(_POLL)
            if self._alive(pid):
                os.kill(pid, signal.SIGKILL)
                while self._alive(pid):
                    time.sleep(_POLL)
        if self._proc is not None:
            self._proc.poll()
            self._proc = None
        if self.socket_dir.is_dir():
            for f in self.socket_dir.iterdir():
                f.unlink(missing_ok=True)
            self.socket_dir.rmdir()

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    def pids(self) -> list[int]:
        """The postmaster and its children (for memory accounting)."""
        pid = self._pidfile_pid()
        if pid is None:
            return []
        out = [pid]
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if int((d / "stat").read_text().split(")")[-1].split()[1]) == pid:
                        out.append(int(d.name))
                except (OSError, ValueError, IndexError):
                    continue
        return out

    def run_client(self, tool: str, args: list[str], *, dbname: str, input_file: Path | None = None,
                   options: str | None = None, timeout: float | None = None) -> str:
        """Run a client tool (``psql``, ``pg_restore``…) against this cluster as the superuser.

        ``input_file`` becomes the tool's standard input (opened by us, so the postgres
        user need not be able to read it). The password travels in the environment.
        Returns stdout.
        """
        env = {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": self.superuser,
               "PGPASSWORD": self._password, "PGDATABASE": dbname, "PGCONNECT_TIMEOUT": "10"}
        if options:
            env["PGOPTIONS"] = options
        if input_file is None:
            return self._tool([tool, *args], tool, env=env, timeout=timeout).stdout
        try:
            with open(input_file, "rb") as f:
                return self._tool([tool, *args], tool, env=env, timeout=timeout, stdin=f).stdout
        except OSError as exc:
            raise DatabaseError(f"cannot read {input_file}: {exc.strerror}") from exc

    def owned(self) -> list[OwnedResource]:
        if self.is_running():
            return [OwnedResource("cluster", str(self.datadir), None, f"local, port {self.port}")]
        return []

    def remove_owned(self, resource: OwnedResource) -> None:
        self.stop(mode="immediate")

    def doctor(self) -> list[Check]:
        found = find_bin_dir(self._bin_dir_arg)
        if found is None:
            return [Check("postgres binaries", False, "initdb/postgres not found",
                          "apt-get install postgresql-15 or set [database] bin_dir")]
        checks = [Check("postgres binaries", True, str(found))]
        hint = self._access_hint()
        if hint:
            checks.append(Check("postgres data access", False, hint.split(":")[0], hint))
        return checks


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
                 network: str | None = None) -> None:
        if Path(datadir).name != "data":
            raise ValueError("DockerCluster expects datadir = <volume>/data")
        self.datadir = Path(datadir)
        self.port = port
        self.image = image
        self.container_name = container_name
        self.labels = {**labels, "dev.sandbox.role": "database"}
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

        try:
            return self.docker.containers.get(self.container_name)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise ServiceUnavailable(f"Docker: {exc}") from exc

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
        try:
            container = self.docker.containers.create(
                self.image, command=["postgres", *_settings_args(self.settings)],
                name=self.container_name, labels=dict(self.labels),
                environment={"PGDATA": PGDATA_IN_CONTAINER, **env},
                volumes={str(self.datadir.parent.absolute()): {"bind": "/sandbox", "mode": "rw"}},
                ports={"5432/tcp": ("127.0.0.1", self.port)},
                shm_size="64m", stop_signal="SIGINT", **DB_HARDENING, **net,
                **({} if as_root else {"user": "postgres"}))
        except docker.errors.ImageNotFound as exc:
            raise ServiceUnavailable(f"Docker image {self.image} is missing",
                                     hint="run scripts/build-images") from exc
        except docker.errors.DockerException as exc:
            raise DatabaseError(f"cannot create container {self.container_name}: {exc}") from exc
        if self.network:
            self._attached.add(self.network)
        return container

    def _ensure_network(self) -> None:
        """The network the container is made on exists (a workspace's is made by its runtime; the
        shared server's own network, which keeps it off Docker's default bridge, is made here)."""
        import docker.errors

        assert self.network
        try:
            if any(n.name == self.network for n in self.docker.networks.list(names=[self.network])):
                return
            self.docker.networks.create(self.network, driver="bridge",
                                        labels={**self.labels, "dev.sandbox.role": "database-network"})
        except docker.errors.APIError:
            if not any(n.name == self.network for n in self.docker.networks.list(names=[self.network])):
                raise DatabaseError(f"cannot create network {self.network}") from None
        except docker.errors.DockerException as exc:
            raise ServiceUnavailable(f"Docker: {exc}") from exc

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
        import docker.errors
        try:
            try:
                container.start()
            except docker.errors.DockerException as exc:   # e.g. its port taken meanwhile
                raise DatabaseError(f"cannot start container {self.container_name}: {exc}") from exc
            self._wait(container)
            (self.datadir / "pg_hba.conf").write_text(PG_HBA_DOCKER)
        finally:
            pwfile.unlink(missing_ok=True)
            self._remove(container)

    def _remove(self, container: Any) -> None:
        import docker.errors

        self._attached.clear()
        try:
            container.stop(timeout=60)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            raise DatabaseError(f"cannot remove container {self.container_name}: {exc}") from exc

    def _wait(self, container: Any, timeout: float = READY_TIMEOUT) -> None:
        def alive() -> bool:
            container.reload()
            return bool(container.status in ("created", "running", "restarting"))

        def log() -> str:
            try:
                return " | ".join(container.logs(tail=3).decode(errors="replace").strip().splitlines())
            except Exception:  # noqa: BLE001 - diagnostics only
                return ""

        wait_ready(self.admin(), timeout=timeout, alive=alive, log=log)

    def is_running(self) -> bool:
        c = self._container()
        return c is not None and c.status == "running"

    def ensure_running(self, timeout: float = READY_TIMEOUT) -> None:
        import docker.errors

        if not (self.datadir / "PG_VERSION").exists():
            raise DatabaseError(f"no PostgreSQL cluster in {self.datadir}")
        container = self._container() or self._create({})
        try:
            if container.status != "running":
                preload_client()
                container.start()
        except docker.errors.DockerException as exc:
            raise DatabaseError(f"cannot start container {self.container_name}: {exc}") from exc
        self._wait(container, timeout)

    def admin(self) -> ConnInfo:
        return ConnInfo(host="127.0.0.1", port=self.port, user=self.superuser,
                        password=self._password, dbname="postgres", container=self.container_name)

    def address(self, network: str | None) -> tuple[str, int] | None:
        """Host and port of the server as seen from ``network`` (once attached to it)."""
        return ("db", 5432) if network else None

    def attach(self, network: str | None) -> tuple[str, int] | None:
        import docker.errors

        if not network:
            return None
        if network in self._attached:
            return self.address(network)
        container = self._container()
        if container is None:
            raise DatabaseError(f"container {self.container_name} does not exist")
        try:
            net = self.docker.networks.get(network)
            container.reload()
            if network not in container.attrs["NetworkSettings"]["Networks"]:
                net.connect(container, aliases=["db"])
        except docker.errors.DockerException as exc:
            raise DatabaseError(f"cannot attach {self.container_name} to network {network}: {exc}") from exc
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
        import docker.errors

        if not self.network:
            return
        try:
            for n in self.docker.networks.list(names=[self.network]):
                if n.name == self.network and (n.attrs.get("Labels") or {}).get("dev.sandbox.role") == \
                        "database-network":
                    n.remove()
        except docker.errors.DockerException:
            pass      # still in use, or already gone: gc and deinit see it again

    def run_client(self, tool: str, args: list[str], *, dbname: str, input_file: Path | None = None,
                   options: str | None = None, timeout: float | None = None) -> str:
        """Run ``tool`` inside the container; ``input_file`` becomes its standard input
        (copied into the mounted volume for the time of the call)."""
        import docker.errors

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
            code, out = container.exec_run(argv, environment=env, demux=True, user="postgres")
        except docker.errors.DockerException as exc:
            raise DatabaseError(f"{tool} in {self.container_name} failed: {exc}") from exc
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
        return [OwnedResource("container", c.name, self.labels.get("dev.sandbox.workspace") or None,
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
