"""Per-workspace compose stacks on the real engine, with compose v2 and (where installed) v1.

The example project (compose/example: a web service that answers with a row of its database, a
worker, Redis, and the project's own postgres that sandbox replaces) runs in workspaces a and b at
once; each web answers on its own port with its own workspace's row; the project's ``db`` service
never runs; ``rm a`` leaves nothing of a, and ``gc`` finds nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from sandbox import Sandbox

from .compose_project import IMAGES, commit_on_branch, deinit, env_of, get_json, make_example, need_compose
from .conftest import cli

pytestmark = pytest.mark.docker


@pytest.fixture(params=["v2", "v1"])
def example(request: pytest.FixtureRequest, tmp_path: Path, docker_client: Any,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    version = request.param
    need_compose(version)
    for image in IMAGES:
        try:
            docker_client.images.get(image)
        except Exception:  # noqa: BLE001
            from conftest import service_missing
            service_missing(f"image {image} missing: run scripts/build-images")
    monkeypatch.setenv("SANDBOX_COMPOSE", version)
    repo = make_example(tmp_path / f"shop-{version}")
    yield repo
    deinit(repo)


def stack_objects(client: Any, project: str, workspace: str | None = None) -> list[str]:
    labels = [f"dev.sandbox.project={project}", "dev.sandbox.role=compose"]
    if workspace:
        labels.append(f"dev.sandbox.workspace={workspace}")
    found = [f"container {c.name}" for c in client.containers.list(all=True, filters={"label": labels})]
    found += [f"volume {v.name}" for v in client.volumes.list(filters={"label": labels})]
    found += [f"image {i.tags}" for i in client.images.list(filters={"label": labels})]
    return found


def insert_greeting(repo: Path, name: str, message: str) -> None:
    cli(repo, "exec", name, "--", "psql", "-v", "ON_ERROR_STOP=1", "-q", "-c",
        f"INSERT INTO greeting (id, message) VALUES (2, '{message}')")


def test_the_example_runs_in_two_workspaces_at_once(example: Path, docker_client: Any) -> None:
    repo = example
    results = json.loads(cli(repo, "up", "a", "b", "--json").stdout)
    assert [(r["name"], r["ok"]) for r in results] == [("a", True), ("b", True)]
    pid = Sandbox.open(repo).config.project_id

    urls = {}
    for name in ("a", "b"):
        insert_greeting(repo, name, f"row of {name}")
        env = env_of(repo, name)
        urls[name] = env["SANDBOX_SERVICE_WEB_8000"]
        assert env["SANDBOX_SERVICE_REDIS_6379"].startswith("http://127.0.0.1:")
    assert urls["a"] != urls["b"]
    for name, url in urls.items():
        answer = get_json(url)
        assert answer["message"] == f"row of {name}", answer       # its own workspace's database
        assert answer["workspace"] == name

    # the project's own postgres never runs: sandbox's database answers as `db`
    services = {c.labels.get("com.docker.compose.service")
                for c in docker_client.containers.list(all=True, filters={"label": f"dev.sandbox.project={pid}"})}
    assert "db" not in services and {"web", "worker", "redis"} <= services

    # ls shows the stack; compose passes through with the right project and file
    rows = {r["name"]: r for r in json.loads(cli(repo, "ls", "--json").stdout)}
    web_port = int(urls["a"].rsplit(":", 1)[1])
    assert {p["host_port"] for p in rows["a"]["compose"]["ports"]} >= {web_port}
    assert rows["a"]["compose"]["compose_project"] != rows["b"]["compose"]["compose_project"]
    ps = cli(repo, "compose", "a", "--", "ps", "--services")
    assert set(ps.stdout.split()) == {"redis", "web", "worker"}
    assert cli(repo, "compose", "a", "--", "exec", "-T", "web", "sh", "-c", "exit 7", check=7).returncode == 7

    # stop keeps the stack, up brings it back with its data
    cli(repo, "stop", "b")
    assert all(c.status == "exited" for c in docker_client.containers.list(
        all=True, filters={"label": [f"dev.sandbox.project={pid}", "dev.sandbox.workspace=b",
                                     "com.docker.compose.service=web"]}))
    cli(repo, "up", "b")
    assert get_json(urls["b"])["message"] == "row of b"

    cli(repo, "rm", "a")
    assert stack_objects(docker_client, pid, "a") == []
    assert not list((repo / ".sandbox" / "compose").glob("a.*"))
    assert get_json(urls["b"])["message"] == "row of b"
    assert json.loads(cli(repo, "gc", "--dry-run", "--json").stdout) == []


def test_a_failing_service_is_reported_with_its_logs_and_the_workspace_stays(example: Path) -> None:
    repo = example
    compose = (repo / "compose.yaml").read_text().replace(
        '["python3", "worker.py"]', '["sh", "-c", "echo worker-cannot-start >&2; exit 3"]')
    commit_on_branch(repo, "f", {"compose.yaml": compose})
    res = cli(repo, "up", "f", check=1)
    assert "worker" in res.stderr and "worker-cannot-start" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    rows = {r["name"]: r for r in json.loads(cli(repo, "ls", "--json").stdout)}
    assert rows["f"]["state"] == "ready" and rows["f"]["container"]["status"] == "running"
    assert get_json(env_of(repo, "f")["SANDBOX_SERVICE_WEB_8000"])["workspace"] == "f"


def test_gc_removes_the_stack_of_a_workspace_the_registry_forgot(example: Path, docker_client: Any) -> None:
    repo = example
    cli(repo, "up", "a")
    sb = Sandbox.open(repo)
    pid = sb.config.project_id
    assert stack_objects(docker_client, pid, "a")
    sb.registry.delete("a")                       # as if a crash had lost it
    actions = json.loads(cli(repo, "gc", "--json").stdout)
    assert any(a["kind"] == "compose-container" and a["workspace"] == "a" and a["done"] for a in actions)
    assert stack_objects(docker_client, pid, "a") == []
    assert json.loads(cli(repo, "gc", "--dry-run", "--json").stdout) == []
