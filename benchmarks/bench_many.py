"""Commands that read or remove every workspace, with many workspaces (issue 16).

Grows one project to N workspaces (100 by default; ``up`` in batches of 8), then times the
commands whose cost grows with the number of workspaces:

* ``sandbox ls --json``: one container list call, repositories read in parallel, one git read
  for every branch, health probed in parallel. Goal ≤ 1 s.
* ``sandbox migrate status --json``: every branch read in one git call. Goal ≤ 1 s.
* ``sandbox deinit --force``: workspaces torn down in parallel (a bounded pool). Goal ≤ 60 s.
  Beside it, the engine's own floor: the same number of containers (each workspace's with its
  port block published, each database's with one port) and networks, made with the Docker SDK
  and removed the way ``deinit`` removes them (8 at a time). Nothing of sandbox runs in it.

Before issue 16, with 120 Docker workspaces: ``ls --json`` 13.1 s, ``migrate status`` 6.0 s,
``deinit --force`` 4 min 33 s (4 git subprocesses and 4 Docker API calls per workspace, one
after another).

Usage (as root, from the repository root)::

    python benchmarks/bench_many.py                  # 100 Docker workspaces (~10 min)
    python benchmarks/bench_many.py -n 20 --quick    # a smaller project
    python benchmarks/bench_many.py --runtime none   # worktrees and databases only

Nothing asserts timings; the table is printed and written to RESULTS.md (``<!-- many -->``).
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
import subprocess
import sys
import time

from pathlib import Path

import _common as C

SECTION = "many"
BATCH = 8


def grow(project: C.Path, count: int) -> float:
    """``sandbox up`` of ``count`` workspaces, in batches; the seconds it took."""
    t0 = time.perf_counter()
    names = [f"w{i:03d}" for i in range(count)]
    for start in range(0, count, BATCH):
        batch = names[start:start + BATCH]
        C.log(f"up {batch[0]}..{batch[-1]}")
        C.sandbox_cli(project, "up", *batch, timeout=1800)
    return time.perf_counter() - t0


def docker_floor(count: int, ports: int, port_base: int = 43000, parallel: int = 8) -> float:
    """Seconds Docker alone takes to remove ``count`` workspaces' worth of containers and networks
    (made first, untimed), ``parallel`` at a time as ``deinit`` does."""
    import docker
    client = docker.from_env()
    label = {"dev.sandbox.bench": "floor"}

    def make(i: int) -> None:
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=f"10.251.{i}.0/24")])
        net = client.networks.create(f"sbx-floor-{i}", driver="bridge", labels=label, ipam=ipam)
        base = port_base + i * (ports + 1)
        client.containers.run("sandbox/workspace:bookworm", ["sleep", "infinity"], detach=True, labels=label,
                              name=f"sbx-floor-ws-{i}", network=net.name,
                              ports={f"{p}/tcp": ("127.0.0.1", p) for p in range(base, base + ports)})
        client.containers.run("sandbox/workspace:bookworm", ["sleep", "infinity"], detach=True, labels=label,
                              name=f"sbx-floor-db-{i}", network=net.name,
                              ports={f"{base + ports}/tcp": ("127.0.0.1", base + ports)})

    def clean() -> None:
        for c in client.containers.list(all=True, filters={"label": "dev.sandbox.bench=floor"}):
            c.remove(force=True)
        for n in client.networks.list(filters={"label": "dev.sandbox.bench=floor"}):
            n.remove()
    clean()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(make, range(count)))
        t0 = time.perf_counter()
        containers = client.containers.list(all=True, sparse=True, filters={"label": "dev.sandbox.bench=floor"})
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            list(pool.map(lambda c: client.api.remove_container(c.id, force=True, v=True), containers))
            networks = client.networks.list(filters={"label": "dev.sandbox.bench=floor"})
            list(pool.map(lambda n: n.remove(), networks))
        return time.perf_counter() - t0
    finally:
        clean()


PROFILE: Path | None = None      # --profile: each timed command under cProfile, its .prof here


def timed_cli(project: C.Path, *args: str) -> float:
    t0 = time.perf_counter()
    if PROFILE is None:
        C.sandbox_cli(project, *args, timeout=3600)
    else:
        out = PROFILE / ("-".join(a.strip("-") for a in args) + ".prof")
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "sandbox", "--project", str(project),
                        "-q", *args], timeout=3600, check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(C.REPO)})
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--workspaces", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3, help="runs of ls and migrate status (median)")
    ap.add_argument("--runtime", default="docker", choices=("docker", "none"))
    ap.add_argument("--quick", action="store_true", help="one run of each")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="run the timed commands under cProfile, their .prof files in DIR (implies --no-write)")
    ap.add_argument("--floor-only", action="store_true", help="only Docker's own removal time (no project)")
    args = ap.parse_args(argv)
    if args.floor_only:
        print(f"Docker alone, {args.workspaces} workspaces' worth: {C.fmt_s(docker_floor(args.workspaces, 10))}")
        return
    global PROFILE
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE, args.no_write = args.profile.resolve(), True
    runs = 1 if args.quick else args.runs
    server = "docker" if args.runtime == "docker" else "local"
    project = C.make_project("many", strategy="auto", server=server, runtime=args.runtime, port_base=21000)
    try:
        C.sandbox_cli(project, "init", timeout=900)
        made = grow(project, args.workspaces)
        ls = [timed_cli(project, "ls", "--json") for _ in range(runs)]
        status = [timed_cli(project, "migrate", "status", "--json") for _ in range(runs)]
        C.log("deinit --force")
        deinit = timed_cli(project, "deinit", "--force")
        n = args.workspaces
        floor = docker_floor(n, 10) if args.runtime == "docker" else None
        rows = [
            [f"`up` of {n} workspaces, {BATCH} at a time", C.fmt_s(made), "", ""],
            ["`ls --json`", C.fmt_s(C.median(ls)), "≤ 1 s", "met" if C.median(ls) <= 1 else "missed"],
            ["`migrate status --json`", C.fmt_s(C.median(status)), "≤ 1 s",
             "met" if C.median(status) <= 1 else "missed"],
            ["`deinit --force`", C.fmt_s(deinit), "≤ 60 s", "met" if deinit <= 60 else "missed"],
        ]
        if floor is not None:
            rows.append([f"Docker alone: remove {2 * n} such containers and {n} networks, 8 at a time",
                         C.fmt_s(floor), "", f"`deinit` = {deinit / floor:.2f}× this"])
        body = (f"## Many workspaces ({n}, runtime {args.runtime})\n\n"
                + C.run_header("bench_many.py", argv)
                + f"\nMedians of {runs} for `ls` and `migrate status`. Before issue 16 (120 Docker workspaces): "
                  "`ls --json` 13.1 s, `migrate status` 6.0 s, `deinit --force` 4 min 33 s.\n\n"
                + C.md_table(["what", "time", "goal", ""], rows) + "\n")
        print(body)
        if not args.no_write:
            C.update_results(SECTION, body)
    finally:
        C.cleanup_project(project)


if __name__ == "__main__":
    main(sys.argv[1:])
