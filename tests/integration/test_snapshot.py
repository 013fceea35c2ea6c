"""The snapshot strategy against real PostgreSQL clusters on a real loop-mounted btrfs pool.

Numbers (clone time, ready time, idle memory, clone disk usage) are printed; run with
``-s`` to see them. Only generous bounds are asserted, never timings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sandbox.checks import OwnedResource
from sandbox.config import DatabaseConfig
from sandbox.databases.base import BackendContext, ConnInfo
from sandbox.databases.cluster import LocalCluster
from sandbox.databases.snapshot import SnapshotStrategy
from sandbox.databases.storage import Storage, provision_pool, unmount_pool
from sandbox.errors import DatabaseError, UsageError
from tests.conftest import free_port, pg_bin_dir, service_missing
from tests.integration.backends import FakePorts, q

SEED = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 1000) g;
"""


def _stop_all_clusters(root: Path) -> None:
    for pid_file in root.rglob("postmaster.pid"):
        LocalCluster(pid_file.parent, 0, password="").stop(mode="immediate")


@pytest.fixture(scope="module")
def btrfs_mount() -> Iterator[Path]:
    """A btrfs loop mount under a directory the postgres user can traverse."""
    if os.geteuid() != 0:
        service_missing("the snapshot strategy tests loop-mount btrfs: run as root")
    if pg_bin_dir() is None:
        service_missing("PostgreSQL binaries not found (apt-get install postgresql-15)")
    base = Path(tempfile.mkdtemp(prefix="sbx-snap-"))
    os.chmod(base, 0o755)
    mount = base / "mnt"
    try:
        provision_pool(mount, "4G", image=base / "pool.img")
        yield mount
    finally:
        _stop_all_clusters(mount)
        unmount_pool(mount)
        shutil.rmtree(base, ignore_errors=True)


def make_strategy(mount: Path, key: str, server_kind: str = "local", docker: Any = None,
                  image: str | None = None) -> SnapshotStrategy:
    repo = mount / key / "repo"
    state = repo / ".sandbox"
    state.mkdir(parents=True, exist_ok=True)
    events: list[str] = []
    ctx = BackendContext(project_id="t0c0ffee", state_dir=state,
                         config=DatabaseConfig(pool=".sandbox/pool", bin_dir=str(pg_bin_dir()),
                                               image=image or DatabaseConfig().image),
                         ports=FakePorts(), progress=events.append, docker=docker)
    storage = Storage("btrfs", state / "pool")
    s = SnapshotStrategy(ctx, storage, server_kind)
    s.events = events  # type: ignore[attr-defined]
    return s


def seed(conn: ConnInfo) -> None:
    with psycopg.connect(**conn.kwargs(), autocommit=True) as c:
        c.execute(SEED)


@pytest.fixture(scope="module")
def strategy(btrfs_mount: Path) -> Iterator[SnapshotStrategy]:
    s = make_strategy(btrfs_mount, "main")
    t0 = time.perf_counter()
    s.build_baseline(seed)
    print(f"\n[numbers] baseline build (initdb + seed): {time.perf_counter() - t0:.2f}s")
    try:
        yield s
    finally:
        _cleanup(s)


def _cleanup(s: SnapshotStrategy) -> None:
    ws_root = s.pool / "ws"
    for d in list(ws_root.iterdir()) if ws_root.is_dir() else []:
        if not d.name.startswith("."):
            s.drop(d.name)
    for r in s.owned():
        if r.kind != "baseline":
            s.remove_owned(r)
    _stop_all_clusters(s.pool)


# -- behaviour ------------------------------------------------------------------------------


def test_clone_has_baseline_data_and_a_non_superuser_owner(strategy: SnapshotStrategy) -> None:
    t0 = time.perf_counter()
    a = strategy.create("a")
    total = time.perf_counter() - t0
    print(f"\n[numbers] create (clone + start + role): {total * 1000:.0f} ms")
    assert a.dbname == "app" and a.user != "postgres"
    assert q(a, "SELECT count(*) FROM items") == [(1000,)]
    assert q(a, "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user") == [(False, False)]
    # the workspace role owns the app's objects: it can migrate
    q(a, "ALTER TABLE items ADD COLUMN price numeric")
    q(a, "CREATE INDEX ON items (name)")
    q(a, "CREATE TABLE a_only (x int)")
    assert strategy.exists("a") and not strategy.exists("nope")
    assert strategy.info("a") == a
    # idempotent: create again just returns it
    assert strategy.create("a") == a
    # the password is in a 0600 file, and never in repr
    secret = strategy.ctx.state_dir / "secrets" / "snapshot-ws-a.password"
    assert secret.stat().st_mode & 0o777 == 0o600 and a.password not in repr(a)


def test_planned_info_is_what_create_returns(strategy: SnapshotStrategy) -> None:
    planned = strategy.planned("pl-a")
    assert not strategy.exists("pl-a")
    try:
        info = strategy.create("pl-a")
        assert info.env() == planned.env()
        assert q(info, "SELECT current_user") == [(planned.user,)]
    finally:
        strategy.drop("pl-a")


def test_writes_are_isolated(strategy: SnapshotStrategy) -> None:
    a = strategy.create("iso-a")
    b = strategy.create("iso-b")
    assert a.port != b.port
    q(a, "DELETE FROM items WHERE id > 10")
    q(a, "ALTER TABLE items RENAME COLUMN name TO title")
    q(a, "CREATE TABLE secret_a (x int)")
    assert q(b, "SELECT count(*) FROM items") == [(1000,)]
    assert q(b, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'title'") == [(0,)]
    assert q(b, "SELECT to_regclass('secret_a')") == [(None,)]
    base = strategy.baseline()
    assert q(base, "SELECT count(*) FROM items") == [(1000,)]
    assert q(base, "SELECT to_regclass('secret_a')") == [(None,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        q(base, "CREATE TABLE nope (x int)")


def test_credentials_do_not_open_another_workspace(strategy: SnapshotStrategy) -> None:
    a = strategy.create("cred-a")
    b = strategy.create("cred-b")
    assert a.password != b.password
    with pytest.raises(psycopg.OperationalError):
        q(ConnInfo(host=b.host, port=b.port, user=a.user, password=a.password, dbname=b.dbname), "SELECT 1")
    with pytest.raises(psycopg.OperationalError):       # B's user name with A's password
        q(ConnInfo(host=b.host, port=b.port, user=b.user, password=a.password, dbname=b.dbname), "SELECT 1")


def test_reset_restores_the_baseline_and_keeps_credentials(strategy: SnapshotStrategy) -> None:
    a = strategy.create("reset-a")
    q(a, "DROP TABLE items")
    again = strategy.reset("reset-a")
    assert again == a                                    # same port, role and password
    assert q(a, "SELECT count(*) FROM items") == [(1000,)]


def test_stop_and_start(strategy: SnapshotStrategy) -> None:
    a = strategy.create("stop-a")
    q(a, "CREATE TABLE kept (x int)")
    strategy.stop("stop-a")
    with pytest.raises(psycopg.OperationalError):
        q(a, "SELECT 1")
    strategy.start("stop-a")
    assert q(a, "SELECT to_regclass('kept') IS NOT NULL") == [(True,)]


def test_checkpoint_round_trip(strategy: SnapshotStrategy) -> None:
    a = strategy.create("ck-a")
    q(a, "INSERT INTO items (name) VALUES ('before')")
    info = strategy.checkpoint("ck-a", "one")
    assert info.label == "one" and info.size_bytes is not None
    q(a, "INSERT INTO items (name) VALUES ('after')")
    q(a, "DROP INDEX IF EXISTS items_name_idx")
    strategy.restore("ck-a", "one")
    assert q(a, "SELECT name FROM items WHERE name IN ('before', 'after')") == [("before",)]
    assert [c.label for c in strategy.checkpoints("ck-a")] == ["one"]
    # the same label again replaces it
    q(a, "INSERT INTO items (name) VALUES ('second')")
    strategy.checkpoint("ck-a", "one")
    strategy.restore("ck-a", "one")
    assert q(a, "SELECT count(*) FROM items WHERE name = 'second'") == [(1,)]
    with pytest.raises(UsageError):
        strategy.restore("ck-a", "missing")
    with pytest.raises(UsageError):
        strategy.checkpoint("ck-a", "../escape")


def test_checkpoint_of_a_stopped_workspace(strategy: SnapshotStrategy) -> None:
    a = strategy.create("ck-stopped")
    q(a, "CREATE TABLE marker (x int)")
    strategy.stop("ck-stopped")
    strategy.checkpoint("ck-stopped", "cold")
    strategy.restore("ck-stopped", "cold")
    assert q(a, "SELECT to_regclass('marker') IS NOT NULL") == [(True,)]


def test_clone_under_write_load_is_consistent(strategy: SnapshotStrategy) -> None:
    """Atomic snapshot of a running cluster while a writer commits: the clone recovers."""
    a = strategy.create("load-a")
    q(a, "CREATE TABLE ledger (id bigserial PRIMARY KEY, payload text);"
         "CREATE TABLE counter (n bigint NOT NULL); INSERT INTO counter VALUES (0)")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with psycopg.connect(**a.kwargs()) as c:
                while not stop.is_set():
                    with c.transaction():
                        c.execute("INSERT INTO ledger (payload) SELECT repeat('x', 500) FROM generate_series(1, 20)")
                        c.execute("UPDATE counter SET n = n + 20")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.5)
        strategy.checkpoint("load-a", "hot1")
        time.sleep(0.2)
        strategy.checkpoint("load-a", "hot2")
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    live_rows = q(a, "SELECT count(*) FROM ledger")[0][0]
    assert live_rows > 0
    for label in ("hot1", "hot2"):
        strategy.restore("load-a", label)
        (rows, n), = q(a, "SELECT (SELECT count(*) FROM ledger), (SELECT n FROM counter)")
        assert rows == n and 0 < rows <= live_rows, (label, rows, n)
        assert q(a, "SELECT count(*) FROM ledger WHERE length(payload) <> 500") == [(0,)]
        q(a, "SET enable_seqscan = off; SELECT count(*) FROM ledger WHERE id > 0")
    # the baseline never saw any of it
    assert q(strategy.baseline(), "SELECT to_regclass('ledger')") == [(None,)]


def test_concurrent_creates_and_idle_memory(strategy: SnapshotStrategy) -> None:
    names = [f"par{i}" for i in range(8)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(strategy.create, names))
    print(f"\n[numbers] 8 concurrent creates: {time.perf_counter() - t0:.2f}s")
    assert len({i.port for i in infos}) == 8
    for name, info in zip(names, infos):
        q(info, f'CREATE TABLE "only_{name}" (x int)')
    for name, info in zip(names, infos):
        tables = {r[0] for r in q(info, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'only_%'")}
        assert tables == {f"only_{name}"}
    # idle memory of one workspace cluster
    time.sleep(1.0)
    cluster = strategy._ws_cluster("par0")
    pids = cluster.pids()
    assert len(pids) >= 3
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
    postmaster_rss = next(int(line.split()[1]) * 1024 for line in
                          Path(f"/proc/{pids[0]}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    print(f"[numbers] idle cluster: {len(pids)} processes, PSS {pss / 2**20:.1f} MB, postmaster RSS "
          f"{postmaster_rss / 2**20:.1f} MB, summed RSS {rss / 2**20:.1f} MB (shared pages counted per process)")
    assert pss < 64 * 2**20 and rss < 2 * 64 * 2**20     # generous: the target is 64 MB
    usage = strategy.storage.usage(strategy.pool / "ws" / "par1")
    print(f"[numbers] disk owned by a lightly used clone: {usage} bytes")
    for name in names:
        strategy.drop(name)
    assert not any(strategy.exists(n) for n in names)


def test_clone_and_ready_times(strategy: SnapshotStrategy) -> None:
    """Measures the two halves of create (printed, not asserted)."""
    s = strategy
    t0 = time.perf_counter()
    s._clone_baseline(s.pool / "ws" / "timing")
    t1 = time.perf_counter()
    s._port("timing")
    cluster = s._ws_cluster("timing")
    cluster.ensure_running()
    t2 = time.perf_counter()
    print(f"\n[numbers] clone {1000 * (t1 - t0):.0f} ms, postgres ready {1000 * (t2 - t1):.0f} ms; "
          f"untouched clone owns {s.storage.usage(s.pool / 'ws' / 'timing')} bytes")
    s.drop("timing")


def test_drop_is_complete_and_missing_is_fine(strategy: SnapshotStrategy) -> None:
    a = strategy.create("drop-a")
    strategy.checkpoint("drop-a", "c")
    strategy.drop("drop-a")
    strategy.drop("drop-a")
    assert not strategy.exists("drop-a")
    assert not (strategy.pool / "ckpt" / "drop-a").exists()
    assert not (strategy.ctx.state_dir / "secrets" / "snapshot-ws-drop-a.password").exists()
    assert ("drop-a", "db") not in strategy.ctx.ports.held  # type: ignore[attr-defined]
    with pytest.raises(psycopg.OperationalError):
        q(a, "SELECT 1")
    assert all(r.workspace != "drop-a" for r in strategy.owned())


def test_scratch_is_removed_on_exit(strategy: SnapshotStrategy) -> None:
    with strategy.scratch("gate") as c:
        assert q(c, "SELECT count(*) FROM items") == [(1000,)]
        q(c, "CREATE TABLE gate_only (x int)")
        assert any(r.id.startswith(str(strategy.pool / "scratch")) for r in strategy.owned()) is False
    assert not any((strategy.pool / "scratch").iterdir())
    with pytest.raises(psycopg.OperationalError):
        q(c, "SELECT 1")


def test_crash_leftovers_are_owned_and_removed(strategy: SnapshotStrategy) -> None:
    s = strategy
    # a create killed after cloning, with its cluster already running
    ghost = s.storage.clone(s.baseline_dir, s.pool / "ws" / ".new-ghost")
    (ghost / "baseline.json").unlink()
    ghost_cluster = s._cluster(ghost, free_port(), "ghost")
    ghost_cluster.ensure_running()
    # a baseline build killed half-way, a checkpoint and a scratch gate killed mid-way
    s.storage.clone(s.baseline_dir, s.pool / "baseline.new")
    s.storage.clone(s.baseline_dir, s.pool / "scratch" / "gate-dead01")
    a = s.create("crash-a")
    s.storage.clone(s._ws_dir("crash-a"), s.pool / "ckpt" / "crash-a" / ".new-x")
    # a reset killed after the swap: the old volume waits next to the new one
    s.storage.clone(s.baseline_dir, s._ws_home("crash-a") / ".new-db")
    leftovers = {r.id for r in s.owned() if r.kind == "leftover"}
    assert leftovers == {str(ghost), str(s.pool / "baseline.new"), str(s.pool / "scratch" / "gate-dead01"),
                         str(s.pool / "ckpt" / "crash-a" / ".new-x"), str(s._ws_home("crash-a") / ".new-db")}
    for r in s.owned():
        if r.kind == "leftover":
            s.remove_owned(r)
    assert not ghost.exists() and not ghost_cluster.is_running()
    assert not any(r.kind == "leftover" for r in s.owned())
    # the baseline and the other workspace are untouched
    with pytest.raises(DatabaseError):
        s.remove_owned(OwnedResource("baseline", str(s.baseline_dir), None))
    assert q(a, "SELECT count(*) FROM items") == [(1000,)]
    assert s.has_baseline()
    # a workspace volume the registry does not know: remove_owned drops it all
    vol = next(r for r in s.owned() if r.kind == "volume" and r.workspace == "crash-a")
    s.remove_owned(vol)
    assert not s.exists("crash-a")


def test_failed_build_keeps_the_old_baseline(btrfs_mount: Path) -> None:
    s = make_strategy(btrfs_mount, "failing")
    s.build_baseline(seed)
    gen = s._baseline_generation(s.baseline_dir)

    def broken(conn: ConnInfo) -> None:
        q(conn, "CREATE TABLE half_done (x int)")
        raise RuntimeError("migration 42 failed")

    with pytest.raises(RuntimeError):
        s.build_baseline(broken)
    with pytest.raises(RuntimeError):
        s.update_baseline(broken)
    assert s._baseline_generation(s.baseline_dir) == gen
    assert not (s.pool / "baseline.new").exists()
    _cleanup(s)


def test_update_baseline_reaches_new_and_reset_workspaces(btrfs_mount: Path) -> None:
    s = make_strategy(btrfs_mount, "update")
    s.build_baseline(seed)
    old = s.create("old")

    def migrate(conn: ConnInfo) -> None:
        with psycopg.connect(**conn.kwargs(), autocommit=True) as c:
            c.execute("CREATE TABLE orders (id int PRIMARY KEY, item int REFERENCES items)")

    s.update_baseline(migrate)
    new = s.create("new")
    assert q(new, "SELECT to_regclass('orders') IS NOT NULL") == [(True,)]
    q(new, "INSERT INTO orders VALUES (1, 1)")                # owned by the workspace role
    assert q(old, "SELECT to_regclass('orders')") == [(None,)]
    s.reset("old")
    assert q(old, "SELECT to_regclass('orders') IS NOT NULL") == [(True,)]
    assert q(s.baseline(), "SELECT to_regclass('orders') IS NOT NULL") == [(True,)]
    _cleanup(s)


@pytest.mark.postgres
def test_import_plain_and_custom_dumps(btrfs_mount: Path, local_pg: Any, tmp_path: Path) -> None:
    s = make_strategy(btrfs_mount, "import")
    plain = tmp_path / "dump.sql"
    plain.write_text("CREATE TABLE imported (id int PRIMARY KEY, v text);\n"
                     "COPY imported (id, v) FROM stdin;\n1\tone\n2\ttwo\n\\.\n")
    s.import_baseline(plain)
    with s.scratch("imp") as c:
        assert q(c, "SELECT count(*) FROM imported") == [(2,)]
        q(c, "ALTER TABLE imported ADD COLUMN w int")            # owned by the workspace role
    # a custom-format dump made by pg_dump from another server
    with psycopg.connect(local_pg.url(), autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS from_custom; CREATE TABLE from_custom (id int PRIMARY KEY);"
                  "INSERT INTO from_custom SELECT generate_series(1, 42)")
    custom = tmp_path / "dump.custom"
    subprocess.run([str(pg_bin_dir() / "pg_dump"), "-Fc", "-f", str(custom), "-d", local_pg.url()], check=True)
    s.import_baseline(custom)
    ws = s.create("imported")
    assert q(ws, "SELECT count(*) FROM from_custom") == [(42,)]
    assert q(ws, "SELECT to_regclass('imported')") == [(None,)]
    assert q(ws, "SELECT tableowner FROM pg_tables WHERE tablename = 'from_custom'") == [(ws.user,)]
    # a broken dump fails and keeps the baseline
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE t1 (x int);\nTHIS IS NOT SQL;\n")
    with pytest.raises(DatabaseError):
        s.import_baseline(bad)
    with s.scratch("imp2") as c:
        assert q(c, "SELECT count(*) FROM from_custom") == [(42,)]
    _cleanup(s)


def test_doctor(strategy: SnapshotStrategy) -> None:
    checks = {c.name: c for c in strategy.doctor()}
    assert checks["storage"].ok and "btrfs" in checks["storage"].detail
    assert checks["baseline"].ok and checks["postgres binaries"].ok


@pytest.mark.docker
def test_docker_server(btrfs_mount: Path, docker_client: Any) -> None:
    import docker.errors

    image = os.environ.get("SANDBOX_POSTGRES_IMAGE") or DatabaseConfig().image
    try:
        supervises = docker_client.images.get(image).labels.get("dev.sandbox.supervise") == "1"
    except docker.errors.ImageNotFound:
        service_missing(f"image {image} is not built (scripts/build-images)")
    s = make_strategy(btrfs_mount, "docker", server_kind="docker", docker=lambda: docker_client, image=image)
    network = docker_client.networks.create("sbx-t0c0ffee-test-net", labels={"dev.sandbox.project": "t0c0ffee"})
    try:
        s.build_baseline(seed)
        planned = s.planned("dk-a", network=network.name)
        a = s.create("dk-a", network=network.name)
        b = s.create("dk-b")
        assert (a.container_host, a.container_port) == ("db", 5432)
        assert planned.env(container=True) == a.env(container=True)   # known before the clone existed
        # made on the workspace's network (alias db), not connected to it afterwards
        nets = docker_client.containers.get("sbx-t0c0ffee-db-dk-a").attrs["NetworkSettings"]["Networks"]
        assert "db" in (nets[network.name]["Aliases"] or [])
        s.stop("dk-a")
        s.start("dk-a")          # no network given: the one it was made on is remembered
        nets = docker_client.containers.get("sbx-t0c0ffee-db-dk-a").attrs["NetworkSettings"]["Networks"]
        assert network.name in nets
        q(a, "CREATE TABLE only_a (x int)")
        assert q(b, "SELECT to_regclass('only_a')") == [(None,)]
        assert q(b, "SELECT count(*) FROM items") == [(1000,)]
        c = docker_client.containers.get("sbx-t0c0ffee-db-dk-a")
        assert c.labels["dev.sandbox.workspace"] == "dk-a" and c.labels["dev.sandbox.role"] == "database"
        assert c.attrs["HostConfig"]["PortBindings"]["5432/tcp"][0]["HostIp"] == "127.0.0.1"
        s.checkpoint("dk-a", "c1")
        q(a, "DROP TABLE only_a")
        s.restore("dk-a", "c1", network=network.name)
        assert q(a, "SELECT to_regclass('only_a') IS NOT NULL") == [(True,)]
        # A supervised container outlives its data: reset and restore swap the volume under it.
        after = docker_client.containers.get("sbx-t0c0ffee-db-dk-a")
        assert (after.id == c.id) == supervises
        assert network.name in after.attrs["NetworkSettings"]["Networks"]
        q(a, "INSERT INTO items (name) VALUES ('extra')")
        assert s.reset("dk-a", network=network.name) == a
        assert q(a, "SELECT count(*), to_regclass('only_a') FROM items") == [(1000, None)]
        assert (docker_client.containers.get("sbx-t0c0ffee-db-dk-a").id == c.id) == supervises
        assert [r.kind for r in s.owned() if r.kind == "leftover"] == []
        if supervises:
            # a reset killed while PostgreSQL was held down: the next start lets it up again
            (s._ws_home("dk-a") / ".hold").touch()
            docker_client.containers.get("sbx-t0c0ffee-db-dk-a").kill(signal="SIGUSR1")
            deadline = time.monotonic() + 30
            while (s._ws_dir("dk-a") / "data" / "postmaster.pid").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            s.start("dk-a", network=network.name)
            assert q(a, "SELECT count(*) FROM items") == [(1000,)]
            assert not (s._ws_home("dk-a") / ".hold").exists()
    finally:
        for name in ("dk-a", "dk-b"):
            s.drop(name)
        _cleanup(s)
        network.remove()
    assert not docker_client.containers.list(all=True, filters={"label": "dev.sandbox.project=t0c0ffee"})


_KILLER = """
import os, signal, sys
from pathlib import Path
from sandbox.config import DatabaseConfig
from sandbox.databases.base import BackendContext
from sandbox.databases.snapshot import SnapshotStrategy
from sandbox.databases.storage import Storage
from tests.integration.backends import FakePorts, q

state, bin_dir, step, op = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

def progress(msg):
    if step in msg:
        os.kill(os.getpid(), signal.SIGKILL)

ctx = BackendContext(project_id="t0c0ffee", state_dir=state, ports=FakePorts(), progress=progress,
                     config=DatabaseConfig(pool=".sandbox/pool", bin_dir=bin_dir))
s = SnapshotStrategy(ctx, Storage("btrfs", state / "pool"), "local")
if op == "create":
    s.create("victim")
elif op == "reset":
    s.reset("victim")
else:
    s.update_baseline(lambda conn: q(conn, "CREATE TABLE v2 (x int)"))
"""


@pytest.mark.parametrize("op, step", [("create", "starting the database"),
                                      ("reset", "resetting"),
                                      ("update", "sealing the baseline")])
def test_sigkill_mid_operation_leaves_cleanable_state(btrfs_mount: Path, op: str, step: str) -> None:
    s = make_strategy(btrfs_mount, f"kill-{op}")
    if not s.has_baseline():
        s.build_baseline(seed)
    other = s.create("bystander")
    if op == "reset":
        s.create("victim")
    gen = s._baseline_generation(s.baseline_dir)
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(s.ctx.state_dir), str(pg_bin_dir()), step, op],
                          check=False, cwd=Path(__file__).parents[2], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    # whatever was left is either a usable workspace or an owned leftover; gc can clean it
    if op == "update":
        left = [r for r in s.owned() if r.kind == "leftover"]
        assert [r.id for r in left] == [str(s.pool / "baseline.new")]
        for r in left:
            s.remove_owned(r)
        assert not (s.pool / "baseline.new").exists()
    else:
        assert s.create("victim")                          # a second `up` repairs it
        assert q(s.info("victim"), "SELECT count(*) FROM items") == [(1000,)]
        for r in s.owned():
            if r.kind == "leftover" or r.workspace == "victim":
                s.remove_owned(r)
        assert not s.exists("victim")
    assert s._baseline_generation(s.baseline_dir) == gen      # the baseline is untouched
    assert q(other, "SELECT count(*) FROM items") == [(1000,)]
    assert not [p for p in s.pool.rglob("postmaster.pid") if "bystander" not in str(p)]
    _cleanup(s)


def test_creates_during_a_baseline_update(btrfs_mount: Path) -> None:
    s = make_strategy(btrfs_mount, "swap")
    s.build_baseline(seed)

    def migrate(conn: ConnInfo) -> None:
        q(conn, "CREATE TABLE v2 (x int)")
        time.sleep(0.3)

    with ThreadPoolExecutor(max_workers=5) as pool:
        update = pool.submit(s.update_baseline, migrate)
        infos = list(pool.map(s.create, [f"sw{i}" for i in range(4)]))
        update.result()
    for info in infos:                  # each got either the old or the new baseline, whole
        assert q(info, "SELECT count(*) FROM items") == [(1000,)]
    assert q(s.create("sw-after"), "SELECT to_regclass('v2') IS NOT NULL") == [(True,)]
    _cleanup(s)
