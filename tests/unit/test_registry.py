"""The registry stays correct when several sandbox processes run at once."""

import multiprocessing as mp
from pathlib import Path

from sandbox.registry import Registry, WorkspaceRecord


def _allocate(args: tuple[str, str, int]) -> list[int]:
    state, owner, count = args
    return Registry(Path(state)).allocate(owner, "workspace", count, base=31000)


def _insert(args: tuple[str, str]) -> bool:
    state, name = args
    return Registry(Path(state)).insert(WorkspaceRecord(name=name, branch=name, path="/x", state="creating",
                                                        runtime="none"))


def test_concurrent_port_blocks_are_disjoint(tmp_path: Path) -> None:
    Registry(tmp_path, create=True)
    with mp.get_context("fork").Pool(8) as pool:
        blocks = pool.map(_allocate, [(str(tmp_path), f"ws{i}", 10) for i in range(24)])
    ports = [p for b in blocks for p in b]
    assert len(ports) == len(set(ports)) == 240
    for b in blocks:
        assert b == list(range(b[0], b[0] + 10))


def test_concurrent_insert_of_one_name_has_one_winner(tmp_path: Path) -> None:
    Registry(tmp_path, create=True)
    with mp.get_context("fork").Pool(8) as pool:
        results = pool.map(_insert, [(str(tmp_path), "same")] * 16)
    assert results.count(True) == 1


def test_allocation_is_idempotent_and_released(tmp_path: Path) -> None:
    r = Registry(tmp_path, create=True)
    a = r.allocate("a", "workspace", 5, base=32000)
    assert r.allocate("a", "workspace", 5, base=32000) == a
    b = r.allocate("b", "workspace", 5, base=32000)
    assert not set(a) & set(b)
    r.release("a")
    assert r.ports("a") == []
    assert r.allocate("c", "workspace", 5, base=32000) == a


def test_state_machine_and_meta(tmp_path: Path) -> None:
    r = Registry(tmp_path, create=True)
    r.insert(WorkspaceRecord(name="a", branch="a", path="/p", state="creating", runtime="none"))
    r.set_state("a", "broken", "setup failed")
    rec = r.get("a")
    assert rec is not None and rec.state == "broken" and rec.cause == "setup failed"
    r.set_state("a", "ready")
    assert r.get("a").state == "ready"  # type: ignore[union-attr]
    r.set_meta("k", "v")
    assert r.get_meta("k") == "v"
    r.delete("a")
    assert r.get("a") is None


def test_wal_mode(tmp_path: Path) -> None:
    import sqlite3
    Registry(tmp_path, create=True)
    conn = sqlite3.connect(tmp_path / "registry.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_projects_on_one_host_never_share_a_port(tmp_path: Path) -> None:
    import shutil

    from sandbox.registry import HostPorts
    host = HostPorts(tmp_path / "host")
    a = Registry(tmp_path / "a" / ".sandbox", host, create=True)
    b = Registry(tmp_path / "b" / ".sandbox", host, create=True)
    pa = a.allocate("ws", "db", 1, base=33000)
    a.release("other")  # a stopped workspace keeps its port...
    pb = b.allocate("ws", "db", 1, base=33000)
    assert pa != pb     # ...and another project does not get it
    assert a.allocate("ws", "db", 1, base=33000) == pa
    # a project deleted without deinit does not hold its ports forever
    shutil.rmtree(tmp_path / "a")
    c = Registry(tmp_path / "c" / ".sandbox", host, create=True)
    assert c.allocate("ws", "db", 1, base=33000) == pa


def test_a_registry_from_before_pid_start_is_upgraded_and_records_it(tmp_path: Path) -> None:
    import os
    import sqlite3

    from sandbox.host import process_start
    reg = Registry(tmp_path, create=True, timeout=5)
    reg.insert(WorkspaceRecord(name="a", branch="a", path="/x", state="ready", runtime="none"))
    with sqlite3.connect(tmp_path / "registry.db") as conn:   # as schema version 2 left it
        conn.execute("ALTER TABLE workspaces DROP COLUMN pid_start")
        conn.execute("PRAGMA user_version = 2")
    reg = Registry(tmp_path, timeout=5)
    rec = reg.get("a")
    assert rec is not None and rec.pid_start is None
    reg.set_state("a", "removing")
    rec = reg.get("a")
    assert rec is not None and (rec.pid, rec.pid_start) == (os.getpid(), process_start(os.getpid()))
    reg.set_state("a", "ready")
    rec = reg.get("a")
    assert rec is not None and rec.pid is None and rec.pid_start is None
