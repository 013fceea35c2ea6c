"""Faults with the Docker runtime and a database container per workspace: a merge killed after main
moved (the next command brings the baseline to main's head), and a database container killed behind
sandbox's back (``ls`` and ``doctor`` say so; ``up NAME`` repairs it, data intact)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox

from .ops import KILLED, assert_sound, ls, mark, marks, new_project, ok, report, sandbox, toml

REVISION = '''"""wdock

Revision ID: wdock
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "wdock"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("t_wdock", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("t_wdock")
'''


@pytest.fixture(scope="module")
def docker_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from conftest import pg_bin_dir, service_missing
    try:
        import docker
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        service_missing(f"Docker engine not reachable: {exc}")
    for image in ("sandbox/workspace:bookworm", "sandbox/postgres:15"):
        try:
            client.images.get(image)
        except Exception:  # noqa: BLE001
            service_missing(f"image {image} missing: run scripts/build-images")
    if pg_bin_dir() is None:
        service_missing("PostgreSQL binaries not found")
    repo = new_project(tmp_path_factory.mktemp("faults-docker") / "demo",
                       toml("snapshot", 43600, runtime="docker", server="docker", extra='pool_size = "400M"\n'))
    ok(sandbox(repo, "up", "by"))
    mark(repo, "by", 42)
    yield repo
    try:
        Sandbox.open(repo).deinit(force=True)
    except Exception as exc:  # noqa: BLE001 - best effort cleanup, reported
        print(f"cleanup of {repo} failed: {exc}")


@pytest.mark.docker
def test_a_merge_killed_after_main_moved_brings_the_baseline_forward(docker_project: Path) -> None:
    repo = docker_project
    ok(sandbox(repo, "up", "w"))
    blob = base64.b64encode(REVISION.encode()).decode()
    ok(sandbox(repo, "exec", "w", "--", "sh", "-c", f"echo {blob} | base64 -d > migrations/versions/wdock.py "
                                                    "&& git add -A && git commit -qm wdock"))
    killed = sandbox(repo, "merge", "w", kill="merge:main-moved")
    assert killed.returncode == KILLED, killed.stderr
    sb = Sandbox.open(repo)
    assert sb.main_heads() == ["wdock"] and sb.registry.get_meta("baseline_head") == "0001"   # main moved
    doctor = sandbox(repo, "doctor")
    assert doctor.returncode == 1 and "FAIL baseline head" in doctor.stdout, doctor.stdout
    actions = json.loads(ok(sandbox(repo, "gc", "--json")).stdout)
    assert [(a["kind"], a["action"], a["done"]) for a in actions] == [("operation", "roll-forward", True)], actions
    assert_sound(repo, bystanders={"by": {42}})
    ok(sandbox(repo, "up", "n"))                          # a new workspace starts at main's head
    sb = Sandbox.open(repo)
    assert sb.tool.current(sb.conninfo("n")) == ["wdock"]
    ok(sandbox(repo, "rm", "n", "--delete-branch"))
    ok(sandbox(repo, "rm", "w", "--delete-branch"))
    report("fault", op="merge", point="merge:main-moved", strategy="snapshot", runtime="docker",
           recovery=["roll-forward"], lost=0)


@pytest.mark.docker
def test_a_killed_database_container_is_reported_and_up_repairs_it(docker_project: Path) -> None:
    import docker
    repo = docker_project
    ok(sandbox(repo, "up", "k"))
    mark(repo, "k", 5)
    container = Sandbox.open(repo).conninfo("k").container
    assert container
    docker.from_env().containers.get(container).kill()
    rows = ls(repo)
    row = rows["k"]
    assert row["state"] == "broken" and row["registry_state"] == "ready", row
    assert row["database"]["answers"] is False and not row["health"]["ok"]
    assert any("does not answer" in p and container in p for p in row["health"]["problems"]), row["health"]
    assert rows["by"]["state"] == "ready" and rows["by"]["health"]["ok"]
    doctor = sandbox(repo, "doctor")
    assert doctor.returncode == 1 and "FAIL workspace k" in doctor.stdout and "sandbox up k" in doctor.stdout
    ok(sandbox(repo, "up", "k"))
    row = ls(repo)["k"]
    assert row["state"] == "ready" and row["database"]["answers"] and row["health"]["ok"], row
    assert marks(repo, "k") == {5}
    assert marks(repo, "by") == {42}
    report("fault", op="docker kill", point="database container", strategy="snapshot", runtime="docker",
           recovery=["up"], lost=0)
    ok(sandbox(repo, "rm", "k", "--delete-branch"))


def _restart_engine() -> None:
    """Stop the Docker engine (every container stops with it: no live-restore) and start it again
    the way CI does (scripts/install-docker)."""
    import subprocess
    import time

    root = Path(__file__).resolve().parents[2]
    systemd = Path("/run/systemd/system").is_dir() and subprocess.run(
        ["systemctl", "is-active", "--quiet", "docker"], check=False).returncode == 0
    if systemd:
        subprocess.run(["systemctl", "stop", "docker"], check=True, timeout=120)
    else:
        subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=True)
        deadline = time.monotonic() + 90
        while subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "dockerd did not stop"
            time.sleep(0.5)
    subprocess.run([str(root / "scripts" / "install-docker")], check=True, timeout=180)


@pytest.mark.docker
def test_the_docker_engine_restarts_while_workspaces_run(docker_project: Path) -> None:
    """Every container stops with the engine: ls and doctor say so, `up` brings each workspace
    back with its data and its commits, and nothing is left for gc."""
    repo = docker_project
    ok(sandbox(repo, "up", "e"))
    mark(repo, "e", 7)
    ok(sandbox(repo, "exec", "e", "--", "sh", "-c",
               "echo kept > kept.txt && git add -A && git commit -qm 'work before the restart'"))
    _restart_engine()
    rows = ls(repo)
    for name in ("e", "by"):
        assert rows[name]["container"]["status"] != "running", rows[name]
        assert not rows[name]["health"]["ok"], rows[name]
    assert sandbox(repo, "doctor").returncode == 1
    ok(sandbox(repo, "up", "e", "by"))
    rows = ls(repo)
    for name in ("e", "by"):
        assert rows[name]["state"] == "ready" and rows[name]["health"]["ok"], rows[name]
    assert marks(repo, "e") == {7} and marks(repo, "by") == {42}
    import subprocess
    log = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%s", "e"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert log == "work before the restart"
    assert json.loads(ok(sandbox(repo, "gc", "--dry-run", "--json")).stdout) == []
    report("fault", op="engine restart", point="dockerd stopped and started", strategy="snapshot",
           runtime="docker", recovery=["up"], lost=0)
    ok(sandbox(repo, "rm", "e", "--force", "--delete-branch"))
