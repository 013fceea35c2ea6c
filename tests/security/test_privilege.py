"""Privilege: no admin session evaluates a workspace's objects, the admin URL stays out of the
committed ``sandbox.toml``, and a workspace's code in a gate container reaches only the target
database, whatever the server kind (issue 15, items 4 and 5)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sandbox.config import load
from sandbox.databases.base import ConnInfo
from sandbox.databases.schema import SchemaStrategy
from sandbox.databases.urlserver import UrlServer
from sandbox.errors import SandboxError
from sandbox.project import DockerProjectRunner
from tests.integration.backends import admin, seed, url_context

WORKSPACE_IMAGE = os.environ.get("SANDBOX_WORKSPACE_IMAGE", "sandbox/workspace:bookworm")


def _escalation(role: str) -> str:
    """A table whose CHECK constraint calls a function that, run by an admin session under
    ``SET ROLE``, resets the role and makes ``role`` a superuser. Errors are swallowed, so a load
    that runs it still succeeds (the attack is silent)."""
    return f"""
CREATE FUNCTION promote(v int) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  BEGIN
    RESET ROLE;
    EXECUTE 'ALTER ROLE "{role}" SUPERUSER';
  EXCEPTION WHEN others THEN NULL;
  END;
  RETURN true;
END $f$;
CREATE TABLE trap (v int CHECK (promote(v)));
INSERT INTO trap VALUES (1);
"""


def _is_superuser(local_pg, role: str) -> bool:  # type: ignore[no-untyped-def]
    with admin(local_pg) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()
    assert row is not None, f"role {role} is gone"
    return bool(row[0])


@pytest.fixture(scope="module")
def schema_strategy(local_pg, tmp_path_factory) -> Iterator[SchemaStrategy]:  # type: ignore[no-untyped-def]
    s = SchemaStrategy(url_context(local_pg, tmp_path_factory.mktemp("priv") / ".sandbox"), UrlServer(local_pg.url()))
    s.build_baseline(seed("CREATE TABLE users (id int PRIMARY KEY); INSERT INTO users VALUES (1);"))
    yield s
    for res in s.owned():
        s.remove_owned(res)


@pytest.mark.postgres
def test_schema_checkpoint_restore_runs_no_workspace_code_as_admin(
        schema_strategy: SchemaStrategy, local_pg) -> None:  # type: ignore[no-untyped-def]
    """Item 4: `db checkpoint x c1` then `db restore x c1` on the schema strategy. The checkpoint
    holds a CHECK constraint whose function does `RESET ROLE; ALTER ROLE x SUPERUSER`; loaded by an
    admin under `SET ROLE x` it made x a superuser. Loaded by x's own login, it cannot."""
    s = schema_strategy
    x = s.create("x")
    role = s.schema_name("x")
    with psycopg.connect(**x.kwargs(), autocommit=True) as conn:
        conn.execute(_escalation(role))
    assert not _is_superuser(local_pg, role)
    s.checkpoint("x", "c1")
    s.restore("x", "c1")
    assert not _is_superuser(local_pg, role), "restoring the checkpoint made the workspace role a superuser"
    with psycopg.connect(**s.info("x").kwargs(), autocommit=True) as conn:   # the restore is whole
        assert conn.execute("SELECT count(*) FROM trap").fetchone() == (1,)
        assert conn.execute("SELECT current_user").fetchone() == (role,)


def _repo(tmp_path: Path, toml: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "sandbox.toml").write_text(toml)
    return repo


def test_a_password_in_sandbox_toml_is_refused(tmp_path: Path) -> None:
    """Item 5: `server = "url"` with the admin password in the committed sandbox.toml is refused
    with exit 2 and one line naming the key and where the URL belongs instead."""
    repo = _repo(tmp_path, '[workspace]\nruntime = "none"\n[database]\nstrategy = "template"\nserver = "url"\n'
                           'url = "postgresql://admin:s3cret@127.0.0.1:9/postgres"\n')
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_SERVER_URL"}
    res = subprocess.run([sys.executable, "-m", "sandbox", "--project", str(repo), "ls"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, lines
    assert "[database] url" in lines[0] and "password" in lines[0] and "SANDBOX_SERVER_URL" in lines[0], lines
    assert "s3cret" not in res.stdout + res.stderr


@pytest.mark.postgres
def test_the_admin_url_comes_from_the_environment_or_the_secrets_folder(tmp_path: Path, local_pg) -> None:  # type: ignore[no-untyped-def]
    """Item 5: sandbox.toml names only `server = "url"` (and perhaps a URL without password);
    the admin URL, password included, comes from SANDBOX_SERVER_URL or .sandbox/secrets/database-url,
    and it works."""
    repo = _repo(tmp_path, '[database]\nstrategy = "template"\nserver = "url"\n'
                           f'url = "postgresql://{local_pg.user}@127.0.0.1:{local_pg.port}/postgres"\n')
    cfg = load(repo, environ={"SANDBOX_SERVER_URL": local_pg.url()})
    UrlServer(cfg.database.url or "").ensure_running()
    secrets = repo / ".sandbox" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "database-url").write_text(local_pg.url() + "\n")
    cfg = load(repo, environ={})
    assert cfg.database.url == local_pg.url()
    UrlServer(cfg.database.url).ensure_running()


@pytest.mark.docker
def test_gate_code_cannot_reach_a_host_loopback_listener(tmp_path: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    """Item 5: with a database outside Docker (server "local" or "url"), a workspace's code in the
    gate's container ran on the host's network and reached a listener bound to 127.0.0.1 only.
    Now it is refused (unless `[migrations] allow_host_network = true`), and nothing connects."""
    try:
        docker_client.images.get(WORKSPACE_IMAGE)
    except Exception:  # noqa: BLE001
        pytest.skip(f"{WORKSPACE_IMAGE} is not built")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    reached: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            reached.append("connected")
            conn.close()
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    repo = _repo(tmp_path, '[database]\nstrategy = "template"\nserver = "local"\n')
    cfg = load(repo, environ={})
    runner = DockerProjectRunner(cfg, lambda: WORKSPACE_IMAGE)
    db = ConnInfo(host="127.0.0.1", port=port, user="u", password="p", dbname="d")   # not in a container
    probe = ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 5); print('reached')"]
    try:
        with pytest.raises(SandboxError) as info:
            runner.run(repo, probe, cwd=repo, env={}, db=db, workspace="x", timeout=60)
        assert info.value.exit_code == 1
        assert "allow_host_network" in str(info.value)
    finally:
        stop.set()
        t.join(timeout=5)
        listener.close()
    assert reached == [], "the workspace's code reached a 127.0.0.1-only listener on the host"
