"""The images scripts/build-images makes: sandbox/postgres behaves like the official postgres
image (testcontainers works with it), and sandbox/workspace holds the tools workspaces need."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psycopg
import pytest
from conftest import service_missing

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")   # before testcontainers reads its config

try:  # testcontainers >= 4.14 moved the module; older 4.x only has the first path
    from testcontainers.community.postgres import PostgresContainer
except ImportError:  # pragma: no cover
    from testcontainers.postgres import PostgresContainer

pytestmark = pytest.mark.docker

POSTGRES_IMAGE = os.environ.get("SANDBOX_POSTGRES_IMAGE") or "sandbox/postgres:15"
WORKSPACE_IMAGE = os.environ.get("SANDBOX_WORKSPACE_IMAGE") or "sandbox/workspace:bookworm"
LABELS = {"dev.sandbox.test": "images"}


def require_image(client: docker.DockerClient, tag: str) -> str:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        service_missing(f"image {tag} missing: run scripts/build-images")
    return tag


@pytest.fixture
def postgres_image(docker_client: docker.DockerClient) -> str:
    return require_image(docker_client, POSTGRES_IMAGE)


@pytest.fixture
def containers(docker_client: docker.DockerClient) -> Iterator[list[Any]]:
    """Containers a test starts by hand; removed afterwards."""
    made: list[Any] = []
    yield made
    for c in made:
        try:
            c.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass


def url_of(pg: PostgresContainer) -> str:
    return pg.get_connection_url(driver=None)


def params_of(pg: PostgresContainer) -> dict[str, Any]:
    """Connection parameters as keywords: testcontainers' URL does not escape every password."""
    return {"host": pg.get_container_host_ip(), "port": int(pg.get_exposed_port(5432)),
            "user": pg.username, "password": pg.password, "dbname": pg.dbname}


def query(url: str | dict[str, Any], sql: str) -> list[tuple[Any, ...]]:
    params = url if isinstance(url, dict) else {"conninfo": url}
    with psycopg.connect(**params, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            query(url, "SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def published_port(container: Any) -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"])


def test_testcontainers_postgres_with_defaults(postgres_image: str) -> None:
    with PostgresContainer(image=postgres_image, driver=None) as pg:
        rows = query(url_of(pg), "SELECT current_user, current_database(), current_setting('server_version_num')")
    user, db, version = rows[0]
    assert (user, db) == ("test", "test")
    assert version.startswith("15")


def test_testcontainers_postgres_with_custom_user_password_db(postgres_image: str) -> None:
    with PostgresContainer(image=postgres_image, username="alice", password="s3cr'et pw", dbname="shop",
                           driver=None) as pg:
        url = params_of(pg)
        assert query(url, "SELECT current_user, current_database()") == [("alice", "shop")]
        # alice is the superuser the image created, and host connections need the password.
        assert query(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(True,)]
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(**{**url, "password": "wrong"}, connect_timeout=5)
        assert query(url, "SELECT current_setting('listen_addresses'), "
                          "current_setting('password_encryption')") == [("*", "scram-sha-256")]


def test_extra_arguments_pass_through_to_postgres(postgres_image: str) -> None:
    pg = PostgresContainer(image=postgres_image, driver=None).with_command("-c max_connections=42 -c fsync=off")
    with pg:
        assert query(url_of(pg), "SELECT current_setting('max_connections'), current_setting('fsync')") == \
            [("42", "off")]


def test_initdb_scripts_run_once(postgres_image: str, tmp_path: Path) -> None:
    initdb = tmp_path / "initdb"
    initdb.mkdir()
    (initdb / "01-schema.sql").write_text("CREATE TABLE seeded (id int); INSERT INTO seeded VALUES (1), (2);\n")
    (initdb / "02-more.sh").write_text('psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" '
                                       "-c 'INSERT INTO seeded VALUES (3)'\n")
    os.chmod(tmp_path, 0o755)
    for p in (initdb, *initdb.iterdir()):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    pg = PostgresContainer(image=postgres_image, driver=None).with_volume_mapping(
        str(initdb), "/docker-entrypoint-initdb.d", "ro")
    with pg:
        assert query(url_of(pg), "SELECT count(*) FROM seeded") == [(3,)]


def test_missing_password_is_refused_clearly(docker_client: docker.DockerClient, postgres_image: str,
                                             containers: list[Any]) -> None:
    c = docker_client.containers.run(postgres_image, detach=True, labels=LABELS)
    containers.append(c)
    result = c.wait(timeout=60)
    assert result["StatusCode"] != 0
    assert b"POSTGRES_PASSWORD is not set" in c.logs()


def test_trust_auth_needs_no_password(docker_client: docker.DockerClient, postgres_image: str,
                                      containers: list[Any]) -> None:
    c = docker_client.containers.run(postgres_image, detach=True, labels=LABELS,
                                     environment={"POSTGRES_HOST_AUTH_METHOD": "trust"},
                                     ports={"5432/tcp": ("127.0.0.1", None)})
    containers.append(c)
    wait_for(f"postgresql://postgres@127.0.0.1:{published_port(c)}/postgres")


@pytest.mark.skipif(os.geteuid() != 0, reason="chowning a data directory to another uid needs root")
def test_a_cloned_cluster_of_another_uid_with_a_stale_pid_starts(
        docker_client: docker.DockerClient, postgres_image: str, containers: list[Any], tmp_path: Path) -> None:
    """What the snapshot strategy does: start a cluster on a copy of another's data directory."""
    volume = tmp_path / "vol"
    volume.mkdir()
    os.chmod(tmp_path, 0o755)
    env = {"POSTGRES_USER": "owner", "POSTGRES_PASSWORD": "pw", "POSTGRES_DB": "app",
           "PGDATA": "/sandbox/data"}
    first = docker_client.containers.run(postgres_image, ["-c", "fsync=off"], detach=True, labels=LABELS,
                                         environment=env, ports={"5432/tcp": ("127.0.0.1", None)},
                                         volumes={str(volume): {"bind": "/sandbox", "mode": "rw"}})
    containers.append(first)
    url = f"postgresql://owner:pw@127.0.0.1:{published_port(first)}/app"
    wait_for(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survived')")
    first.stop(timeout=30)

    clone = tmp_path / "clone"
    shutil.copytree(volume, clone, symlinks=True)
    subprocess.run(["chown", "-R", "12345:12345", str(clone)], check=True)
    (clone / "data" / "postmaster.pid").write_text("4242\n/sandbox/data\n0\n5432\n")

    # No POSTGRES_* at all: an existing cluster needs none of them.
    second = docker_client.containers.run(postgres_image, detach=True, labels=LABELS,
                                          environment={"PGDATA": "/sandbox/data"},
                                          ports={"5432/tcp": ("127.0.0.1", None)},
                                          volumes={str(clone): {"bind": "/sandbox", "mode": "rw"}})
    containers.append(second)
    url2 = f"postgresql://owner:pw@127.0.0.1:{published_port(second)}/app"
    wait_for(url2)
    assert query(url2, "SELECT v FROM kept") == [("survived",)]
    logs = second.logs().decode()
    assert "skipping initialization" in logs
    assert "removing stale /sandbox/data/postmaster.pid" in logs
    assert (clone / "data" / "PG_VERSION").stat().st_uid != 12345


def test_workspace_image_has_the_tools(docker_client: docker.DockerClient) -> None:
    image = require_image(docker_client, WORKSPACE_IMAGE)
    script = ("set -e; git --version; python3 --version; pip3 --version; psql --version; gcc --version | head -1; "
              "python3 -m venv /tmp/venv && /tmp/venv/bin/python -c 'import sys; print(sys.prefix)'; "
              "test -s /etc/apt/sources.list.d/debian.sources; test ! -e /var/run/docker.sock; "
              "ls /var/lib/apt/lists | grep -c _Packages || true")
    out = docker_client.containers.run(image, ["bash", "-c", script], user="1000:1000", remove=True,
                                       labels=LABELS, name=f"sbx-test-ws-{uuid.uuid4().hex[:8]}").decode()
    lines = out.splitlines()
    assert lines[0].startswith("git version")
    assert lines[1].startswith("Python 3.11")
    assert "/tmp/venv" in out
    assert lines[-1] == "0"      # apt lists are cleaned: a lean image
