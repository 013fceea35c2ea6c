#!/usr/bin/env python3
"""``sandbox mcp``: from spawning the server to the answer of ``workspace_info``.

An agent's client starts the server when a session begins, so its start-up is on every session's
critical path. This measures, on the demo project with one workspace, the wall time from spawning
``sandbox mcp --workspace w`` (the installed console script, over stdio, with the SDK's own client)
through ``initialize`` to the structured answer of ``workspace_info`` (goal < 1.5 s), and, for
scale, ``tools/list`` and a second ``workspace_info`` on the warm server, and ``sandbox ls --json``
through the CLI.

Usage: ``python benchmarks/bench_mcp.py [-n 5] [--runtime docker|none]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SECTION = "mcp"
GOAL_S = 1.5


def console_script() -> str:
    found = shutil.which("sandbox", path=os.path.dirname(sys.executable))
    if not found:
        raise SystemExit("the sandbox console script is not installed beside this interpreter")
    return found


async def one_session(project: Path) -> tuple[float, float, float]:
    """(spawn → workspace_info answered, tools/list, warm workspace_info), in seconds."""
    from mcp import ClientSession, StdioServerParameters, stdio_client
    env = {**os.environ, "PYTHONPATH": str(C.REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    params = StdioServerParameters(command=console_script(), args=["--project", str(project), "mcp",
                                                                   "--workspace", "w"], env=env)
    with open(os.devnull, "w") as sink:
        t0 = time.perf_counter()
        async with stdio_client(params, errlog=sink) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            res = await session.call_tool("workspace_info", {})
            first = time.perf_counter() - t0
            assert not res.is_error and res.structured_content and res.structured_content["name"] == "w"
            t1 = time.perf_counter()
            await session.list_tools()
            listing = time.perf_counter() - t1
            t2 = time.perf_counter()
            await session.call_tool("workspace_info", {})
            warm = time.perf_counter() - t2
    return first, listing, warm


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--runtime", default="docker", choices=("docker", "none"))
    args = ap.parse_args(argv)
    server = "docker" if args.runtime == "docker" else "local"
    project = C.make_project("mcp", strategy="snapshot", server=server, runtime=args.runtime, port_base=42000)
    try:
        C.sandbox_cli(project, "init", timeout=900)
        C.sandbox_cli(project, "up", "w", "--brief", "Benchmark the MCP server.", timeout=300)
        runs = [anyio.run(one_session, project) for _ in range(args.n + 1)][1:]     # the first warms caches
        firsts, listings, warms = zip(*runs)
        ls = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            C.sandbox_cli(project, "ls", "--json")
            ls.append(time.perf_counter() - t0)
        first = C.median(firsts)
        rows = [
            ["spawn `sandbox mcp` → `workspace_info` answered", C.fmt_s(first), f"< {GOAL_S:g} s",
             "met" if first < GOAL_S else "missed"],
            ["`tools/list` (warm server)", C.fmt_s(C.median(listings)), "", ""],
            ["`workspace_info` (warm server)", C.fmt_s(C.median(warms)), "", ""],
            ["`sandbox ls --json` (CLI, for scale)", C.fmt_s(C.median(ls)), "", ""],
        ]
        body = (f"## MCP server start-up (runtime {args.runtime})\n\n"
                + C.run_header("bench_mcp.py", argv)
                + f"\nMedians of {args.n} sessions, each a fresh server process spawned through the console "
                  "script and driven by the `mcp` SDK's stdio client. Importing the SDK is most of the "
                  "start-up; sandbox imports it only in `sandbox mcp`.\n\n"
                + C.md_table(["what", "time", "goal", ""], rows) + "\n")
        print(body)
        C.update_results(SECTION, body)
    finally:
        C.cleanup_project(project)


if __name__ == "__main__":
    main(sys.argv[1:])
