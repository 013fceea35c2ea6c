"""A full copy-on-write pool: every command answers exit 3 in one line (no traceback), doctor
shows how full it is, a workspace can still be removed, deletions give the space back at once,
and the pool can be grown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.disk import usage

from .conftest import cli, rtoml


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    chunk = os.urandom(1 << 20)
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError:
            pass
    os.sync()
    return filler


@pytest.mark.postgres
def test_a_full_pool_is_exit_3_and_rm_and_grow_still_work(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("a loop-mounted btrfs pool needs root")
    repo = demo_factory(rtoml("snapshot") + 'pool_size = "300M"\n')
    sb = Sandbox.open(repo)
    storage = getattr(sb.db, "storage")
    if storage.kind != "btrfs":
        pytest.skip(f"the pool is {storage.kind}, not btrfs")
    pool = storage.root
    cli(repo, "up", "w1")
    cli(repo, "up", "w2")
    cli(repo, "db", "checkpoint", "w1", "before")

    filler = _fill(pool)
    used, total = usage(pool) or (0, 1)
    assert used / total > 0.99

    for argv in (["db", "checkpoint", "w1", "c1"], ["db", "reset", "w1"], ["db", "restore", "w1", "before"]):
        res = cli(repo, *argv, check=3)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not list((pool / "ckpt" / "w1").glob(".new-*"))          # no half checkpoint holds space
    assert [c.label for c in sb.db.checkpoints("w1")] == ["before"]

    doctor = cli(repo, "doctor", check=None)
    assert "pool usage" in doctor.stdout and "full" in doctor.stdout and "storage grow" in doctor.stdout

    cli(repo, "stop", "w2", check=None)
    up = cli(repo, "up", "w2", check=None)                          # its cluster may not start
    assert up.returncode in (0, 3) and "Traceback" not in up.stderr
    cli(repo, "rm", "w2", "--force")                                # removable whatever its state
    assert "w2" not in [r.name for r in Sandbox.open(repo).registry.all()]

    filler.unlink()
    storage.reclaim()
    size_before = total
    res = cli(repo, "storage", "grow", "+200M")
    assert "grown" in res.stdout
    assert (usage(pool) or (0, 0))[1] > size_before
    cli(repo, "db", "checkpoint", "w1", "c1")
    cli(repo, "up", "w1")                                           # its cluster may have died of the full disk

    # dropping a checkpoint gives its space back before the command returns
    url = Sandbox.open(repo).db_url("w1")
    import psycopg
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE big AS SELECT g, repeat('x', 1000) AS pad FROM generate_series(1, 60000) g")
    cli(repo, "db", "checkpoint", "w1", "c2")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE big")
    cli(repo, "stop", "w1")
    os.sync()
    held = (usage(pool) or (0, 0))[0]
    cli(repo, "db", "drop-checkpoint", "w1", "c2")
    assert (usage(pool) or (0, 0))[0] < held - 30 * 1024 ** 2
    bad = cli(repo, "storage", "grow", "10M", check=2)
    assert "already" in bad.stderr
