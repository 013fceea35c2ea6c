"""Workspace networks take /28 subnets from sandbox's own range: 60+ fit, none is shared,
even between processes, and removal gives them back."""

from __future__ import annotations

import ipaddress
import multiprocessing as mp
import secrets
from pathlib import Path

import pytest

from sandbox.runtime.docker import DockerRuntime, resource_name
from sandbox.runtime.subnets import SubnetPool

POOL = "10.214.0.0/20"          # 256 /28s, a range of its own


def _make(args: tuple[str, str, list[str]]) -> list[str]:
    state, project, names = args
    runtime = DockerRuntime(subnet_pool=SubnetPool(POOL, directory=Path(state)))
    return [str(runtime.ensure_network(project, n)) for n in names]


@pytest.mark.docker
def test_sixty_four_networks_from_four_processes_get_distinct_small_subnets(docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = f"net{secrets.token_hex(3)}"
    names = [f"w{i}" for i in range(64)]
    runtime = DockerRuntime(subnet_pool=SubnetPool(POOL, directory=tmp_path))
    try:
        with mp.get_context("fork").Pool(4) as pool:
            made = pool.map(_make, [(str(tmp_path), project, names[i::4]) for i in range(4)])
        assert sorted(n for batch in made for n in batch) == sorted(resource_name(project, n) for n in names)
        subnets = []
        for n in names:
            net = docker_client.networks.get(resource_name(project, n))
            config = net.attrs["IPAM"]["Config"]
            assert len(config) == 1
            subnets.append(ipaddress.IPv4Network(config[0]["Subnet"]))
        assert all(s.prefixlen == 28 and s.subnet_of(ipaddress.IPv4Network(POOL)) for s in subnets)
        assert len(set(subnets)) == 64
        for i, a in enumerate(subnets):
            assert not any(a.overlaps(b) for b in subnets[i + 1:])
        recorded = runtime.subnets.assigned()
        assert {recorded[resource_name(project, n)] for n in names} == {str(s) for s in subnets}
        # idempotent: asking again keeps the network and its subnet
        assert runtime.ensure_network(project, "w0") == resource_name(project, "w0")
        assert runtime.subnets.assigned()[resource_name(project, "w0")] == str(subnets[0])
    finally:
        for n in names:
            runtime.remove(project, n)
    assert not [n for n in docker_client.networks.list() if n.name.startswith(f"sandbox-{project}-")]
    assert not [k for k in runtime.subnets.assigned() if k.startswith(f"sandbox-{project}-")]


@pytest.mark.docker
def test_a_subnet_whose_network_vanished_is_taken_back(docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = f"net{secrets.token_hex(3)}"
    pool = SubnetPool("10.215.0.0/22", directory=tmp_path)
    runtime = DockerRuntime(subnet_pool=pool)
    try:
        runtime.ensure_network(project, "a")
        first = pool.assigned()[resource_name(project, "a")]
        docker_client.networks.get(resource_name(project, "a")).remove()   # behind sandbox's back
        runtime.ensure_network(project, "b")
        assert resource_name(project, "a") not in pool.assigned()
        assert pool.assigned()[resource_name(project, "b")] == first
    finally:
        runtime.remove(project, "a")
        runtime.remove(project, "b")


def test_an_exhausted_range_is_a_clear_error(tmp_path: Path) -> None:
    pool = SubnetPool("10.216.0.0/27", directory=tmp_path)      # two /28s
    for name, existing in (("a", set()), ("b", {"a"})):
        with pool.allocation(name, lambda: ([], existing)) as next_subnet:
            next_subnet()
    from sandbox.errors import WorkspaceError
    with pytest.raises(WorkspaceError, match="no free /28 subnet left"):
        with pool.allocation("c", lambda: ([], {"a", "b"})) as next_subnet:
            next_subnet()
    assert set(pool.assigned()) == {"a", "b"}
