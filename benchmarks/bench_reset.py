#!/usr/bin/env python3
"""`sandbox db reset NAME` through the CLI against FILE_COPY and WAL_LOG of the same data.

The acceptance check of issue 21: with a ~1.2 GB baseline (``pgbench -i -s 80``, imported as the
snapshot strategy's baseline, Docker server), ``sandbox db reset ws`` through the CLI, until the
database accepts connections, takes ≤ 0.5 s and is ≥ 2× faster than ``CREATE DATABASE … STRATEGY
FILE_COPY`` and ≥ 5× faster than ``STRATEGY WAL_LOG`` of the same data (the workspace's own app
database, on the workspace's own server), as medians of N (5) interleaved rounds. Before each timed
operation the bench runs ``sync`` (untimed), so no method pays for flushing another's writes.

"Ready" is the CLI's exit: ``db reset`` returns only once the database answered a connection
(``wait_ready``); the bench also times one more ``SELECT 1`` over a new connection after it.
For FILE_COPY and WAL_LOG: ``CREATE DATABASE`` then a ``SELECT 1`` on the new database (the drop
is not counted).

The breakdown (one in-process reset, the same code, timed by wrapping the steps): process start
(interpreter + imports of ``sandbox.cli``), the safety checkpoint (an atomic btrfs snapshot of the
running volume), the new clone (btrfs snapshot of the stopped baseline), PostgreSQL down (signal
to the supervisor, postmaster gone), the swap (renameat2), PostgreSQL start and first connection,
role check, pruning of old automatic checkpoints.

Usage: ``python benchmarks/bench_reset.py [--quick] [--scale 80] [-n 5] [--no-write] [--keep]``.
Set ``SANDBOX_POSTGRES_IMAGE`` to the postgres image to use (default ``sandbox/postgres:15``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SECTION = "reset"
WS = "ws"


def cli_reset(project: Path) -> tuple[float, float]:
    """(CLI wall time, + one more SELECT 1 over a new connection) for one ``db reset``."""
    t0 = time.perf_counter()
    C.sandbox_cli(project, "db", "reset", WS)
    t1 = time.perf_counter()
    return t1 - t0, time.perf_counter() - t0 if _select(project) else float("nan")


_INFO: dict[str, Any] = {}


def _select(project: Path) -> bool:
    C.select1(**_INFO["ws"].kwargs())
    return True


def create_copy(admin: Any, strategy: str) -> float:
    db = f"bench_{strategy.lower()}"
    _admin(admin, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    _admin(admin, f'CREATE DATABASE "{db}" TEMPLATE app STRATEGY {strategy}')
    C.select1(**{**admin.kwargs(), "dbname": db})
    t = time.perf_counter() - t0
    _admin(admin, f'DROP DATABASE "{db}" WITH (FORCE)')
    return t


def _admin(admin: Any, sql: str) -> None:
    import psycopg
    with psycopg.connect(**admin.kwargs(), autocommit=True) as c:
        c.execute(sql)  # type: ignore[arg-type] - benchmark SQL, names are ours


def process_start(code: str = "import sandbox.cli") -> float:
    """Interpreter start plus the imports the CLI does before its first message."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=C.REPO,
                   env={**__import__("os").environ, "PYTHONPATH": str(C.REPO)})
    return time.perf_counter() - t0


def breakdown(sb: Any) -> dict[str, float]:
    """One in-process ``db_reset`` with its steps timed (by wrapping them; the code is unchanged)."""
    from sandbox.databases import dockercluster, snapshot
    spent: dict[str, float] = {}
    undo: list[Callable[[], None]] = []

    def wrap(obj: Any, name: str, label: Callable[..., str]) -> None:
        orig = getattr(obj, name)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                key = label(*a, **kw)
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
        setattr(obj, name, timed)
        undo.append(lambda: setattr(obj, name, orig))

    storage = sb.db.storage
    wrap(storage, "clone", lambda src, dst: "safety checkpoint (snapshot of the running volume)"
         if "ckpt" in str(dst) else "new clone (snapshot of the baseline)")
    wrap(storage, "exchange", lambda a, b: "swap (renameat2)")
    wrap(storage, "limit", lambda *a: "quota of the new volume")
    wrap(dockercluster.DockerCluster, "_wait_stopped", lambda *a: "PostgreSQL down (signal, postmaster gone)")
    wrap(dockercluster, "wait_ready", lambda *a, **kw: "PostgreSQL start + first connection")
    wrap(snapshot.SnapshotStrategy, "_configure", lambda *a: "role check (inside the first connection)")
    wrap(sb, "prune_auto", lambda *a: "pruning old automatic checkpoints")
    wrap(storage, "usage", lambda *a: "checkpoint sizes (btrfs du)")
    wrap(snapshot.SnapshotStrategy, "_delete_soon", lambda *a: "deleting volumes (old data in the background, "
         "pruned checkpoints)")
    try:
        t0 = time.perf_counter()
        sb.db_reset(WS)
        spent["total in process"] = time.perf_counter() - t0
    finally:
        for u in undo:
            u()
    return spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="scale 10, 3 rounds")
    ap.add_argument("--scale", type=int, default=None, help="pgbench scale (80: ~1.2 GB)")
    ap.add_argument("-n", type=int, default=None, help="rounds (5)")
    ap.add_argument("--keep", action="store_true", help="keep the project (and the dump) afterwards")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    scale = args.scale or (10 if args.quick else 80)
    n = args.n or (3 if args.quick else 5)
    header = C.run_header("bench_reset.py", sys.argv[1:])
    # Bytecode as an installed package has it (PYTHONDONTWRITEBYTECODE would make every CLI run
    # compile the package again, ~0.2 s that no installation pays).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(C.REPO / "sandbox")], check=True)
    project = C.make_project("reset", strategy="snapshot", server="docker", port_base=47000)
    try:
        sb = C.open_sandbox(project)
        C.log("init (demo baseline)")
        sb.init()
        dump = C.ensure_pgbench_dump(scale, C.WORK / f"pgbench-s{scale}.dump")
        C.log(f"importing the pgbench -s {scale} dump as the baseline")
        sb.db_baseline(import_file=dump)
        C.log("up ws")
        sb.up([WS], container=False)
        _INFO["ws"] = sb.db.info(WS)
        admin = sb.db._ws_cluster(WS).admin()
        import psycopg
        with psycopg.connect(**{**admin.kwargs(), "dbname": "app"}) as c:
            size = c.execute("SELECT pg_database_size('app')").fetchone()[0]
        C.log(f"app database: {C.fmt_bytes(size)}; warm-up reset")
        cli_reset(project)
        rows: dict[str, list[float]] = {"cli": [], "cli+select": [], "FILE_COPY": [], "WAL_LOG": []}
        for i in range(n):
            # Each method starts with nothing of the previous one's writes left to flush: the
            # copies write GBs into the same pool, which the next snapshot would otherwise flush.
            subprocess.run(["sync"], check=True)
            t_cli, t_sel = cli_reset(project)
            rows["cli"].append(t_cli)
            rows["cli+select"].append(t_sel)
            rows["FILE_COPY"].append(create_copy(admin, "FILE_COPY"))
            rows["WAL_LOG"].append(create_copy(admin, "WAL_LOG"))
            C.log(f"round {i + 1}: cli {C.fmt_s(t_cli)}, FILE_COPY {C.fmt_s(rows['FILE_COPY'][-1])}, "
                  f"WAL_LOG {C.fmt_s(rows['WAL_LOG'][-1])}")
        starts = [process_start() for _ in range(n)]
        later = [process_start("import sandbox.cli, sandbox.api, psycopg") for _ in range(n)]
        subprocess.run(["sync"], check=True)
        steps = breakdown(sb)
    finally:
        if not args.keep:
            C.cleanup_project(project)
    med = {k: C.median(v) for k, v in rows.items()}
    fc, wal = med["FILE_COPY"] / med["cli"], med["WAL_LOG"] / med["cli"]
    table = C.md_table(["method", f"median of {n}", "all runs"],
                       [[k, C.fmt_s(med[k]), ", ".join(C.fmt_s(x) for x in v)] for k, v in rows.items()])
    steps_md = C.md_table(["step (one in-process reset)", "time"],
                          [["process start (interpreter + `import sandbox.cli`, median)", C.fmt_s(C.median(starts))],
                           ["imports the command adds (sandbox.api, psycopg; median)",
                            C.fmt_s(C.median(later) - C.median(starts))]]
                          + [[k, C.fmt_s(v)] for k, v in steps.items()]
                          + [["rest of the CLI run (config, registry and intent journal; "
                              "= CLI median − the rows above but the background deletions)",
                              C.fmt_s(med["cli"] - C.median(later) - steps["total in process"])]])
    goals = (f"- CLI reset ≤ 0.5 s: **{C.fmt_s(med['cli'])}** ({'met' if med['cli'] <= 0.5 else 'NOT met'})\n"
             f"- ≥ 2× faster than FILE_COPY: **{C.fmt_ratio(fc)}** ({'met' if fc >= 2 else 'NOT met'})\n"
             f"- ≥ 5× faster than WAL_LOG: **{C.fmt_ratio(wal)}** ({'met' if wal >= 5 else 'NOT met'})\n")
    body = (f"{header}\n\nData: pgbench -s {scale}, app database {C.fmt_bytes(size)}.\n\n{table}\n\n{goals}\n"
            f"{steps_md}\n")
    print(body)
    if not args.no_write:
        C.update_results(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
