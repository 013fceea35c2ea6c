#!/usr/bin/env python3
"""Database create/reset: sandbox's strategies against the usual alternatives, in one run.

Sizes: *small* (the demo project's schema + seed) and *big* (a ``pgbench -i -s 100`` database,
~1.5 GB, imported as the baseline from a custom-format dump).

Methods (all on this host's PostgreSQL 15 binaries, except the container method):

* ``sandbox snapshot``: ``sb.db.create(ws)`` / ``sb.db.reset(ws)`` (a btrfs snapshot of the stopped
  baseline cluster plus a cluster start), strategy objects called directly;
* ``sandbox template``: the same calls with strategy ``template`` (``CREATE DATABASE … TEMPLATE …
  STRATEGY FILE_COPY`` plus ownership hand-over, on one shared server);
* ``sandbox schema``: strategy ``schema`` (the baseline schema's dump loaded into a new schema);
  on the big database it runs once in a subprocess with a time cap;
* ``raw FILE_COPY``: a bare ``CREATE DATABASE x TEMPLATE src STRATEGY FILE_COPY`` on the template
  project's server (what sandbox's template strategy does, minus its bookkeeping);
* ``pg_dump | pg_restore``: ``createdb`` + ``pg_dump -Fc src | pg_restore`` on the same server;
* ``container (today)``: what teams do today: a fresh ``sandbox/postgres:15`` container, then
  ``alembic upgrade head`` + the seed (small), or ``pg_restore`` of the dump (big).

"Ready" = a ``SELECT 1`` succeeded over a new connection with the credentials the method hands out.
For the alternatives, *reset* is what it would be by hand: drop (timed) + create (the same
iteration's create time).

Also measured: disk owned by an untouched snapshot clone (btrfs exclusive bytes) against the
baseline's size; idle PSS of a workspace cluster; N idle snapshot workspaces at once.

Usage: ``python benchmarks/clone.py [--quick] [--keep] [--skip-big] [--skip-small]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SECTION = "clone"


# -- one method ---------------------------------------------------------------------------------

class Result:
    def __init__(self) -> None:
        self.create: list[float] = []
        self.reset: list[float] = []
        self.phases: list[tuple[float, float]] = []
        self.note = ""

    def med(self, what: str) -> float:
        return C.median(getattr(self, what))


MARKS: list[tuple[str, float]] = []


def record(msg: str) -> None:
    MARKS.append((msg, time.perf_counter()))


def _phase_split(t0: float, t1: float) -> tuple[float, float] | None:
    """(clone, start+configure+SELECT 1) of one snapshot create, from its progress messages."""
    tc = next((t for m, t in MARKS if m.startswith("cloning the baseline")), None)
    ts = next((t for m, t in MARKS if m.startswith("starting the database")), None)
    if tc is None or ts is None:
        return None
    return ts - t0, t1 - ts


def bench_strategy(sb: Any, n: int, prefix: str, res: Result, *, keep_last: bool = False) -> str | None:
    """create + SELECT 1, reset + SELECT 1, drop (untimed); n times. Returns the kept workspace."""
    kept = None
    for i in range(n):
        ws = f"{prefix}{i}"
        MARKS.clear()
        t0 = time.perf_counter()
        info = _ready(sb.db.create(ws))
        t1 = time.perf_counter()
        res.create.append(t1 - t0)
        split = _phase_split(t0, t1)
        if split:
            res.phases.append(split)
        t, info = C.timed(lambda: _ready(sb.db.reset(ws)))
        res.reset.append(t)
        if keep_last and i == n - 1:
            kept = ws
        else:
            sb.db.drop(ws)
    return kept


def _ready(info: Any) -> Any:
    C.select1(**info.kwargs())
    return info


def admin_conn(admin: Any, sql: str, dbname: str = "postgres") -> None:
    import psycopg
    kw = admin.with_db(dbname).kwargs()
    kw.pop("options", None)
    with psycopg.connect(**kw, autocommit=True) as c:
        c.execute(sql)  # type: ignore[arg-type] - benchmark SQL, names are ours


def bench_file_copy(admin: Any, src: str, n: int, res: Result) -> None:
    for i in range(n):
        db = f"bench_fc_{i}"
        admin_conn(admin, f'DROP DATABASE IF EXISTS "{db}"')
        t, _ = C.timed(lambda: (admin_conn(admin, f'CREATE DATABASE "{db}" TEMPLATE "{src}" STRATEGY FILE_COPY'),
                                C.select1(**admin.with_db(db).kwargs())))
        res.create.append(t)
        td, _ = C.timed(lambda: admin_conn(admin, f'DROP DATABASE "{db}"'))
        res.reset.append(td + t)


def bench_dump_restore(admin: Any, src: str, n: int, res: Result) -> None:
    env = C.pg_env(admin.with_db("postgres"))
    for i in range(n):
        db = f"bench_dr_{i}"
        admin_conn(admin, f'DROP DATABASE IF EXISTS "{db}"')

        def run() -> None:
            admin_conn(admin, f'CREATE DATABASE "{db}"')
            cmd = (f"{C.pg_tool('pg_dump')} -Fc -Z0 -d {src} | "
                   f"{C.pg_tool('pg_restore')} --no-owner --exit-on-error -d {db}")
            subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, env=env, capture_output=True)
            C.select1(**admin.with_db(db).kwargs())
        t, _ = C.timed(run)
        res.create.append(t)
        td, _ = C.timed(lambda: admin_conn(admin, f'DROP DATABASE "{db}"'))
        res.reset.append(td + t)


def bench_container(project: Path, n: int, res: Result, *, dump: Path | None) -> None:
    """docker run sandbox/postgres:15; wait for SELECT 1; alembic upgrade head + seed (or pg_restore)."""
    for i in range(n):
        name = f"sbx-bench-pg-{os.getpid()}-{i}"
        port = C.free_port(47000 + i * 7)
        conn = {"host": "127.0.0.1", "port": port, "user": "postgres", "password": "bench", "dbname": "postgres"}
        url = f"postgresql://postgres:bench@127.0.0.1:{port}/postgres"
        env = {**os.environ, "DATABASE_URL": url, "PGHOST": "127.0.0.1", "PGPORT": str(port),
               "PGUSER": "postgres", "PGPASSWORD": "bench", "PGDATABASE": "postgres"}

        def run() -> None:
            subprocess.run(["docker", "run", "-d", "--name", name, "-e", "POSTGRES_PASSWORD=bench",
                            "-p", f"127.0.0.1:{port}:5432", C.PG_IMAGE], check=True, capture_output=True)
            C.wait_select1(timeout=120, **conn)
            if dump is None:
                subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=project, env=env,
                               check=True, capture_output=True)
                subprocess.run([C.pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "db/seed.sql"],
                               cwd=project, env=env, check=True, capture_output=True)
            else:
                subprocess.run([C.pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "-d", "postgres",
                                str(dump)], env=env, check=True, capture_output=True)
            C.select1(**conn)
        try:
            t, _ = C.timed(run)
            res.create.append(t)
            td, _ = C.timed(lambda: C.docker_rm(name))
            res.reset.append(td + t)
        finally:
            C.docker_rm(name)


# -- schema on the big database: capped, in a subprocess -------------------------------------------

def schema_worker(project: str, dump: str, out: str) -> None:
    sb = C.open_sandbox(Path(project))
    state: dict[str, Any] = {}

    def save() -> None:
        Path(out).write_text(json.dumps(state))
    t, _ = C.timed(lambda: sb.db_baseline(import_file=Path(dump)))
    state["import"] = t
    save()
    t, _ = C.timed(lambda: _ready(sb.db.create("big0")))
    state["create"] = t
    save()
    t, _ = C.timed(lambda: _ready(sb.db.reset("big0")))
    state["reset"] = t
    save()


def run_schema_capped(project: Path, dump: Path, cap: float) -> dict[str, Any]:
    out = C.WORK / "schema-worker.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(C.REPO)}
    proc = subprocess.Popen([sys.executable, __file__, "--schema-worker", str(project), str(dump), str(out)],
                            start_new_session=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    t0 = time.perf_counter()
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=cap)
        if proc.returncode != 0:
            C.log(f"schema worker exited {proc.returncode}: {output.strip()[-600:]}")
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)          # our own child's process group
        proc.wait()
    state = json.loads(out.read_text()) if out.exists() else {}
    out.unlink(missing_ok=True)
    state["timed_out"] = timed_out
    state["elapsed"] = time.perf_counter() - t0
    return state


# -- resource measurements (snapshot) ----------------------------------------------------------

def snapshot_footprint(sb: Any, ws: str) -> dict[str, Any]:
    """Disk owned by the clone (btrfs exclusive) vs the baseline; idle PSS of its cluster."""
    db = sb.db
    time.sleep(3)                      # let start-up work settle: idle means idle
    db.storage.sync()                  # fsync=off: count what start-up wrote, not only what was flushed
    base = C.btrfs_exclusive(db.baseline_dir)
    clone = C.btrfs_exclusive(db._ws_dir(ws))
    pids = C.cluster_pids(db._ws_dir(ws) / "data")
    return {"baseline_total": base[0] if base else None, "clone_total": clone[0] if clone else None,
            "clone_exclusive": clone[1] if clone else None, "pss": C.pss_of_pids(pids), "procs": len(pids)}


def many_idle(sb: Any, count: int) -> dict[str, Any]:
    names = [f"idle{i:02d}" for i in range(count)]
    mem_before = _mem_available()
    t0 = time.perf_counter()
    for ws in names:
        _ready(sb.db.create(ws))
    elapsed = time.perf_counter() - t0
    time.sleep(5)
    sb.db.storage.sync()
    pss = [C.pss_of_pids(C.cluster_pids(sb.db._ws_dir(ws) / "data")) for ws in names]
    excl = [(C.btrfs_exclusive(sb.db._ws_dir(ws)) or (0, 0))[1] for ws in names]
    mem_after = _mem_available()
    for ws in names:
        sb.db.drop(ws)
    return {"count": count, "create_total": elapsed, "pss_total": sum(pss), "pss_max": max(pss),
            "excl_total": sum(excl), "mem_available_drop": mem_before - mem_after}


def _mem_available() -> int:
    import re
    m = re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text())
    return int(m.group(1)) * 1024 if m else 0


# -- main ------------------------------------------------------------------------------------------

METHODS = ["sandbox snapshot", "sandbox template", "sandbox schema", "raw FILE_COPY",
           "pg_dump | pg_restore", "container (today)"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=2/1, pgbench scale 10, 5 idle workspaces")
    ap.add_argument("--small-n", type=int, default=None)
    ap.add_argument("--big-n", type=int, default=None)
    ap.add_argument("--scale", type=int, default=None, help="pgbench scale of the big database (100)")
    ap.add_argument("--idle", type=int, default=None, help="idle snapshot workspaces to create (20)")
    ap.add_argument("--schema-cap", type=float, default=240.0,
                    help="seconds allowed for schema's big import+create+reset (default 240)")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the generated pgbench dump for the next run")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--schema-worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.schema_worker:
        schema_worker(*args.schema_worker)
        return 0
    small_n = args.small_n or (2 if args.quick else 5)
    big_n = args.big_n or (1 if args.quick else 3)
    scale = args.scale or (10 if args.quick else 100)
    idle = args.idle if args.idle is not None else (5 if args.quick else 20)

    header = C.run_header("clone.py", sys.argv[1:])
    small: dict[str, Result] = {m: Result() for m in METHODS}
    big: dict[str, Result] = {m: Result() for m in METHODS}
    extra: dict[str, Any] = {}
    projects = {s: C.WORK / f"clone-{s}" for s in ("snapshot", "template", "schema")}
    t_start = time.perf_counter()
    try:
        sbs = {}
        for i, (s, _) in enumerate(projects.items()):
            C.log(f"project {s}: init (demo baseline)")
            projects[s] = C.make_project(f"clone-{s}", strategy=s, server="local", port_base=42000 + 1000 * i)
            sbs[s] = C.open_sandbox(projects[s], progress=record if s == "snapshot" else None)
            sbs[s].init()
        admin = sbs["template"].db.server.admin()
        base_db = sbs["template"].db.baseline_db

        if not args.skip_small:
            for s in ("snapshot", "template", "schema"):
                C.log(f"small: sandbox {s} ×{small_n}")
                kept = bench_strategy(sbs[s], small_n, "s", small[f"sandbox {s}"], keep_last=(s == "snapshot"))
                if kept:
                    extra["small_footprint"] = snapshot_footprint(sbs[s], kept)
                    sbs[s].db.drop(kept)
            admin_conn(admin, f'CREATE DATABASE bench_src TEMPLATE "{base_db}" STRATEGY FILE_COPY')
            C.log(f"small: raw FILE_COPY, pg_dump|pg_restore, container+alembic ×{small_n}")
            bench_file_copy(admin, "bench_src", small_n, small["raw FILE_COPY"])
            bench_dump_restore(admin, "bench_src", small_n, small["pg_dump | pg_restore"])
            bench_container(projects["template"], small_n, small["container (today)"], dump=None)
            admin_conn(admin, "DROP DATABASE bench_src")

        if not args.skip_big:
            dump = C.ensure_pgbench_dump(scale)
            extra["dump"] = C.dump_meta()
            for s in ("snapshot", "template"):
                C.log(f"big: importing the pgbench dump as the {s} baseline")
                t, _ = C.timed(lambda: sbs[s].db_baseline(import_file=dump))
                extra[f"import_{s}"] = t
                C.log(f"big: sandbox {s} ×{big_n}")
                kept = bench_strategy(sbs[s], big_n, "b", big[f"sandbox {s}"], keep_last=(s == "snapshot"))
                if kept:
                    extra["big_footprint"] = snapshot_footprint(sbs[s], kept)
                    sbs[s].db.drop(kept)
            if idle:
                C.log(f"big: {idle} idle snapshot workspaces")
                extra["idle"] = many_idle(sbs["snapshot"], idle)
            admin_conn(admin, f'CREATE DATABASE bench_src TEMPLATE "{base_db}" STRATEGY FILE_COPY')
            import psycopg
            with psycopg.connect(**admin.with_db("bench_src").kwargs()) as c:
                extra["big_db_size"] = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            C.log(f"big: raw FILE_COPY ×{big_n}")
            bench_file_copy(admin, "bench_src", big_n, big["raw FILE_COPY"])
            C.log(f"big: pg_dump|pg_restore ×{big_n}")
            bench_dump_restore(admin, "bench_src", big_n, big["pg_dump | pg_restore"])
            admin_conn(admin, "DROP DATABASE bench_src")
            C.log(f"big: container + pg_restore ×{big_n}")
            bench_container(projects["template"], big_n, big["container (today)"], dump=dump)
            # free the other projects' memory and disk before the capped schema run
            C.cleanup_project(projects["template"])
            C.log(f"big: sandbox schema, once, capped at {args.schema_cap:.0f} s")
            st = run_schema_capped(projects["schema"], dump, args.schema_cap)
            extra["schema_big"] = st
            r = big["sandbox schema"]
            if "create" in st:
                r.create.append(st["create"])
            if "reset" in st:
                r.reset.append(st["reset"])
            if st["timed_out"]:
                done = ", ".join(f"{k} {C.fmt_s(st[k])}" for k in ("import", "create", "reset") if k in st)
                r.note = f"cap {args.schema_cap:.0f} s hit ({done or 'import unfinished'})"
                if "create" not in st:
                    r.note = f"> {args.schema_cap - st.get('import', 0):.0f} s" + (
                        f" (import took {C.fmt_s(st['import'])})" if "import" in st else
                        f" (import alone > {args.schema_cap:.0f} s)")
    finally:
        for p in projects.values():
            C.log(f"cleanup {p.name}")
            C.cleanup_project(p)
        if not args.keep:
            C.remove_pgbench_dump()
    elapsed = time.perf_counter() - t_start

    text = report(small if not args.skip_small else None, big if not args.skip_big else None, extra,
                  small_n, big_n, scale, idle, header, elapsed)
    if not args.no_write:
        C.update_results(SECTION, text)
    return 0


def _row(name: str, r: Result, snap: Result) -> list[str]:
    cm, rm = r.med("create"), r.med("reset")
    sc, sr = snap.med("create"), snap.med("reset")
    if r.note and not r.create:
        return [name, r.note, "–", "–", "–"]
    return [name + (f" ({r.note})" if r.note else ""), C.fmt_s(cm), C.fmt_s(rm),
            C.fmt_ratio(cm / sc) if sc == sc and cm == cm else "–",
            C.fmt_ratio(rm / sr) if sr == sr and rm == rm else "–"]


def report(small: dict[str, Result] | None, big: dict[str, Result] | None, extra: dict[str, Any],
           small_n: int, big_n: int, scale: int, idle: int, header: str, elapsed: float) -> str:
    headers = ["method", "create (median)", "reset (median)", "create ÷ snapshot", "reset ÷ snapshot"]
    parts = ["## Database create / reset (`clone.py`)", "", header]
    plain = []
    for label, data, n in (("small: demo schema + seed", small, small_n),
                           (f"big: pgbench -i -s {scale} ({C.fmt_bytes(extra.get('big_db_size'))} "
                            "pg_database_size)", big, big_n)):
        if data is None:
            continue
        rows = [_row(m, data[m], data["sandbox snapshot"]) for m in METHODS]
        parts += [f"### {label}, N = {n}", "", C.md_table(headers, rows), ""]
        plain += [f"{label}, N={n}", C.table(headers, rows), ""]
    goals = []
    if big is not None:
        snap, fc, tmpl = big["sandbox snapshot"], big["raw FILE_COPY"], big["sandbox template"]
        sc, sr = snap.med("create"), snap.med("reset")
        goals.append(f"- snapshot create ≤ 1 s at {C.fmt_bytes(extra.get('big_db_size'))}: "
                     f"{C.fmt_s(sc)} → **{'met' if sc <= 1 else 'missed'}**")
        goals.append(f"- snapshot reset ≤ 1 s: {C.fmt_s(sr)} → **{'met' if sr <= 1 else 'missed'}**")
        for nm, other in (("raw FILE_COPY", fc), ("sandbox template", tmpl)):
            rc = other.med("create") / sc
            rr = other.med("reset") / sr
            ok = rc >= 10 and rr >= 10
            goals.append(f"- ≥ 10× faster than {nm} (FILE_COPY): create {C.fmt_ratio(rc)}, reset "
                         f"{C.fmt_ratio(rr)} → **{'met' if ok else 'missed'}**")
    for label, data in (("small", small), ("big", big)):
        ph = data["sandbox snapshot"].phases if data else []
        if ph:
            goals.append(f"- {label}: snapshot create = btrfs snapshot + bookkeeping "
                         f"{C.fmt_s(C.median([p[0] for p in ph]))} + cluster start, role hand-over and first "
                         f"connection {C.fmt_s(C.median([p[1] for p in ph]))} (medians)")
    for key, label in (("small_footprint", "small"), ("big_footprint", "big")):
        fp = extra.get(key)
        if not fp:
            continue
        share = (fp["clone_exclusive"] / fp["baseline_total"]) if fp.get("baseline_total") else None
        goals.append(f"- {label}: untouched snapshot clone owns {C.fmt_bytes(fp['clone_exclusive'])} exclusively "
                     f"of {C.fmt_bytes(fp['baseline_total'])} baseline"
                     + (f" = {share * 100:.3f}%" if share is not None else "")
                     + (f" → goal < 1% **{'met' if share is not None and share < 0.01 else 'missed'}**"
                        if label == "big" else ""))
        goals.append(f"- {label}: idle workspace cluster PSS {C.fmt_bytes(fp['pss'])} over {fp['procs']} processes"
                     f" → goal ≤ 64 MB **{'met' if fp['pss'] <= 64 * 2**20 else 'missed'}**")
    if extra.get("idle"):
        i = extra["idle"]
        goals.append(f"- {i['count']} idle snapshot workspaces on the big baseline: created in "
                     f"{C.fmt_s(i['create_total'])} (sequential, {C.fmt_s(i['create_total'] / i['count'])} each); "
                     f"PSS total {C.fmt_bytes(i['pss_total'])} (max {C.fmt_bytes(i['pss_max'])} per cluster); "
                     f"exclusive disk total {C.fmt_bytes(i['excl_total'])}; MemAvailable fell by "
                     f"{C.fmt_bytes(i['mem_available_drop'])} → **{'fit' if i['pss_total'] < 8 * 2**30 else 'tight'}** "
                     "(24 GB machine)")
    if "import_snapshot" in extra:
        d = extra.get("dump", {})
        goals.append(f"- one-off costs: pgbench -i {C.fmt_s(d.get('pgbench_init_s'))}, dump "
                     f"{C.fmt_s(d.get('dump_s'))}; baseline import: snapshot {C.fmt_s(extra['import_snapshot'])}, "
                     f"template {C.fmt_s(extra.get('import_template'))}"
                     + (f", schema {C.fmt_s(extra['schema_big'].get('import'))}"
                        if extra.get("schema_big", {}).get("import") else ""))
    parts += ["### Goals and footprint", "", *goals, "",
              "Notes: sandbox rows call the strategy objects (`sb.db.create/reset`), so they exclude CLI start-up "
              "(~0.4 s, see the `up` section). Reset for the alternatives = drop + create. The container method "
              "includes `docker run` and the image's initdb. Everything runs with 2 cores; the container and "
              f"the shared server compete with each other for them. Total wall time {C.fmt_s(elapsed)}.", ""]
    print("\n".join(plain))
    print("\n".join(goals))
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
