"""The compose stack's pure parts: naming, the rewrite of compose's resolution, and the checks
of what a workspace's compose files read and ask for (no Docker, no compose binary)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sandbox.compose import files, policy, rewrite
from sandbox.compose.files import UnsafeCompose
from sandbox.compose.rewrite import StackParams, project_name

# What `docker compose config --format json` prints for compose/example (abridged).
RESOLVED: dict[str, Any] = {
    "name": "whatever",
    "networks": {"default": {"name": "x_default"}},
    "services": {
        "db": {"image": "postgres:15", "ports": [{"target": 5432, "protocol": "tcp"}]},
        "redis": {"image": "redis:7", "ports": [{"target": 6379, "protocol": "tcp"}],
                  "networks": {"default": None}},
        "web": {"build": {"context": "/w/a", "dockerfile": "Dockerfile"}, "image": "acme/web:dev",
                "container_name": "acme-web",
                "depends_on": {"db": {"condition": "service_started"}, "redis": {"condition": "service_started"}},
                "environment": {"DATABASE_URL": "postgresql://postgres@db/app", "KEEP": "a$$b"},
                "ports": [{"target": 8000, "published": "8000", "protocol": "tcp"},
                          {"target": 9000, "protocol": "udp"}],
                "networks": {"default": {"aliases": ["www"]}}},
        "worker": {"build": {"context": "/w/a"}, "depends_on": ["db", "redis"], "links": ["db", "redis:cache"]},
    },
    "volumes": {"data": {"name": "x_data"}},
}


def params(**kw: Any) -> StackParams:
    base: dict[str, Any] = dict(project="p1", workspace="a", compose_project="sbx-demo-a", network="sandbox-p1-a",
                                env={"DATABASE_URL": "postgresql://u:pa$s@db:5432/d", "PGHOST": "db"},
                                replace={"db": "database"}, database_container="sbx-p1-db-a")
    base.update(kw)
    return StackParams(**base)


def test_project_names_are_valid_for_v1_and_v2_and_never_collide() -> None:
    assert project_name("demo", "a") == "sbx-demo-a"
    upper, lower = project_name("demo", "A"), project_name("demo", "a")
    assert upper != lower and upper.startswith("sbx-demo-a-")
    dotted = project_name("My.Project", "feat.x")
    assert dotted == dotted.lower() and all(c.isalnum() or c in "-_" for c in dotted)


def test_rewrite_drops_replaced_services_names_and_dependencies_on_them() -> None:
    out, _ = rewrite.rewrite(RESOLVED, params(), list(range(20010, 20020)))
    assert sorted(out["services"]) == ["redis", "web", "worker"]
    assert "name" not in out
    web, worker = out["services"]["web"], out["services"]["worker"]
    assert "container_name" not in web
    assert web["depends_on"] == {"redis": {"condition": "service_started"}}
    assert worker["depends_on"] == ["redis"] and worker["links"] == ["redis:cache"]


def test_rewrite_attaches_every_service_to_the_workspace_network_only() -> None:
    out, _ = rewrite.rewrite(RESOLVED, params(), list(range(20010, 20020)))
    assert out["networks"] == {"sandbox": {"external": True, "name": "sandbox-p1-a"}}
    assert out["services"]["web"]["networks"] == {"sandbox": {"aliases": ["web", "www"]}}
    assert out["services"]["redis"]["networks"] == {"sandbox": {"aliases": ["redis"]}}


def test_rewrite_injects_the_workspace_env_escaped_for_compose() -> None:
    out, _ = rewrite.rewrite(RESOLVED, params(), list(range(20010, 20020)))
    env = out["services"]["web"]["environment"]
    assert env["DATABASE_URL"] == "postgresql://u:pa$$s@db:5432/d"        # compose reads $$ as $
    assert env["KEEP"] == "a$$b" and env["PGHOST"] == "db"


def test_rewrite_publishes_ports_from_the_block_in_a_stable_order() -> None:
    out, mapping = rewrite.rewrite(RESOLVED, params(), [20010, 20011, 20012])
    assert [(m.service, m.target, m.protocol, m.host_port) for m in mapping] == [
        ("redis", 6379, "tcp", 20010), ("web", 8000, "tcp", 20011), ("web", 9000, "udp", 20012)]
    assert out["services"]["web"]["ports"] == ["127.0.0.1:20011:8000/tcp", "127.0.0.1:20012:9000/udp"]
    assert mapping[1].variable == "SANDBOX_SERVICE_WEB_8000" and mapping[1].url == "http://127.0.0.1:20011"
    assert mapping[2].variable == "SANDBOX_SERVICE_WEB_9000_UDP"
    reordered = {**RESOLVED, "services": dict(reversed(list(RESOLVED["services"].items())))}
    assert rewrite.rewrite(reordered, params(), [20010, 20011, 20012])[1] == mapping
    with pytest.raises(ValueError):
        rewrite.rewrite(RESOLVED, params(), [20010])


def test_rewrite_reads_v1_short_forms() -> None:
    v1 = {"version": "3.9", "services": {"web": {"image": "x", "ports": ["127.0.0.1:8000:8000", "9000/udp",
                                                                          {"target": 7000}],
                                                 "environment": ["A=1", "B"], "labels": ["x=y"]}}}
    out, mapping = rewrite.rewrite(v1, params(replace={}), [1, 2, 3], major=1)
    assert out["version"] == "3.9"
    assert [(m.target, m.protocol) for m in mapping] == [(8000, "tcp"), (9000, "udp"), (7000, "tcp")]
    web = out["services"]["web"]
    assert web["environment"]["A"] == "1" and web["labels"]["x"] == "y"


def test_rewrite_tags_built_images_per_workspace_and_labels_everything() -> None:
    out, _ = rewrite.rewrite(RESOLVED, params(), list(range(20010, 20020)))
    web = out["services"]["web"]
    assert web["image"] == "sbx-demo-a-web:sandbox"        # not the project's shared acme/web:dev
    labels = {"dev.sandbox.project": "p1", "dev.sandbox.workspace": "a", "dev.sandbox.role": "compose"}
    assert web["build"]["labels"] == labels and web["labels"] == labels
    assert out["services"]["redis"]["image"] == "redis:7"
    assert out["volumes"] == {"data": {"labels": labels}}


def test_rewrite_hardens_every_service() -> None:
    out, _ = rewrite.rewrite(RESOLVED, params(), list(range(20010, 20020)))
    for svc in out["services"].values():
        assert svc["cap_drop"] == ["ALL"] and "NET_RAW" not in svc["cap_add"]
        assert svc["security_opt"] == ["no-new-privileges:true"]
        assert svc["pids_limit"] == 1024 and svc["init"] is True


def test_a_replaced_service_of_another_name_answers_with_the_database() -> None:
    doc = {"services": {"postgres": {"image": "postgres"}, "web": {"image": "w", "depends_on": ["postgres"]}}}
    out, _ = rewrite.rewrite(doc, params(replace={"postgres": "database"}), [])
    assert out["services"]["web"]["external_links"] == ["sbx-p1-db-a:postgres"]
    assert out["services"]["web"]["depends_on"] == []


def test_services_selects_what_runs() -> None:
    out, mapping = rewrite.rewrite(RESOLVED, params(services=("redis",)), [20010])
    assert list(out["services"]) == ["redis"] and len(mapping) == 1


# -- what a workspace's compose files may read ------------------------------------------------------
def write(tree: Path, name: str, text: str) -> None:
    (tree / name).parent.mkdir(parents=True, exist_ok=True)
    (tree / name).write_text(text)


@pytest.mark.parametrize("body, key", [
    ("services:\n  w:\n    image: x\n    env_file: /etc/shadow\n", "services.w.env_file"),
    ("services:\n  w:\n    image: x\n    env_file: [../../secret.env]\n", "services.w.env_file"),
    ("services:\n  w:\n    image: x\n    env_file: ${HOME}/.env\n", "services.w.env_file"),
    ("services:\n  w:\n    extends: {file: /etc/compose.yaml, service: x}\n", "services.w.extends.file"),
    ("include:\n  - git@github.com:evil/x.git\n", "include"),
    ("include:\n  - oci://evil/x\n", "include"),
    ("services:\n  w:\n    build: {context: 'https://evil.example/x.git'}\n", "services.w.build.context"),
    ("services:\n  w:\n    build: {context: ., dockerfile: /etc/passwd}\n", "services.w.build.dockerfile"),
    ("secrets:\n  s:\n    file: /root/.ssh/id_rsa\n", "secrets.s.file"),
])
def test_paths_compose_would_read_outside_the_worktree_are_refused(tmp_path: Path, body: str, key: str) -> None:
    write(tmp_path, "compose.yaml", body)
    with pytest.raises(UnsafeCompose) as caught:
        files.check_files(tmp_path, ("compose.yaml",))
    assert caught.value.key == key
    assert "\n" not in str(caught.value) and key in str(caught.value)


def test_links_on_the_way_are_refused_and_nothing_is_followed(tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret.env"
    secret.write_text("TOKEN=host-secret\n")
    tree = tmp_path / "w"
    write(tree, "compose.yaml", "services:\n  w:\n    image: x\n    env_file: conf/app.env\n")
    (tree / "conf").symlink_to(secret.parent)
    with pytest.raises(UnsafeCompose, match="symbolic link"):
        files.check_files(tree, ("compose.yaml",))
    (tree / "conf").unlink()
    (tree / "conf").mkdir()
    (tree / "conf" / "app.env").symlink_to(secret)
    with pytest.raises(UnsafeCompose, match="symbolic link"):
        files.check_files(tree, ("compose.yaml",))
    os.unlink(tree / "conf" / "app.env")
    (tree / ".env").symlink_to(secret)
    with pytest.raises(UnsafeCompose, match="project .env"):
        files.check_files(tree, ("compose.yaml",))


def test_the_workspaces_env_file_may_not_steer_compose(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", "services: {}\n")
    write(tmp_path, ".env", "APP=1\nexport COMPOSE_ENV_FILES=/etc/shadow\n")
    with pytest.raises(UnsafeCompose) as caught:
        files.check_files(tmp_path, ("compose.yaml",))
    assert caught.value.key == "COMPOSE_ENV_FILES"
    write(tmp_path, ".env", "APP=1\n# DOCKER_HOST in a comment is fine\n")
    files.check_files(tmp_path, ("compose.yaml",))


def test_a_linked_compose_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "real.yaml", "services: {}\n")
    (tmp_path / "compose.yaml").symlink_to(tmp_path / "real.yaml")
    with pytest.raises(UnsafeCompose):
        files.check_files(tmp_path, ("compose.yaml",))


def test_included_and_extended_files_are_checked_too(tmp_path: Path) -> None:
    write(tmp_path, "compose.yaml", "include: [sub/more.yaml]\nservices:\n  w:\n    extends: {file: base.yaml, service: b}\n")
    write(tmp_path, "base.yaml", "services:\n  b:\n    image: x\n    env_file: ok.env\n")
    write(tmp_path, "sub/more.yaml", "services:\n  m:\n    image: x\n    env_file: ../../outside.env\n")
    with pytest.raises(UnsafeCompose) as caught:
        files.check_files(tmp_path, ("compose.yaml",))
    assert caught.value.file == "sub/more.yaml"
    write(tmp_path, "sub/more.yaml", "services:\n  m:\n    image: x\n    env_file: ../ok.env\n")
    files.check_files(tmp_path, ("compose.yaml",))


def test_default_files_follow_compose(tmp_path: Path) -> None:
    assert files.default_files(tmp_path) == ()
    write(tmp_path, "docker-compose.yml", "services: {}\n")
    assert files.default_files(tmp_path) == ("docker-compose.yml",)
    write(tmp_path, "compose.yaml", "services: {}\n")
    write(tmp_path, "compose.override.yaml", "services: {}\n")
    assert files.default_files(tmp_path) == ("compose.yaml", "compose.override.yaml")


# -- what a workspace's stack may ask of the engine ----------------------------------------------------
@pytest.mark.parametrize("svc, key", [
    ({"privileged": True}, "services.w.privileged"),
    ({"network_mode": "host"}, "services.w.network_mode"),
    ({"network_mode": "container:sandbox-p1-b"}, "services.w.network_mode"),
    ({"pid": "host"}, "services.w.pid"),
    ({"ipc": "host"}, "services.w.ipc"),
    ({"userns_mode": "host"}, "services.w.userns_mode"),
    ({"cap_add": ["SYS_ADMIN"]}, "services.w.cap_add"),
    ({"devices": ["/dev/kmsg:/dev/kmsg"]}, "services.w.devices"),
    ({"security_opt": ["seccomp:unconfined"]}, "services.w.security_opt"),
    ({"security_opt": ["apparmor=unconfined"]}, "services.w.security_opt"),
    ({"volumes": [{"type": "bind", "source": "/", "target": "/host"}]}, "services.w.volumes"),
    ({"volumes": [{"type": "bind", "source": "/var/run/docker.sock", "target": "/s"}]}, "services.w.volumes"),
    ({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}, "services.w.volumes"),       # v1's form
    ({"volumes": ["/etc:/host-etc:ro"]}, "services.w.volumes"),
    ({"volumes_from": ["container:sandbox-p1-b"]}, "services.w.volumes_from"),
    ({"external_links": ["sandbox-p1-b:b"]}, "services.w.external_links"),
    ({"build": {"context": ".", "network": "host"}}, "services.w.build.network"),
    ({"build": {"context": ".", "ssh": ["default"]}}, "services.w.build.ssh"),
    ({"use_api_socket": True}, "services.w.use_api_socket"),
    ({"provider": {"type": "evil", "options": {}}}, "services.w.provider"),
])
def test_what_reaches_the_host_is_refused_naming_the_key(tmp_path: Path, svc: dict[str, Any], key: str) -> None:
    doc = {"services": {"w": {"image": "x", **svc}}}
    with pytest.raises(UnsafeCompose) as caught:
        policy.check(doc, tmp_path, source="compose.yaml")
    assert caught.value.key == key and str(caught.value).startswith(f"compose.yaml: {key}: refused")
    allowed = key.removeprefix("services.w.").split(".")[0]
    if allowed not in ("volumes", "build"):
        policy.check(doc, tmp_path, allow=[allowed])            # main's sandbox.toml may allow it


def test_binds_inside_the_worktree_pass_unless_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    ok = {"services": {"w": {"image": "x", "volumes": [
        {"type": "bind", "source": str(tmp_path / "src"), "target": "/app"}, f"{tmp_path}:/w",
        {"type": "volume", "source": "data", "target": "/data"}]}}}
    policy.check(ok, tmp_path)
    (tmp_path / "up").symlink_to("/")
    bad = {"services": {"w": {"image": "x", "volumes": [f"{tmp_path}/up/etc:/e"]}}}
    with pytest.raises(UnsafeCompose, match="symbolic link"):
        policy.check(bad, tmp_path)


@pytest.mark.parametrize("doc, key", [
    ({"volumes": {"v": {"driver_opts": {"type": "none", "o": "bind", "device": "/"}}}}, "volumes.v.driver_opts"),
    ({"volumes": {"v": {"external": True}}}, "volumes.v.external"),
    ({"secrets": {"s": {"file": "/etc/shadow"}}}, "secrets.s.file"),
])
def test_top_level_objects_stay_the_workspaces_own(tmp_path: Path, doc: dict[str, Any], key: str) -> None:
    with pytest.raises(UnsafeCompose) as caught:
        policy.check({"services": {}, **doc}, tmp_path)
    assert caught.value.key == key


# -- compose/server/compose.yaml: the shared server, as sandbox runs it -----------------------------------
def test_the_shared_server_compose_file_is_the_server_sandbox_runs() -> None:
    import yaml

    from sandbox.config import DEFAULT_POSTGRES_IMAGE
    from sandbox.databases.cluster import DB_HARDENING, SANDBOX_SETTINGS
    from sandbox.databases.factory import SHARED_SETTINGS

    doc = yaml.safe_load((Path(__file__).parents[2] / "compose" / "server" / "compose.yaml").read_text())
    assert "name" not in doc                                   # compose v1 refuses a top-level name
    svc = doc["services"]["postgres"]
    args = svc["command"]
    assert args[0] == "postgres" and args[1::2] == ["-c"] * ((len(args) - 1) // 2)
    settings = dict(a.split("=", 1) for a in args[2::2])
    assert settings == {**SANDBOX_SETTINGS, **SHARED_SETTINGS, "listen_addresses": "*"}
    assert svc["image"] == "${SANDBOX_POSTGRES_IMAGE:-" + DEFAULT_POSTGRES_IMAGE + "}"
    assert svc["environment"]["PGDATA"] == "/sandbox/data"
    for key, value in DB_HARDENING.items():
        assert svc[key] == value, key
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"])


def test_the_lifecycle_hooks_read_the_recorded_stack(tmp_path: Path) -> None:
    """``ls`` and ``env`` show the stack recorded under .sandbox/compose/NAME.json; a workspace
    without a container runs no stack even with compose files."""
    import json

    from sandbox.compose import StackInfo
    from sandbox.compose.rewrite import PortMapping
    from sandbox.testing import fake_sandbox

    sb = fake_sandbox(tmp_path)
    (sb.config.root / "compose.yaml").write_text("services:\n  web:\n    image: busybox\n")
    [result] = sb.up(["a"])
    assert result.ok and not (sb.config.state_dir / "compose" / "a.json").exists()
    assert [row.compose for row in sb.ls()] == [None]

    info = StackInfo("a", "sbx-demo-a", "compose v2", str(sb.config.state_dir / "compose" / "a.yml"),
                     ["web"], [], [PortMapping("web", 8000, "tcp", 20012)])
    (sb.config.state_dir / "compose").mkdir()
    (sb.config.state_dir / "compose" / "a.json").write_text(json.dumps(info.to_json()))
    assert sb.ls()[0].to_json()["compose"]["ports"][0]["host_port"] == 20012
    assert sb.env("a")[PortMapping("web", 8000, "tcp", 20012).variable] == "http://127.0.0.1:20012"
