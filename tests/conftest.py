"""Shared fixtures. Services (Docker, Postgres) skip when missing, but fail when
SANDBOX_REQUIRE_SERVICES=1 (set by CI), so CI can never pass by skipping."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

REQUIRE_SERVICES = os.environ.get("SANDBOX_REQUIRE_SERVICES") == "1"

# The demo projects of the tests run alembic with "the project's interpreter": with runtime "none"
# that is `python3` from PATH, as for a developer whose virtualenv is active. Make the test's own
# virtualenv (which has alembic, SQLAlchemy and psycopg) that interpreter, so that a fresh machine
# does not depend on what its system python happens to have installed.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

# Real projects used as fixtures carry their own test suites: those run inside the projects'
# containers (tests/e2e/test_real_projects.py), never collected here.
collect_ignore = ["fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the long load soak of tests/reliability (also SANDBOX_SOAK=1)")


def soak(config: pytest.Config) -> bool:
    """Whether the long soak was asked for (``--soak`` or ``SANDBOX_SOAK=1``)."""
    return bool(config.getoption("--soak", default=False)) or os.environ.get("SANDBOX_SOAK") == "1"


def service_missing(reason: str) -> None:
    """Skip, or fail under SANDBOX_REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def pg_bin_dir() -> Path | None:
    candidates = [os.environ.get("SANDBOX_PG_BIN")] + sorted(
        (str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists():
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def isolated_host_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Host-wide port reservations of the tests live in a folder of their own (subprocesses inherit it)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one folder for every xdist worker: they share this host's ports and subnets, as projects do
        path = tmp_path_factory.getbasetemp().parent / "host-state"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("host-state")
    old = os.environ.get("SANDBOX_HOST_STATE")
    os.environ["SANDBOX_HOST_STATE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SANDBOX_HOST_STATE", None)
    else:
        os.environ["SANDBOX_HOST_STATE"] = old


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        service_missing(f"Docker engine not reachable: {exc}")
    return client


class LocalPostgres:
    """A throwaway PostgreSQL cluster from the host's binaries (run as `postgres` when root)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="sbx-test-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "postgres"
        self.password = "postgres"

    def _run(self, *argv: str) -> None:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True)

    def start(self) -> None:
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile),
                  "-A", "scram-sha-256", "--no-sync", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.dir / "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{dbname}"


@pytest.fixture(scope="session")
def local_pg() -> Iterator[LocalPostgres]:
    """A session-wide superuser PostgreSQL on 127.0.0.1 (host binaries)."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        service_missing("PostgreSQL binaries not found (apt-get install postgresql-15)")
        raise AssertionError  # unreachable
    pg = LocalPostgres(bin_dir)
    try:
        pg.start()
    except (subprocess.CalledProcessError, OSError) as exc:
        pg.stop()
        service_missing(f"could not start PostgreSQL: {exc}")
    time.sleep(0.1)
    yield pg
    pg.stop()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real git repository with one commit on branch main."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.name", "t"], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.email", "t@example.com"], check=True)
    (repo / "README.md").write_text("hello\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "init"], check=True, env=env)
    return repo
