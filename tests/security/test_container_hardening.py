"""Container hardening with the snapshot strategy: one database container per workspace.

(The template strategy's shared server is checked in test_untrusted_workspace.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e.conftest import cli, make_demo_repo

from .conftest import need_docker_images, teardown
from .hardening import hardening_problems

pytestmark = pytest.mark.docker

TOML = """\
[workspace]
runtime = "docker"
ports = 5

[database]
strategy = "snapshot"
server = "docker"
seed = ["db/seed.sql"]
"""


@pytest.fixture
def snapshot_project(tmp_path: Path, docker_client: Any) -> Iterator[Path]:
    need_docker_images(docker_client)
    repo = make_demo_repo(tmp_path / "proj", TOML)
    try:
        cli(repo, "init")
        yield repo
    finally:
        teardown(repo, docker_client)


def test_snapshot_workspace_and_database_containers_are_hardened(snapshot_project: Path,
                                                                 docker_client: Any) -> None:
    """Every container of a snapshot workspace, its own database server included: not root, no
    capabilities beyond what Postgres needs, no-new-privileges, memory and pids limits, not on
    Docker's default bridge."""
    from sandbox import Sandbox
    repo = snapshot_project
    cli(repo, "up", "x")
    project = Sandbox.open(repo).config.project_id
    problems: list[str] = []
    for role in ("workspace", "database"):
        found = docker_client.containers.list(filters={"label": [f"dev.sandbox.project={project}",
                                                                 f"dev.sandbox.role={role}"]})
        if not found:
            problems.append(f"no running {role} container")
        for c in found:
            problems += hardening_problems(c, role)
    assert not problems, "\n".join(problems)


def test_the_hardening_check_accepts_a_hardened_container_and_names_each_gap(docker_client: Any) -> None:
    """The check itself: silent on a container hardened as issue #9 asks, and one line per gap on
    a container started with Docker's defaults (root, all default capabilities, default bridge)."""
    need_docker_images(docker_client)
    net = docker_client.networks.create("sandbox-security-check", driver="bridge")
    made = []
    try:
        hardened = docker_client.containers.run(
            "sandbox/workspace:bookworm", ["sleep", "60"], detach=True, user="1000:1000", cap_drop=["ALL"],
            security_opt=["no-new-privileges"], mem_limit="128m", pids_limit=64, network=net.name)
        made.append(hardened)
        plain = docker_client.containers.run("sandbox/workspace:bookworm", ["sleep", "60"], detach=True)
        made.append(plain)
        assert hardening_problems(hardened, "workspace") == []
        gaps = "\n".join(hardening_problems(plain, "workspace"))
        for gap in ("runs as root", "CapDrop", "no-new-privileges", "memory", "pids", "bridge"):
            assert gap in gaps, gaps
    finally:
        for c in made:
            c.remove(force=True)
        net.remove()
