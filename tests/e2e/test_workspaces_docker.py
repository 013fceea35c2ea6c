"""Workspaces on a real Docker engine: containers, labels, ports, git inside, isolation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import Sandbox

from .conftest import GIT_ENV, cli, git, toml_for

CONTRACT_ENV_KEYS = {"SANDBOX_WORKSPACE", "SANDBOX_PATH", "DATABASE_URL", "SANDBOX_PORT", "PGHOST", "PGPORT",
                     "PGUSER", "PGPASSWORD", "PGDATABASE"}


@pytest.fixture
def docker_demo(demo_factory, docker_client, need_pg):  # type: ignore[no-untyped-def]
    for image in ("sandbox/workspace:bookworm", "sandbox/postgres:15"):
        try:
            docker_client.images.get(image)
        except Exception:  # noqa: BLE001
            from conftest import service_missing
            service_missing(f"image {image} missing: run scripts/build-images")
    toml = ('[workspace]\nruntime = "docker"\nports = 10\n\n'
            '[database]\nstrategy = "snapshot"\nserver = "docker"\nseed = ["db/seed.sql"]\n')
    return demo_factory(toml)


@pytest.mark.docker
def test_three_workspaces_on_docker(docker_demo: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    repo = docker_demo
    res = json.loads(cli(repo, "up", "a", "b", "c", "--json").stdout)
    assert [r["ok"] for r in res] == [True, True, True]
    sb = Sandbox.open(repo)
    pid = sb.config.project_id

    rows = {r["name"]: r for r in json.loads(cli(repo, "ls", "--json").stdout)}
    assert {n: r["container"]["status"] for n, r in rows.items()} == {"a": "running", "b": "running", "c": "running"}
    for r in rows.values():
        assert r["database"]["strategy"] == "snapshot" and "postgresql://" in r["database"]["url"]
        assert ":" not in r["database"]["url"].split("@")[0].removeprefix("postgresql://"), "password leaked in ls"

    containers = docker_client.containers.list(filters={"label": [f"dev.sandbox.project={pid}",
                                                                   "dev.sandbox.role=workspace"]})
    assert sorted(c.labels["dev.sandbox.workspace"] for c in containers) == ["a", "b", "c"]
    blocks = []
    for c in containers:
        attrs = c.attrs["HostConfig"]
        assert attrs["Privileged"] is False and attrs["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in attrs["SecurityOpt"][0]
        assert attrs["PidsLimit"] and attrs["Memory"] and attrs["NanoCpus"]
        assert not any("docker.sock" in m["Source"] for m in c.attrs["Mounts"])
        ports = {int(b[0]["HostPort"]) for b in c.attrs["NetworkSettings"]["Ports"].values() if b}
        assert all(b[0]["HostIp"] == "127.0.0.1" for b in c.attrs["NetworkSettings"]["Ports"].values() if b)
        blocks.append(ports)
    assert all(len(b) == 10 for b in blocks)
    assert not (blocks[0] & blocks[1] or blocks[0] & blocks[2] or blocks[1] & blocks[2])

    env = json.loads(cli(repo, "env", "a", "--format", "json").stdout)
    assert CONTRACT_ENV_KEYS <= env.keys()
    assert int(env["SANDBOX_PORT"]) == min(rows["a"]["ports"])

    # git works inside, and a commit made inside is on branch a on the host by the time a command
    # reads it (the workspace's repository is its own; sandbox fetches from it)
    assert "On branch a" in cli(repo, "exec", "a", "--", "git", "status").stdout
    cli(repo, "exec", "a", "--", "sh", "-c", "echo hi > inside.txt && git add inside.txt && git commit -qm inside")
    cli(repo, "ls")
    assert git(repo, "log", "-1", "--format=%s", "a").strip() == "inside"
    # the container reaches its own database through the injected environment
    out = cli(repo, "exec", "a", "--", "sh", "-c", 'psql "$DATABASE_URL" -tAc "select count(*) from users"').stdout
    assert out.strip() == "3"
    # exit codes pass through
    assert cli(repo, "exec", "a", "--", "sh", "-c", "exit 7", check=7).returncode == 7

    # a's container cannot reach b's database container over the network
    b_db = [c for c in docker_client.containers.list(filters={"label": [f"dev.sandbox.project={pid}",
                                                                        "dev.sandbox.role=database",
                                                                        "dev.sandbox.workspace=b"]})]
    assert b_db, "b's database container"
    ips = [n["IPAddress"] for n in b_db[0].attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"]]
    assert ips
    for ip in ips:
        res = cli(repo, "exec", "a", "--", "pg_isready", "-h", ip, "-p", "5432", "-t", "3", check=None)
        assert res.returncode != 0, f"a reached b's database at {ip}"

    # rm refuses while a is dirty, and keeps everything
    (Path(sb.record("a").path) / "dirty.txt").write_text("x")
    res = cli(repo, "rm", "a", check=1)
    assert "uncommitted" in res.stderr
    assert sb.record("a").state == "ready"
    cli(repo, "rm", "a", "--force")
    assert git(repo, "branch", "--list", "a").strip() == "a"   # the branch is kept
    assert not docker_client.containers.list(all=True, filters={"label": [f"dev.sandbox.project={pid}",
                                                                          "dev.sandbox.workspace=a"]})

    # stop keeps everything, up starts it again
    cli(repo, "stop", "b")
    assert {r["name"]: r for r in json.loads(cli(repo, "ls", "--json").stdout)}["b"]["container"]["status"] == "exited"
    cli(repo, "up", "b")
    out = cli(repo, "exec", "b", "--", "sh", "-c", 'psql "$DATABASE_URL" -tAc "select count(*) from posts"').stdout
    assert out.strip() == "2"


@pytest.mark.docker
def test_a_database_failure_during_up_undoes_the_container_started_beside_it(
        docker_demo: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    """The container and the database are made at the same time: when the database fails, the
    container (and network, worktree, branch, ports) made beside it are undone, and `up` retries."""
    repo = docker_demo
    toml = (repo / "sandbox.toml").read_text()
    (repo / "sandbox.toml").write_text(toml + 'image = "sandbox/postgres:no-such-tag"\n')
    res = cli(repo, "up", "x", check=3)
    assert "no-such-tag" in res.stderr and "build-images" in res.stderr
    sb = Sandbox.open(repo)
    rec = sb.record("x")
    assert rec.state == "broken"
    project = sb.config.project_id
    assert not docker_client.containers.list(all=True, filters={"label": [f"dev.sandbox.project={project}",
                                                                         "dev.sandbox.workspace=x"]})
    assert not [n for n in docker_client.networks.list(filters={"label": f"dev.sandbox.project={project}"})
                if (n.attrs.get("Labels") or {}).get("dev.sandbox.workspace") == "x"]
    assert not Path(rec.path).exists() and not sb.git.branch_exists("x")
    assert sb.registry.ports("x", "workspace") == [] and not sb.db.exists("x")
    (repo / "sandbox.toml").write_text(toml)
    cli(repo, "up", "x")
    assert sb.record("x").state == "ready"
    out = cli(repo, "exec", "x", "--", "sh", "-c", 'psql "$DATABASE_URL" -tAc "select count(*) from users"').stdout
    assert out.strip() == "3"


@pytest.mark.docker
def test_a_local_server_with_docker_workspaces_warns_even_when_quiet(
        demo_factory, docker_client, need_pg) -> None:  # type: ignore[no-untyped-def]
    """A host server listens on 127.0.0.1 only: the workspace is made, and `up -q` still says
    that its container has no address of the database (the host has one)."""
    repo = demo_factory(toml_for("template", "local", "docker"))
    res = cli(repo, "up", "w")                  # cli() passes -q
    assert "w: warning: no address of the database is known inside the container" in res.stderr
    assert "server = \"docker\"" in res.stderr
    assert "·" not in res.stderr, "only the warning passes -q, not the progress"
    env = json.loads(cli(repo, "env", "w", "--format", "json").stdout)
    assert env["PGHOST"] == "127.0.0.1" and env["DATABASE_URL"].startswith("postgresql://")
    assert cli(repo, "exec", "w", "--", "true").returncode == 0


@pytest.mark.docker
def test_sigkilled_up_on_docker_is_repaired_by_gc(docker_demo: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    """`up` makes the network, the worktree, the database container and the workspace container
    at overlapping times: killed anywhere in that, `gc` leaves no labelled container or network
    without a workspace that owns it, and the name works again."""
    repo = docker_demo
    sb = Sandbox.open(repo)
    project = sb.config.project_id

    def labelled(name: str) -> list[str]:
        flt = {"label": [f"dev.sandbox.project={project}", f"dev.sandbox.workspace={name}"]}
        return ([f"container {c.name}" for c in docker_client.containers.list(all=True, ignore_removed=True,
                                                                          filters=flt)]
                + [f"network {n.name}" for n in docker_client.networks.list(filters=flt)])

    repaired = 0   # kills that left Docker resources behind for gc
    for i, delay in enumerate([0.35, 0.5, 0.65, 0.85, 1.1]):
        name = f"k{i}"
        proc = subprocess.Popen([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), "up", name],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, **GIT_ENV}, start_new_session=True)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        repaired += bool(labelled(name))
        actions = json.loads(cli(repo, "gc", "--json").stdout)
        assert all(a["action"] != "kept" for a in actions), actions
        rec = sb.registry.get(name)
        assert rec is None or rec.state in ("ready", "broken"), rec
        if rec is None:
            assert labelled(name) == [], f"killed after {delay}s: left {labelled(name)}"
            assert not sb.db.exists(name) and sb.registry.ports(name, "workspace") == []
        assert json.loads(cli(repo, "gc", "--dry-run", "--json").stdout) == []
        cli(repo, "up", name)
        out = cli(repo, "exec", name, "--", "sh", "-c", 'psql "$DATABASE_URL" -tAc "select count(*) from users"')
        assert out.stdout.strip() == "3"
        cli(repo, "rm", name, "--delete-branch")
        assert labelled(name) == []
    assert repaired, "no kill landed while Docker resources were being made"
