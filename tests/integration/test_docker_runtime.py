"""DockerRuntime against a real engine, a real image and real git worktrees.

Needs the images from scripts/build-images. Runs the workspace as a non-root uid (1000 when
the tests run as root) to check that files written inside belong to that host user.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from conftest import free_port, service_missing

from sandbox.checks import OwnedResource
from sandbox.errors import ServiceUnavailable, WorkspaceError
from sandbox.runtime.base import (
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_WORKSPACE,
    WorkspaceSpec,
)
from sandbox.runtime.docker import DockerRuntime, connect, resource_name

pytestmark = pytest.mark.docker

WORKSPACE_IMAGE = os.environ.get("SANDBOX_WORKSPACE_IMAGE") or "sandbox/workspace:bookworm"
UID = 1000 if os.geteuid() == 0 else os.getuid()
GID = 1000 if os.geteuid() == 0 else os.getgid()
GIT_ENV = {"GIT_AUTHOR_NAME": "agent", "GIT_AUTHOR_EMAIL": "agent@example.com",
           "GIT_COMMITTER_NAME": "agent", "GIT_COMMITTER_EMAIL": "agent@example.com"}


def host_git(repo: Path, *args: str) -> str:
    # The repository belongs to UID, not to the test's user: tell git that this is fine.
    return subprocess.run(["git", "-c", "safe.directory=*", "-C", str(repo), *args],
                          check=True, capture_output=True, text=True).stdout


def port_block(size: int) -> list[int]:
    """``size`` ports that are free on 127.0.0.1 now."""
    ports: set[int] = set()
    while len(ports) < size:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture
def project(docker_client: docker.DockerClient) -> Iterator[str]:
    """A unique project id; whatever carries its label is removed afterwards."""
    pid = f"t{uuid.uuid4().hex[:10]}"
    yield pid
    selector = {"label": f"{LABEL_PROJECT}={pid}"}
    for c in docker_client.containers.list(all=True, filters=selector):
        c.remove(force=True, v=True)
    for n in docker_client.networks.list(filters=selector):
        n.remove()


@pytest.fixture
def workspace_image(docker_client: docker.DockerClient) -> str:
    try:
        docker_client.images.get(WORKSPACE_IMAGE)
    except docker.errors.ImageNotFound:
        service_missing(f"image {WORKSPACE_IMAGE} missing: run scripts/build-images")
    return WORKSPACE_IMAGE


@pytest.fixture
def runtime(docker_client: docker.DockerClient) -> DockerRuntime:
    return DockerRuntime(images=[WORKSPACE_IMAGE])


@pytest.fixture
def make_spec(git_repo: Path, tmp_path: Path, project: str, workspace_image: str) -> Callable[..., WorkspaceSpec]:
    """Builds a WorkspaceSpec over a real `git worktree add` of the fixture repository (not isolated)."""
    def make(name: str, ports: list[int] | None = None, **kw: object) -> WorkspaceSpec:
        worktree = tmp_path / "worktrees" / name
        subprocess.run(["git", "-c", "safe.directory=*", "-C", str(git_repo), "worktree", "add", "-q", "-b", f"ws/{name}",
                        str(worktree), "main"], check=True)
        if os.geteuid() == 0:   # the invoking user owns the checkout in real life
            subprocess.run(["chown", "-R", f"{UID}:{GID}", str(git_repo), str(worktree)], check=True)
        fields: dict[str, object] = {
            "project": project, "name": name, "worktree": worktree.resolve(),
            "git_common_dir": (git_repo / ".git").resolve(), "image": workspace_image,
            "env": {**GIT_ENV, "SANDBOX_WORKSPACE": name}, "ports": ports if ports is not None else port_block(3),
            "uid": UID, "gid": GID, "memory": "512m", "cpus": 1.0, "pids": 256, "labels": {"dev.sandbox.test": "1"},
            # a git worktree of the user's own (runtime tests); isolated repositories: tests/e2e, tests/security
            "isolated": False}
        fields.update(kw)
        return WorkspaceSpec(**fields)  # type: ignore[arg-type]
    return make


def run(runtime: DockerRuntime, spec: WorkspaceSpec, *argv: str, env: dict[str, str] | None = None
        ) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = runtime.exec(spec, list(argv), env=env, output=lines.append)
    return code, lines


def test_up_creates_a_labelled_hardened_container(runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec],
                                                  docker_client: docker.DockerClient, project: str) -> None:
    spec = make_spec("alpha")
    runtime.up(spec)

    assert runtime.status(project, "alpha") == "running"
    c = docker_client.containers.get(resource_name(project, "alpha"))
    assert c.name == f"sandbox-{project}-alpha"
    assert c.labels[LABEL_PROJECT] == project
    assert c.labels[LABEL_WORKSPACE] == "alpha"
    assert c.labels[LABEL_ROLE] == "workspace"
    assert c.labels["dev.sandbox.test"] == "1"

    host = c.attrs["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 256
    assert host["Memory"] == 512 * 1024 * 1024
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Init"] is True
    assert c.attrs["Config"]["User"] == f"{UID}:{GID}"
    assert c.attrs["Config"]["WorkingDir"] == str(spec.worktree)
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts[str(spec.worktree)]["Source"] == str(spec.worktree)
    assert mounts[str(spec.git_common_dir)]["Source"] == str(spec.git_common_dir)
    assert not any("docker.sock" in (m.get("Source") or "") + m["Destination"] for m in c.attrs["Mounts"])

    netname = resource_name(project, "alpha")
    assert list(c.attrs["NetworkSettings"]["Networks"]) == [netname]
    net = docker_client.networks.get(netname)
    assert net.attrs["Driver"] == "bridge"
    assert net.attrs["Labels"][LABEL_PROJECT] == project
    assert net.attrs["Labels"][LABEL_WORKSPACE] == "alpha"
    assert net.attrs["Labels"][LABEL_ROLE] == "network"

    # Inside: the host user's uid, no capabilities, a writable HOME.
    code, lines = run(runtime, spec, "sh", "-c", "id -u; id -g; grep CapEff /proc/self/status; echo $HOME; "
                                                  "touch $HOME/x && echo home-ok")
    assert code == 0, lines
    assert lines[0] == str(UID) and lines[1] == str(GID)
    assert lines[2].split()[1] == "0000000000000000"
    assert lines[3:] == ["/tmp", "home-ok"]


def test_ensure_network_is_idempotent(runtime: DockerRuntime, docker_client: docker.DockerClient,
                                      project: str) -> None:
    first = runtime.ensure_network(project, "net")
    second = runtime.ensure_network(project, "net")
    assert first == second == resource_name(project, "net")
    assert len([n for n in docker_client.networks.list(names=[first]) if n.name == first]) == 1


def test_git_works_inside_and_commits_land_on_the_host_branch(
        runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec], git_repo: Path) -> None:
    spec = make_spec("gitws")
    runtime.up(spec)

    code, lines = run(runtime, spec, "git", "status", "--short", "--branch")
    assert code == 0, lines
    assert lines[0].startswith("## ws/gitws")

    code, lines = run(runtime, spec, "sh", "-c",
                      "echo from-container > inside.txt && git add inside.txt && "
                      "git commit -q -m 'commit from the container' && git rev-parse HEAD")
    assert code == 0, lines
    sha = lines[-1]

    assert host_git(git_repo, "rev-parse", "ws/gitws").strip() == sha
    assert host_git(git_repo, "log", "-1", "--format=%s %an", "ws/gitws").strip() == \
        "commit from the container agent"
    written = spec.worktree / "inside.txt"
    assert written.read_text() == "from-container\n"
    assert written.stat().st_uid == UID
    assert written.stat().st_gid == GID
    # The worktree is clean on the host too: the index written inside is the real one.
    assert host_git(spec.worktree, "status", "--porcelain") == ""


def test_exec_passes_exit_codes_env_and_cwd(runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec]) -> None:
    spec = make_spec("execws")
    runtime.up(spec)

    assert runtime.exec(spec, ["sh", "-c", "exit 7"], output=lambda _line: None) == 7
    assert runtime.exec(spec, ["true"], output=lambda _line: None) == 0
    code, lines = run(runtime, spec, "sh", "-c", "pwd; echo \"$FOO $SANDBOX_WORKSPACE\"; sleep 0.2; "
                                                  "echo oops >&2; sleep 0.2; printf 'no newline'",
                      env={"FOO": "bar"})
    assert code == 0
    # stderr is merged in (its order against stdout is only as good as the pipes' timing)
    assert lines == [str(spec.worktree), "bar execws", "oops", "no newline"]
    code, lines = run(runtime, spec, "no-such-command")
    assert code in (126, 127)


def test_exec_without_output_streams_to_stdio(runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    spec = make_spec("stdiows")
    runtime.up(spec)
    code = runtime.exec(spec, ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"])
    assert code == 3
    captured = capsys.readouterr()
    assert captured.out == "to-out\n"
    assert captured.err == "to-err\n"


def test_interactive_exec_uses_the_cli_and_returns_the_code(
        runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec]) -> None:
    spec = make_spec("ttyws")
    runtime.up(spec)
    code = runtime.exec(spec, ["sh", "-c", 'test "$(pwd)" = "$WT" && test "$SECRET" = s3 && exit 5'],
                        env={"WT": str(spec.worktree), "SECRET": "s3"}, interactive=True)
    assert code == 5


def _serve_once(docker_client: docker.DockerClient, cname: str, port: int) -> None:
    """Start a tiny TCP server on 0.0.0.0:port inside the container that answers its port."""
    script = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              f"s.bind(('0.0.0.0', {port})); s.listen(1)\nc,_=s.accept(); c.sendall(b'{port}'); c.close()\n")
    exec_id = docker_client.api.exec_create(cname, ["python3", "-c", script])["Id"]
    docker_client.api.exec_start(exec_id, detach=True)


def _read_port(port: int) -> bytes:
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                data = s.recv(100)
                if data:
                    return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered on 127.0.0.1:{port}")
        time.sleep(0.2)


def test_port_blocks_are_published_one_to_one_on_localhost(
        runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec],
        docker_client: docker.DockerClient, project: str) -> None:
    block = port_block(6)
    a, b = make_spec("porta", ports=block[:3]), make_spec("portb", ports=block[3:])
    runtime.up(a)
    runtime.up(b)

    published: dict[str, set[int]] = {}
    for spec in (a, b):
        c = docker_client.containers.get(resource_name(project, spec.name))
        bindings = c.attrs["HostConfig"]["PortBindings"]
        assert set(bindings) == {f"{p}/tcp" for p in spec.ports}
        for key, binds in bindings.items():
            assert binds == [{"HostIp": "127.0.0.1", "HostPort": key.split("/")[0]}]
        published[spec.name] = {int(k.split("/")[0]) for k in bindings}
    assert published["porta"].isdisjoint(published["portb"])

    # Really reachable from the host: host port p reaches container port p.
    cname = resource_name(project, "portb")
    _serve_once(docker_client, cname, b.ports[1])
    assert _read_port(b.ports[1]) == str(b.ports[1]).encode()


def test_up_and_stop_are_idempotent(runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec],
                                    docker_client: docker.DockerClient, project: str) -> None:
    spec = make_spec("idem")
    runtime.up(spec)
    cid = docker_client.containers.get(resource_name(project, "idem")).id
    runtime.up(spec)
    assert runtime.status(project, "idem") == "running"

    runtime.stop(project, "idem")
    assert runtime.status(project, "idem") == "exited"
    runtime.stop(project, "idem")
    with pytest.raises(WorkspaceError, match="no running container"):
        runtime.exec(spec, ["true"], output=lambda _line: None)

    runtime.up(spec)
    assert runtime.status(project, "idem") == "running"
    assert docker_client.containers.get(resource_name(project, "idem")).id == cid
    assert runtime.exec(spec, ["test", "-f", "README.md"], output=lambda _line: None) == 0
    runtime.stop(project, "never-created")


def test_remove_cleans_container_and_network(runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec],
                                             docker_client: docker.DockerClient, project: str) -> None:
    spec = make_spec("gone")
    runtime.up(spec)
    # Something else attached to the workspace's network (say its database) must not block removal.
    name = resource_name(project, "gone")
    other = docker_client.containers.run(spec.image, ["sleep", "infinity"], detach=True, network=name,
                                         labels={LABEL_PROJECT: project}, init=True)
    runtime.remove(project, "gone")
    other.reload()
    assert other.status == "running"           # detached from the network, not removed

    assert runtime.status(project, "gone") == "none"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)
    assert not [n for n in docker_client.networks.list(names=[name]) if n.name == name]
    runtime.remove(project, "gone")            # missing pieces are fine
    assert spec.worktree.exists()              # the worktree is not the runtime's to remove


def test_owned_lists_and_remove_owned_removes(runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec],
                                              project: str) -> None:
    runtime.up(make_spec("own1"))
    runtime.ensure_network(project, "orphan")

    owned = runtime.owned(project)
    kinds = sorted((r.kind, r.workspace) for r in owned)
    assert kinds == [("container", "own1"), ("network", "orphan"), ("network", "own1")]
    assert runtime.owned(f"other{project}") == []

    for resource in sorted(owned, key=lambda r: r.kind):   # containers before their networks
        runtime.remove_owned(resource)
    assert runtime.owned(project) == []
    runtime.remove_owned(OwnedResource("container", "0" * 64, "own1"))   # already gone: fine


def test_missing_image_says_to_build_it(runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec],
                                        project: str) -> None:
    spec = make_spec("noimg", image="sandbox/no-such-image:never")
    with pytest.raises(ServiceUnavailable, match="scripts/build-images") as info:
        runtime.up(spec)
    assert info.value.exit_code == 3
    assert runtime.status(project, "noimg") == "none"


def test_a_foreign_container_with_the_name_is_refused(runtime: DockerRuntime, docker_client: docker.DockerClient,
                                                      project: str, workspace_image: str) -> None:
    name = resource_name(project, "taken")
    c = docker_client.containers.create(workspace_image, ["true"], name=name)
    try:
        with pytest.raises(WorkspaceError, match="not created by sandbox"):
            runtime.status(project, "taken")
    finally:
        c.remove(force=True)


def test_doctor_reports_engine_and_images(runtime: DockerRuntime, workspace_image: str) -> None:
    checks = {c.name: c for c in runtime.doctor()}
    assert checks["docker engine"].ok
    assert checks[f"image {workspace_image}"].ok
    missing = {c.name: c for c in DockerRuntime(images=["sandbox/no-such-image:never"]).doctor()}
    assert not missing["image sandbox/no-such-image:never"].ok
    assert missing["image sandbox/no-such-image:never"].fix == "run scripts/build-images"


def test_unreachable_engine_is_service_unavailable(tmp_path: Path) -> None:
    def factory() -> docker.DockerClient:
        return docker.DockerClient(base_url=f"unix://{tmp_path}/no-docker.sock", version="1.41")

    with pytest.raises(ServiceUnavailable, match="scripts/install-docker") as info:
        connect(factory)
    assert info.value.exit_code == 3
    assert isinstance(info.value.__cause__, Exception)

    runtime = DockerRuntime(factory)           # lazy: constructing never touches the engine
    with pytest.raises(ServiceUnavailable, match="install-docker"):
        runtime.status("p", "a")
    checks = runtime.doctor()
    assert checks[0].name == "docker engine" and not checks[0].ok
    assert checks[0].fix == "run scripts/install-docker"


def test_the_host_is_reachable_by_name(runtime: DockerRuntime, make_spec: Callable[..., WorkspaceSpec]) -> None:
    spec = make_spec("hostws")
    runtime.up(spec)
    code, lines = run(runtime, spec, "getent", "hosts", "host.docker.internal")
    assert code == 0, lines
