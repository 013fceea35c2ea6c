"""A workspace's compose file is workspace-controlled: what would reach the host is refused.

Branches of the compose example (compose/example) commit hostile compose files, the way an agent
would; ``sandbox up`` of each shows the refusal (one line naming the key), starts no container of
that stack, and keeps the workspace itself. Run with compose v2 and, where installed, v1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e.compose_project import IMAGES, commit_on_branch, deinit, make_example, need_compose
from e2e.conftest import cli, git

pytestmark = pytest.mark.docker

HOSTILE = {
    # branch: (what replaces web's `ports: ["8000:8000"]` line, the key named in the refusal)
    "h-root": ('volumes: ["/:/host"]', "services.web.volumes"),
    "h-priv": ("privileged: true", "services.web.privileged"),
    "h-sock": ('volumes: ["/var/run/docker.sock:/var/run/docker.sock"]', "services.web.volumes"),
    "h-net": ("network_mode: host", "services.web.network_mode"),
    "h-pid": ("pid: host", "services.web.pid"),
    "h-caps": ('cap_add: ["SYS_ADMIN"]', "services.web.cap_add"),
    "h-dev": ('devices: ["/dev/kmsg:/dev/kmsg"]', "services.web.devices"),
    "h-envfile": ("env_file: [config/app.env]", "services.web.env_file"),
}
PORTS_LINE = 'ports: ["8000:8000"]'


@pytest.fixture(params=["v2", "v1"])
def project(request: pytest.FixtureRequest, tmp_path: Path, docker_client: Any,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    need_compose(request.param)
    for image in IMAGES:
        try:
            docker_client.images.get(image)
        except Exception:  # noqa: BLE001
            from conftest import service_missing
            service_missing(f"image {image} missing: run scripts/build-images")
    monkeypatch.setenv("SANDBOX_COMPOSE", request.param)
    repo = make_example(tmp_path / "shop")
    yield repo
    deinit(repo)


def stack_containers(client: Any, workspace: str) -> list[str]:
    return [c.name for c in client.containers.list(all=True, filters={"label": [
        "dev.sandbox.role=compose", f"dev.sandbox.workspace={workspace}"]})]


def test_hostile_compose_files_on_a_branch_are_refused(project: Path, docker_client: Any, tmp_path: Path) -> None:
    repo = project
    secret = tmp_path / "host-secret.env"                 # outside everything mounted anywhere
    secret.write_text("STOLEN=host-secret-value\n")
    base = (repo / "compose.yaml").read_text()
    assert PORTS_LINE in base
    for branch, (line, _) in HOSTILE.items():
        files = {"compose.yaml": base.replace(PORTS_LINE, line)}
        commit_on_branch(repo, branch, files)
    # h-envfile: its env_file is a committed symbolic link to the host's secret
    git(repo, "switch", "-q", "h-envfile")
    (repo / "config").mkdir()
    os.symlink(secret, repo / "config" / "app.env")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a link to the host")
    git(repo, "switch", "-q", "main")

    results = {r["name"]: r for r in json.loads(cli(repo, "up", *HOSTILE, "--json", check=1).stdout)}
    rows = {r["name"]: r for r in json.loads(cli(repo, "ls", "--json").stdout)}
    for branch, (_, key) in HOSTILE.items():
        r = results[branch]
        assert not r["ok"] and r["exit_code"] == 1 and r["state"] == "ready", r
        assert key in r["error"] and "refused" in r["error"] and "\n" not in r["error"], r["error"]
        assert stack_containers(docker_client, branch) == [], branch     # nothing of the stack started
        assert rows[branch]["state"] == "ready"                           # the workspace itself stays
    assert "Docker socket" in results["h-sock"]["error"]
    assert "symbolic link" in results["h-envfile"]["error"]
    single = cli(repo, "up", "h-priv", check=1)                          # the CLI: one line naming the key
    assert single.stderr.strip().count("\n") == 0 and "services.web.privileged" in single.stderr


def test_the_users_environment_does_not_reach_a_workspaces_stack(project: Path, docker_client: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    repo = project
    base = (repo / "compose.yaml").read_text()
    leaky = base.replace("REDIS_HOST: redis\n", "REDIS_HOST: redis\n      LEAK: ${SANDBOX_TEST_HOST_TOKEN:-absent}\n", 1)
    assert leaky != base
    commit_on_branch(repo, "leak", {"compose.yaml": leaky})
    monkeypatch.setenv("SANDBOX_TEST_HOST_TOKEN", "host-token-value")
    cli(repo, "up", "leak")
    (web,) = [c for c in docker_client.containers.list(all=True, filters={"label": [
        "dev.sandbox.workspace=leak", "com.docker.compose.service=web"]})]
    env = dict(item.split("=", 1) for item in web.attrs["Config"]["Env"])
    assert env["LEAK"] == "absent"
    assert "host-token-value" not in json.dumps(web.attrs["Config"])
