#!/usr/bin/env python3
"""``sandbox up NAME`` against doing the same by hand, in one run.

For each database configuration (default: ``snapshot`` on the Docker server, which is what
``strategy = "auto"``/``server = "auto"`` resolve to here as root with Docker, and ``template`` on
a host server, the cheapest database):

* **sandbox up (CLI)**: ``python -m sandbox up NAME`` (worktree + database + container, image
  present), wall time including interpreter start-up;
* **sandbox up (library)**: ``Sandbox.up([NAME])``, with a breakdown taken from its progress
  messages: bookkeeping, worktree (git, ports, network), database, container;
* **sandbox up --no-container (CLI)**: worktree + database only;
* **manual**: ``git worktree add -b NAME`` + ``docker run -d`` of the same image with the
  worktree and the main ``.git`` mounted (what a person would type);
* **manual, same options**: the same plus what sandbox asks of Docker: its own bridge network,
  10 published ports, ``--init``, ``--user``, ``--cap-drop ALL``, limits, labels;
* **manual, the same work**: that plus the workspace's database made the way the strategy makes
  it (``btrfs subvolume snapshot`` of the baseline + a postgres container on the network, waited
  for with ``pg_isready``; or ``CREATE DATABASE … TEMPLATE``), one command after the other;
* CLI start-up alone: ``python -m sandbox --help``.

Overhead = sandbox (CLI) − manual (the bare pair, and the same work); ratio = sandbox ÷ manual.
Then ``sandbox up a b c d``
(created concurrently) against four sequential ``sandbox up`` calls.

Usage: ``python benchmarks/bench_up.py [--quick] [-n 7] [--concurrent-n 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SECTION = "up"
SETTLE_S = 1.0
UP_IMPORTS = ("import sandbox.cli, sandbox.runtime.docker, sandbox.databases.factory, "
              "sandbox.databases.snapshot, sandbox.databases.template, psycopg")

CONFIGS = {
    "snapshot/docker": {"strategy": "snapshot", "server": "docker"},
    "template/local": {"strategy": "template", "server": "local"},
}


def sb_rm(project: Path, *names: str) -> None:
    sb = C.open_sandbox(project)
    for n in names:
        try:
            sb.rm(n, force=True, delete_branch=True)
        except Exception as exc:  # noqa: BLE001
            C.log(f"rm {n}: {type(exc).__name__}: {exc}")


def settle() -> None:
    """Let the engine finish the previous run's teardown (Docker removes networks and network
    namespaces in the background): every measured run, sandbox's and the manual ones alike,
    starts on an idle engine, as a person's or an agent's `up` usually does."""
    time.sleep(SETTLE_S)


def up_cli(project: Path, *names: str, extra: tuple[str, ...] = ()) -> float:
    t, res = C.timed(lambda: C.sandbox_cli(project, "up", *names, *extra, check=False))
    if res.returncode != 0:
        raise RuntimeError(f"sandbox up {' '.join(names)} exited {res.returncode}: {res.stderr.strip()[-600:]}")
    return t


def up_lib(project: Path, name: str) -> tuple[float, dict[str, float]]:
    marks: list[tuple[str, float]] = []

    def progress(msg: str) -> None:
        marks.append((msg, time.perf_counter()))
    t0 = time.perf_counter()
    sb = C.open_sandbox(project, progress=progress)
    res = sb.up([name])
    t1 = time.perf_counter()
    if not res[0].ok:
        raise RuntimeError(f"up {name}: {res[0].error}")

    def at(prefix: str) -> float | None:
        for msg, t in marks:
            if msg.startswith(f"{name}: {prefix}"):
                return t
        return None
    tw, td = at("worktree"), at("database")
    phases = {"bookkeeping": (tw or t0) - t0,
              "worktree+ports+network": (td - tw) if td and tw else float("nan"),
              "database ∥ container": (t1 - td) if td else float("nan")}
    return t1 - t0, phases


def manual(project: Path, name: str, *, same_options: bool, image: str, database: Any = None) -> float:
    """What a person types, one command after the other.

    ``same_options``: also the Docker options sandbox uses (own network, 10 published ports, …).
    ``database``: also the workspace's database, the way sandbox's strategy makes it (a
    ``btrfs subvolume snapshot`` of the baseline plus a postgres container on the network,
    waited for with ``pg_isready``; or ``CREATE DATABASE … TEMPLATE`` on the shared server).
    """
    path = C.WORK / "manual-wt" / name
    common = project / ".git"
    cname = f"sbx-bench-manual-{name}"
    dbname = f"sbx-bench-manual-{name}-db"
    volume: Path | None = None
    uid, gid = os.getuid(), os.getgid()

    pg_env = dict(os.environ)
    if database is not None and database.name != "snapshot":
        pg_env["PGPASSWORD"] = database.server.admin().password

    def sh(*argv: str) -> None:
        r = subprocess.run(argv, capture_output=True, text=True, env=pg_env)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} exited {r.returncode}: {r.stderr.strip()[-400:]}")

    def make_database() -> None:
        nonlocal volume
        if database.name == "snapshot":
            volume = database.pool / "ws" / f"manual-{name}"
            sh("btrfs", "subvolume", "snapshot", str(database.baseline_dir), str(volume))
            (volume / "data" / "postmaster.pid").unlink(missing_ok=True)
            port = C.free_port(48100 + abs(hash(name)) % 500)   # above the blocks of 46000-47999
            sh("docker", "run", "-d", "--name", dbname, "--network", cname, "--network-alias", "db",
               "-v", f"{volume}:/sandbox", "-e", "PGDATA=/sandbox/data", "-p", f"127.0.0.1:{port}:5432",
               "--shm-size", "64m", C.PG_IMAGE, "postgres", "-c", "listen_addresses=*", "-c", "fsync=off")
            while subprocess.run([C.pg_tool("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode:
                time.sleep(0.02)
        else:
            admin = database.server.admin()
            sh(C.pg_tool("psql"), "-q", "-h", admin.host, "-p", str(admin.port), "-U", admin.user, "-d", "postgres",
               "-c", f'CREATE DATABASE "manual_{name}" TEMPLATE "{database.baseline_db}"')

    def run() -> None:
        sh("git", "-C", str(project), "worktree", "add", "-q", "-b", name, str(path))
        argv = ["docker", "run", "-d", "--name", cname,
                "--mount", f"type=bind,source={path},target={path}",
                "--mount", f"type=bind,source={common},target={common}", "-w", str(path)]
        if same_options:
            sh("docker", "network", "create", cname)
            base = C.free_block(46000 + 10 * (abs(hash(name)) % 200), 10)
            argv += ["--network", cname, "--init", "--user", f"{uid}:{gid}", "--cap-drop", "ALL",
                     "--security-opt", "no-new-privileges", "--pids-limit", "1024", "--memory", "2g",
                     "--cpus", str(min(2, os.cpu_count() or 1)), "--add-host", "host.docker.internal:host-gateway",
                     "--label", "bench=1", "-e", "HOME=/tmp", "-p", f"127.0.0.1:{base}-{base + 9}:{base}-{base + 9}"]
        if database is not None:
            make_database()
        sh(*argv, image, "sleep", "infinity")

    try:
        t, _ = C.timed(run)
    finally:
        C.docker_rm(cname, dbname)
        if volume is not None:
            subprocess.run(["btrfs", "subvolume", "delete", str(volume)], capture_output=True)
        if database is not None and database.name != "snapshot":
            admin = database.server.admin()
            subprocess.run([C.pg_tool("psql"), "-q", "-h", admin.host, "-p", str(admin.port), "-U", admin.user,
                            "-d", "postgres", "-c", f'DROP DATABASE IF EXISTS "manual_{name}"'],
                           capture_output=True, env=pg_env)
        if same_options:
            subprocess.run(["docker", "network", "rm", cname], capture_output=True)
        subprocess.run(["git", "-C", str(project), "worktree", "remove", "--force", str(path)], capture_output=True)
        subprocess.run(["git", "-C", str(project), "branch", "-D", name], capture_output=True)
    return t


def bench_config(label: str, cfg: dict[str, str], n: int, cn: int, port_base: int) -> dict[str, Any]:
    project = C.make_project(f"up-{cfg['strategy']}", strategy=cfg["strategy"], server=cfg["server"],
                             runtime="docker", port_base=port_base)
    out: dict[str, Any] = {"cli": [], "lib": [], "phases": [], "nocont": [], "manual": [], "manual_same": [],
                           "manual_all": [], "conc": [], "seq": []}
    try:
        C.log(f"[{label}] init")
        sb = C.open_sandbox(project)
        sb.init()
        # warm-up (first container on a new network, page cache): not counted
        up_cli(project, "warm")
        sb_rm(project, "warm")
        for i in range(n):
            C.log(f"[{label}] run {i + 1}/{n}")
            settle()
            out["cli"].append(up_cli(project, f"c{i}"))
            sb_rm(project, f"c{i}")
            settle()
            t, ph = up_lib(project, f"l{i}")
            out["lib"].append(t)
            out["phases"].append(ph)
            sb_rm(project, f"l{i}")
            settle()
            out["nocont"].append(up_cli(project, f"n{i}", extra=("--no-container",)))
            sb_rm(project, f"n{i}")
            settle()
            out["manual"].append(manual(project, f"m{i}", same_options=False, image=C.WS_IMAGE))
            settle()
            out["manual_same"].append(manual(project, f"s{i}", same_options=True, image=C.WS_IMAGE))
            settle()
            out["manual_all"].append(manual(project, f"a{i}", same_options=True, image=C.WS_IMAGE, database=sb.db))
        for i in range(cn):
            names = [f"p{i}{x}" for x in "abcd"]
            C.log(f"[{label}] up {' '.join(names)} (concurrent) vs sequential, {i + 1}/{cn}")
            settle()
            out["conc"].append(up_cli(project, *names))
            sb_rm(project, *names)
            names = [f"q{i}{x}" for x in "abcd"]
            settle()
            out["seq"].append(sum(up_cli(project, nm) for nm in names))
            sb_rm(project, *names)
    finally:
        C.cleanup_project(project)
        with contextlib.suppress(OSError):
            (C.WORK / "manual-wt").rmdir()
    return out


def bench_boundary(n: int, port_base: int) -> dict[str, list[float]]:
    """What the untrusted-workspace boundary costs: `ls`, `merge`, and the fetch behind them.

    Docker workspaces are repositories of their own; every command that reads a workspace's
    branch first fetches it into main (git's upload-pack), and `merge` checks for uncommitted work
    with a git dir sandbox owns. Measured: `ls` with 4 workspaces (4 fetches), one fetch alone
    (library), the uncommitted-work check alone (library), and `merge` of a workspace holding one
    commit (no migrations: the gate's replay does not run), all through the CLI where it says so.
    """
    project = C.make_project("boundary", strategy="snapshot", server="docker", runtime="docker",
                             port_base=port_base)
    out: dict[str, list[float]] = {"ls": [], "collect": [], "unsaved": [], "merge": []}
    try:
        sb = C.open_sandbox(project)
        sb.init()
        up_cli(project, "w1", "w2", "w3", "w4")
        for i in range(n):
            out["ls"].append(C.timed(lambda: C.sandbox_cli(project, "ls", "--json"))[0])
            rec = sb.record("w1")
            out["collect"].append(C.timed(lambda: sb.collect(rec))[0])
            out["unsaved"].append(C.timed(lambda: sb.unsaved(rec))[0])
        for i in range(n):
            name = f"m{i}"
            up_cli(project, name)
            C.sandbox_cli(project, "exec", name, "--", "sh", "-c",
                          f"echo {i} > note{i}.txt && git add -A && git -c user.name=b -c user.email=b@x "
                          f"commit -qm note{i}")
            settle()
            out["merge"].append(C.timed(lambda: C.sandbox_cli(project, "merge", name))[0])
            sb_rm(project, name)
    finally:
        C.cleanup_project(project)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=2, one concurrent round, one configuration")
    ap.add_argument("-n", type=int, default=None, help="runs per measurement (9)")
    ap.add_argument("--concurrent-n", type=int, default=None, help="rounds of 4-up vs 4 sequential (3)")
    ap.add_argument("--config", choices=list(CONFIGS), action="append",
                    help="database configuration(s) to run (default: all)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    n = args.n or (2 if args.quick else 9)
    cn = args.concurrent_n or (1 if args.quick else 3)
    configs = args.config or (["snapshot/docker"] if args.quick else list(CONFIGS))
    header = C.run_header("bench_up.py", sys.argv[1:])
    t0 = time.perf_counter()
    # sandbox byte-compiled, as an installed package is (and as scripts/setup leaves the checkout)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(C.REPO / "sandbox")], check=True,
                   capture_output=True)

    # CLI start-up alone
    startup = [C.timed(lambda: subprocess.run([sys.executable, "-m", "sandbox", "--help"], capture_output=True,
                                              env={**os.environ, "PYTHONPATH": str(C.REPO)}))[0]
               for _ in range(n)]
    # what a CLI process pays before doing anything: interpreter + the modules `up` needs
    imports = [C.timed(lambda: subprocess.run([sys.executable, "-c", UP_IMPORTS], capture_output=True,
                                              env={**os.environ, "PYTHONPATH": str(C.REPO)}))[0]
               for _ in range(n)]
    results = {}
    for i, label in enumerate(configs):
        results[label] = bench_config(label, CONFIGS[label], n, cn, 45000 + 1000 * i)
    boundary = bench_boundary(n, 49000)
    elapsed = time.perf_counter() - t0

    md = ["## Workspace creation (`bench_up.py`)", "", header,
          f"N = {n} per row (median); {cn} rounds of the concurrency comparison. Image present, "
          f"one warm-up `up` not counted; every measured run starts after a {SETTLE_S:.0f} s pause (the engine "
          "idle again after the previous run's removal). `python -m sandbox --help` (interpreter + imports): "
          f"**{C.fmt_s(C.median(startup))}**; a process importing what `up` needs (CLI, docker SDK, "
          f"psycopg, strategies): **{C.fmt_s(C.median(imports))}**.", ""]
    plain = []
    goals = []
    for label, r in results.items():
        man, same, alls = C.median(r["manual"]), C.median(r["manual_same"]), C.median(r["manual_all"])
        cli, lib = C.median(r["cli"]), C.median(r["lib"])

        def vs(x: float) -> list[str]:
            return [C.fmt_s(x), f"{'+' if x >= man else '−'}{C.fmt_s(abs(x - man))}", C.fmt_ratio(x / man),
                    f"{'+' if x >= alls else '−'}{C.fmt_s(abs(x - alls))}"]
        rows = [
            ["sandbox up NAME (CLI)", *vs(cli)],
            ["sandbox up NAME (library)", *vs(lib)],
            ["sandbox up NAME --no-container (CLI)", *vs(C.median(r["nocont"]))],
            ["manual: git worktree add + docker run -d", *vs(man)],
            ["manual + sandbox's Docker options (network, 10 ports, caps, limits)", *vs(same)],
            ["manual, the same work (+ the database, as the strategy makes it)", *vs(alls)],
        ]
        headers = ["what", "median", "vs bare manual", "ratio", "vs same work by hand"]
        phase_rows = [[k, C.fmt_s(C.median([p[k] for p in r["phases"]]))] for k in r["phases"][0]]
        conc, seq = C.median(r["conc"]), C.median(r["seq"])
        md += [f"### database {label}", "", C.md_table(headers, rows), "",
               "Phases of the library `up` (from its progress messages, medians; the database and the "
               "container are made at the same time):", "",
               C.md_table(["phase", "median"], phase_rows), "",
               f"`sandbox up a b c d` (concurrent): **{C.fmt_s(conc)}** vs four sequential `sandbox up`: "
               f"**{C.fmt_s(seq)}** → {C.fmt_ratio(seq / conc)} faster ({C.fmt_s(conc / 4)} per workspace).", ""]
        plain += [f"database {label}", C.table(headers, rows), C.table(["phase", "median"], phase_rows),
                  f"4 concurrent {C.fmt_s(conc)} vs 4 sequential {C.fmt_s(seq)}", ""]
        md += [f"Against the bare manual pair ({C.fmt_s(man)}), sandbox's {C.fmt_s(cli - man)} is: the new "
               f"process and its imports (CLI − library) {C.fmt_s(cli - lib)}; what Docker charges for the "
               f"options sandbox uses (own network, 10 published ports, limits: {C.fmt_s(same - man)}); the "
               f"database, which the bare pair does not make; the rest is bookkeeping.", ""]
        over = cli - alls
        goals += [f"- {label}: median `sandbox up` {C.fmt_s(cli)} (goal < 1.5 s) → "
                  f"**{'met' if cli < 1.5 else 'missed'}**; overhead against the same work by hand "
                  f"{'+' if over >= 0 else '−'}{C.fmt_s(abs(over))} (goal < 0.5 s) → "
                  f"**{'met' if over < 0.5 else 'missed'}**; against the bare `git worktree add` + "
                  f"`docker run` pair +{C.fmt_s(cli - man)} "
                  f"(**{'within' if cli - man < 0.5 else 'over'}** 0.5 s)"]
    brow = [["`sandbox ls --json`, 4 Docker workspaces (CLI)", C.fmt_s(C.median(boundary["ls"]))],
            ["  one workspace's fetch into main (library)", C.fmt_s(C.median(boundary["collect"]))],
            ["  its uncommitted-work check, fetch included (library)", C.fmt_s(C.median(boundary["unsaved"]))],
            ["`sandbox merge NAME`, one commit, no migrations (CLI)", C.fmt_s(C.median(boundary["merge"]))]]
    md += ["### What the untrusted-workspace boundary costs", "",
           "Docker workspaces are repositories of their own: every command that reads a workspace's branch "
           "first fetches it into main through git's upload-pack, and removal and merge check for uncommitted "
           "work with a git dir sandbox owns (never git inside the workspace's repository). `up` makes a "
           "`git clone --shared` instead of `git worktree add` (see the rows above for `up` itself; to compare "
           "with the code before the boundary, run this script from a checkout of bba6596).", "",
           C.md_table(["what", "median"], brow), ""]
    goals.append(f"- boundary: `ls` with 4 workspaces {C.fmt_s(C.median(boundary['ls']))}, one fetch "
                 f"{C.fmt_s(C.median(boundary['collect']))}, merge {C.fmt_s(C.median(boundary['merge']))}")
    md += ["### Goals", "", *goals, "",
           "The same work by hand is typed one command after the other; sandbox overlaps the network with "
           "the worktree and the database with the container. "
           f"Total wall time {C.fmt_s(elapsed)}.", ""]
    print("\n".join(plain))
    print("\n".join(goals))
    if not args.no_write:
        C.update_results(SECTION, "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
