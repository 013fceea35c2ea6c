#!/usr/bin/env python3
"""Per-workspace compose stacks: ``sandbox up`` of a workspace with a three-service stack against
``docker compose up`` of the same stack by hand.

The project is compose/example (web + worker + redis, and the project's own postgres ``db``). Both
sides start from warm image caches (each side builds once before measuring) and are measured
until the command returns and until ``web`` answers HTTP on its published port:

- **sandbox**: ``sandbox up wN`` (worktree, database clone, workspace container, then the stack:
  ``compose config``, the checks, the rewrite, ``compose up -d``, and ``[compose] settle``), run
  with the default settle (2 s) and with ``settle = "0s"``;
- **by hand**: ``docker compose -p hand-N up -d`` of the project's own file, which runs its own
  postgres as the fourth service (what a developer does without sandbox), and the same with only
  the three services (``up -d --no-deps web worker redis``).

The ratio is sandbox's time over the by-hand time of the whole stack. Usage:
``python benchmarks/bench_compose.py [-n 5] [--compose v2|v1] [--quick] [--no-write]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SECTION = "compose"
EXAMPLE = C.REPO / "compose" / "example"
TOML = """\
# written by benchmarks/bench_compose.py
[workspace]
runtime = "docker"
ports = 5
port_base = 41000

[database]
strategy = "snapshot"
server = "docker"
seed = ["db/seed.sql"]

[compose]
replace = {{ db = "database" }}
command = "{compose}"
settle = "{settle}"
enabled = {enabled}
"""


def wait_http(url: str, timeout: float = 60) -> None:
    """Until ``url`` answers HTTP at all (a 500 counts: the service is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def make_example(compose: str, settle: str) -> Path:
    dst = C.WORK / "compose-example"
    C.cleanup_project(dst)
    C.WORK.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE, dst)
    (dst / "sandbox.toml").write_text(TOML.format(compose=compose, settle=settle, enabled="true"))
    C.git(dst, "init", "-q", "-b", "main")
    C.git(dst, "add", "-A")
    C.git(dst, "commit", "-q", "-m", "compose example")
    C.sandbox_cli(dst, "init")
    return dst


def set_settle(project: Path, compose: str, settle: str, enabled: bool = True) -> None:
    (project / "sandbox.toml").write_text(TOML.format(compose=compose, settle=settle,
                                                      enabled="true" if enabled else "false"))


def sandbox_up(project: Path, name: str, *, stack: bool = True) -> tuple[float, float]:
    t0 = time.perf_counter()
    C.sandbox_cli(project, "up", name)
    returned = time.perf_counter() - t0
    if not stack:
        return returned, returned
    env = json.loads(C.sandbox_cli(project, "env", name, "--format", "json").stdout)
    wait_http(env["SANDBOX_SERVICE_WEB_8000"])
    return returned, time.perf_counter() - t0


def by_hand(binary: list[str], project: Path, name: str, services: list[str]) -> tuple[float, float]:
    args = [*binary, "-p", name, "-f", str(project / "compose.yaml")]
    t0 = time.perf_counter()
    subprocess.run([*args, "up", "-d", *(["--no-deps", *services] if services else [])], check=True,
                   capture_output=True, cwd=project)
    returned = time.perf_counter() - t0
    port = subprocess.run([*args, "port", "web", "8000"], check=True, capture_output=True, text=True,
                          cwd=project).stdout.strip().rsplit(":", 1)[1]
    wait_http(f"http://127.0.0.1:{port}/")
    total = time.perf_counter() - t0
    subprocess.run([*args, "down", "-v", "--remove-orphans"], capture_output=True, cwd=project)
    return returned, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--compose", choices=["v2", "v1"], default="v2")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    opts = ap.parse_args()
    n = 2 if opts.quick else opts.n

    from sandbox.compose.binary import find
    compose = find(opts.compose)
    binary = list(compose.argv)
    project = make_example(opts.compose, "2s")
    results: dict[str, list[tuple[float, float]]] = {"sandbox": [], "sandbox-settle0": [], "sandbox-nostack": [],
                                                     "hand4": [], "hand3": []}
    try:
        C.log(f"warming image caches ({compose.label})")
        sandbox_up(project, "warm")
        C.sandbox_cli(project, "rm", "warm", "--force")
        subprocess.run([*binary, "-p", "hand-warm", "-f", str(project / "compose.yaml"), "build"], check=True,
                       capture_output=True, cwd=project)
        for i in range(n):
            for settle, key, stack in (("2s", "sandbox", True), ("0s", "sandbox-settle0", True),
                                       ("0s", "sandbox-nostack", False)):
                set_settle(project, opts.compose, settle, enabled=stack)
                name = f"w{i}{key[-1]}"
                results[key].append(sandbox_up(project, name, stack=stack))
                C.sandbox_cli(project, "rm", name, "--force")
            results["hand4"].append(by_hand(binary, project, f"hand-{i}", []))
            results["hand3"].append(by_hand(binary, project, f"hand3-{i}", ["web", "worker", "redis"]))
            C.log(f"run {i + 1}/{n}: " + ", ".join(f"{k} {C.fmt_s(v[-1][1])}" for k, v in results.items()))
    finally:
        C.cleanup_project(project)

    med = {k: (C.median([r for r, _ in v]), C.median([t for _, t in v])) for k, v in results.items()}
    labels = {"sandbox": "`sandbox up NAME` (worktree, database, container, stack; settle 2 s)",
              "sandbox-settle0": "`sandbox up NAME` with `[compose] settle = \"0s\"`",
              "sandbox-nostack": "`sandbox up NAME` with `[compose] enabled = false` (the workspace alone)",
              "hand4": "`docker compose up -d` by hand: web, worker, redis + the project's postgres",
              "hand3": "`docker compose up -d --no-deps web worker redis` by hand"}
    base = med["hand4"][1]
    rows = [(labels[k], C.fmt_s(r), C.fmt_s(t), C.fmt_ratio(t / base)) for k, (r, t) in med.items()]
    body = (C.run_header("bench_compose.py", sys.argv[1:])
            + f"\n## Per-workspace compose stacks (`bench_compose.py`, {compose.label}, median of {n})\n\n"
            + C.md_table(["what", "command returned", "web answers", "× by hand (4 services)"], rows)
            + f"\n\nThe stack's own cost in `sandbox up` (settle 0 s, less the workspace alone): "
              f"{C.fmt_s(med['sandbox-settle0'][0] - med['sandbox-nostack'][0])}, against "
              f"{C.fmt_s(med['hand4'][0])} for `docker compose up -d` by hand "
              f"({C.fmt_ratio((med['sandbox-settle0'][0] - med['sandbox-nostack'][0]) / med['hand4'][0])})."
              "\n\nThe stack part of `sandbox up` is `compose config` (resolution), the path and policy checks, "
              "the rewrite, `compose up -d` and the settle window (services that exit non-zero within it are "
              "reported); the rest is the workspace itself (worktree, database clone, container), which the "
              "by-hand run does not have.\n")
    print(body)
    if not opts.no_write:
        C.update_results(SECTION, body)


if __name__ == "__main__":
    main()
