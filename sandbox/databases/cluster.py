"""One PostgreSQL cluster over a given data directory: on the host (:class:`LocalCluster`,
here), or in Docker (:class:`~sandbox.databases.dockercluster.DockerCluster`).

Both implement the :class:`~sandbox.databases.base.Server` protocol, plus what the
snapshot strategy needs to build a baseline (``initdb``) and load dumps
(``run_client``). The settings every sandbox cluster runs with, and why, are in
:mod:`sandbox.databases.pgserver`.
"""


from __future__ import annotations

import hashlib
import os
import pwd
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..checks import Check, OwnedResource
from ..errors import DatabaseError, ServiceUnavailable
from .base import ConnInfo
from .dockercluster import DB_HARDENING, DockerCluster
from .pgserver import (
    _POLL,
    PG_HBA,
    PG_HBA_DOCKER,
    PGDATA_IN_CONTAINER,
    READY_TIMEOUT,
    SANDBOX_SETTINGS,
    _settings_args,
    _tail,
    find_bin_dir,
    preload_client,
    wait_ready,
)

__all__ = ["LocalCluster", "DockerCluster", "DB_HARDENING", "SANDBOX_SETTINGS", "PG_HBA", "PG_HBA_DOCKER",
           "PGDATA_IN_CONTAINER", "READY_TIMEOUT", "find_bin_dir", "preload_client", "wait_ready"]


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
