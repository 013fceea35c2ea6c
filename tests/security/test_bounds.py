"""Bounded time and space (issue 15, items 9 and 11).

- A workspace that fills its database hits its own quota (a btrfs qgroup limit): the others'
  databases keep answering and writing, and `up`, `db reset`, `db checkpoint` still work.
- A container that runs project code has a deadline inside it, is removed when the command that
  started it ends or dies, and `gc` (in any project) removes one whose sandbox process is gone.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import pg_bin_dir, service_missing
from e2e.conftest import GIT_ENV, cli, demo_factory, make_demo_repo  # noqa: F401 - a fixture

from .conftest import need_docker_images

ROLE_RUN = ["dev.sandbox.role=run"]

SNAPSHOT_TOML = """\
[workspace]
runtime = "none"
ports = 5
port_base = 41500

[database]
strategy = "snapshot"
server = "local"
seed = ["db/seed.sql"]
pool_size = "640M"
"""

DOCKER_TOML = """\
[workspace]
runtime = "docker"
ports = 5
port_base = 41600

[database]
strategy = "template"
server = "docker"
seed = ["db/seed.sql"]

[migrations]
run_timeout = "8s"
"""

SPIN = '''"""spin

Revision ID: 0002spin
Revises: 0001
"""
from alembic import op

revision = "0002spin"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    while True:
        pass


def downgrade() -> None:
    pass
'''


# -- item 9: one workspace filling the pool fails alone -------------------------------------------

def _fill(url: str) -> str:
    """Write wide rows until the database refuses; the error it ended with."""
    import psycopg
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as c:
            c.execute("CREATE TABLE hog (pad text)")
            c.execute("ALTER TABLE hog ALTER pad SET STORAGE PLAIN")     # no compression: real bytes
            for _ in range(200):           # 200 x 8 MB: more than the whole pool
                c.execute("INSERT INTO hog SELECT repeat(md5(g::text), 200) FROM generate_series(1, 1000) g")
    except psycopg.Error as exc:
        return str(exc)
    return "never refused"


@pytest.mark.postgres
def test_a_workspace_filling_its_database_fails_alone(demo_factory: Any) -> None:
    """item 9: the hog's quota (default: half the pool) stops it; ok, up, reset, checkpoint work."""
    if os.geteuid() != 0:
        pytest.skip("a loop-mounted btrfs pool needs root")
    if pg_bin_dir() is None:
        service_missing("PostgreSQL binaries not found")
    from sandbox import Sandbox
    repo = demo_factory(SNAPSHOT_TOML)
    sb = Sandbox.open(repo)
    if getattr(sb.db, "storage").kind != "btrfs":
        pytest.skip("the pool is not btrfs")
    cli(repo, "up", "hog", "ok")
    sb = Sandbox.open(repo)
    error = _fill(sb.db_url("hog"))
    assert error != "never refused"        # EDQUOT: an error, or its server stopping on a WAL write

    import psycopg
    with psycopg.connect(sb.db_url("ok"), autocommit=True, connect_timeout=10) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
        c.execute("CREATE TABLE still_writable AS SELECT repeat(md5(g::text), 100) AS pad "
                  "FROM generate_series(1, 20000) g")     # ~64 MB
    cli(repo, "up", "third")
    cli(repo, "db", "reset", "ok")
    cli(repo, "db", "checkpoint", "ok", "c")
    with psycopg.connect(sb.db_url("third"), autocommit=True, connect_timeout=10) as c:
        c.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")


def test_workspace_quota_is_validated(tmp_path: Path) -> None:
    """item 9: a malformed [database] workspace_quota is refused with a line naming the key."""
    from sandbox.config import parse
    from sandbox.errors import ConfigError
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, {"database": {"workspace_quota": "lots"}})
    assert "workspace_quota must be" in str(info.value)
    cfg = parse(tmp_path, {"database": {"workspace_quota": "2G"}, "migrations": {"run_timeout": "5s"}})
    assert cfg.database.workspace_quota == "2G" and cfg.migrations.run_timeout_seconds == 5


# -- item 11: project-code containers have a deadline and die with their command ------------------

@pytest.fixture(scope="module")
def spin(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[dict[str, Any]]:
    """Two Docker projects; workspace ``w`` of the first commits a revision that never returns."""
    need_docker_images(docker_client)
    tmp = tmp_path_factory.mktemp("bounds")
    os.chmod(tmp, 0o755)
    repos = [make_demo_repo(tmp / name, DOCKER_TOML.replace("41600", port))
             for name, port in (("proj", "41600"), ("other", "41610"))]
    for repo in repos:
        cli(repo, "init")
    repo = repos[0]
    cli(repo, "up", "w")
    data = base64.b64encode(SPIN.encode()).decode()
    script = (f"echo {data} | base64 -d > migrations/versions/0002_spin.py && git add -A && "
              "git commit -qm spin")
    cli(repo, "exec", "w", "--", "sh", "-c", script)
    yield {"repo": repo, "other": repos[1], "docker": docker_client}
    from sandbox import Sandbox
    for r in repos:
        try:
            Sandbox.open(r).deinit(force=True)
        except Exception as exc:  # noqa: BLE001 - best effort cleanup, reported
            print(f"cleanup of {r} failed: {exc}")


def _runs(docker_client: Any, project: str | None = None) -> list[Any]:
    labels = ROLE_RUN + ([f"dev.sandbox.project={project}"] if project else [])
    return docker_client.containers.list(all=True, filters={"label": labels})


def _project_id(repo: Path) -> str:
    from sandbox import Sandbox
    return Sandbox.open(repo).config.project_id


def _start_check(repo: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), "migrate", "check",
                             "w", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **GIT_ENV, "NO_COLOR": "1"})


def _wait_for_run(docker_client: Any, project: str, timeout: float = 120) -> Any:
    """The first running run container of ``project`` whose command is the spinning upgrade."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for c in _runs(docker_client, project):
            if c.status == "running":
                return c
        time.sleep(0.2)
    raise AssertionError("no run container started")


def test_a_spinning_upgrade_is_stopped_by_its_deadline(spin: dict[str, Any]) -> None:
    """item 11: `while True: pass` in upgrade(): check fails clearly, no container is left."""
    repo, dc = spin["repo"], spin["docker"]
    project = _project_id(repo)
    start = time.monotonic()
    res = cli(repo, "migrate", "check", "w", check=None, timeout=240)
    took = time.monotonic() - start
    assert res.returncode != 0, res.stdout
    out = res.stdout + res.stderr
    assert "run_timeout" in out or "did not finish" in out, out
    assert "Traceback" not in res.stderr
    assert took < 180, took
    assert not _runs(dc, project), [c.name for c in _runs(dc, project)]


def test_a_killed_cli_leaves_a_container_gc_removes(spin: dict[str, Any]) -> None:
    """item 11: SIGKILL the CLI mid-upgrade: the container dies by its own deadline, and gc removes it."""
    repo, dc = spin["repo"], spin["docker"]
    project = _project_id(repo)
    proc = _start_check(repo)
    try:
        container = _wait_for_run(dc, project)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the deadline inside the container ends the spinning upgrade although nobody waits for it
    end = time.monotonic() + 8 + 5 + 20
    while time.monotonic() < end:
        container.reload()
        if container.status != "running":
            break
        time.sleep(0.5)
    assert container.status != "running", "the container outlived its deadline"
    cli(repo, "gc")
    assert not _runs(dc, project), "gc left the dead CLI's run container"


def test_gc_in_another_project_removes_a_deinit_projects_orphan(spin: dict[str, Any], tmp_path: Path) -> None:
    """item 11: a run container left by a killed CLI of a project that was since deinit'ed is
    removed by gc run in another project; deinit itself removes its live run containers."""
    dc = spin["docker"]
    repo = make_demo_repo(tmp_path / "gone", DOCKER_TOML.replace("41600", "41620"))
    cli(repo, "init")
    cli(repo, "up", "w")
    data = base64.b64encode(SPIN.encode()).decode()
    cli(repo, "exec", "w", "--", "sh", "-c",
        f"echo {data} | base64 -d > migrations/versions/0002_spin.py && git add -A && git commit -qm spin")
    project = _project_id(repo)
    # a live run container is removed by deinit
    proc = _start_check(repo)
    _wait_for_run(dc, project)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # while the project lives, its dead CLI's container is its own gc's business, not another's
    live = _runs(dc, project)
    assert live, "the killed CLI left no run container to judge"
    seen = json.loads(cli(spin["other"], "gc", "--dry-run", "--json").stdout)
    assert not [a for a in seen if a["id"] in {c.name for c in live}], seen
    # and one of a CLI killed during deinit's run survives it: simulate with a container made the
    # way a killed CLI leaves it, after the project is gone
    cli(repo, "deinit", "--force")
    assert not _runs(dc, project), "deinit left its project's run containers"
    orphan = dc.containers.run("sandbox/workspace:bookworm", ["sleep", "300"], detach=True, labels={
        "dev.sandbox.project": project, "dev.sandbox.workspace": "w", "dev.sandbox.role": "run",
        "dev.sandbox.project-path": str(repo), "dev.sandbox.owner-pid": str(proc.pid),
        "dev.sandbox.owner-start": "1"})
    try:
        cli(spin["other"], "gc")
        assert not _runs(dc, project), "gc in another project left the deinit'ed project's orphan"
    finally:
        try:
            orphan.remove(force=True)
        except Exception:  # noqa: BLE001 - already removed
            pass
