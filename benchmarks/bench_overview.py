#!/usr/bin/env python3
"""``sandbox overview --json`` over 10 workspaces on a 5,000-file repository (goal: under 1 s).

The demo project grows 5,000 generated files (in 50 folders) on main. Ten workspaces
(``runtime = "none"``, template databases on a local server) each commit changes to a few files,
half of them overlapping a neighbour's; three also carry uncommitted edits and one an untracked
file; two add a revision (one drops a column another's code reads). Then ``sandbox overview
--json`` runs through the CLI: once cold (offline SQL rendered, sandbox's indexes built) and ``-n``
times warm (what a person or the dashboard sees on every refresh). Nothing here asserts a time.

Usage: ``python benchmarks/bench_overview.py [-n 5] [--workspaces 10] [--files 5000]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SECTION = "overview"

REVISION = '''"""{rev}

Revision ID: {rev}
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    {body}


def downgrade() -> None:
    pass
'''


def module(tree: Path, n: int) -> Path:
    return tree / "src" / f"pkg{n % 50:02d}" / f"mod{n:05d}.py"


def grow(project: Path, files: int) -> None:
    for i in range(files):
        module(project, i).parent.mkdir(parents=True, exist_ok=True)
        module(project, i).write_text("".join(f"def f{j}():\n    return {i} + {j}\n\n" for j in range(8)))
    C.git(project, "add", "-A")
    C.git(project, "commit", "-q", "-m", f"{files} files")


def edit(path: Path, tag: str) -> None:
    text = path.read_text()
    path.write_text(text.replace("return", f"return {tag} and", 1))


def prepare(project: Path, count: int, files: int) -> list[str]:
    names = [f"w{i}" for i in range(count)]
    C.sandbox_cli(project, "up", *names, timeout=900)
    for i, name in enumerate(names):
        tree = project / ".sandbox" / "worktrees" / name
        for k in range(4):                 # w_i and w_{i+1} share two files: half conflict
            n = (i * 2 + k) % files
            edit(module(tree, n), f"'{name}'")
        if i == 0:
            (tree / "migrations" / "versions" / "w0drop.py").write_text(
                REVISION.format(rev="w0drop", body='op.drop_column("users", "email")'))
        if i == 1:
            (tree / "app" / "report.py").write_text("# reads users.email\nQUERY = 'SELECT email FROM users'\n")
            (tree / "migrations" / "versions" / "w1add.py").write_text(
                REVISION.format(rev="w1add", body='op.add_column("posts", sa.Column("w1", sa.Text()))'))
        C.git(tree, "add", "-A")
        C.git(tree, "commit", "-q", "-m", f"{name}'s work")
        if i % 3 == 0:                     # uncommitted edits, and an untracked file
            edit(module(tree, (files - 1 - i) % files), f"'{name} later'")
            (tree / f"notes-{name}.txt").write_text("untracked\n")
    return names


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--workspaces", type=int, default=10)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--no-results", action="store_true", help="do not write benchmarks/RESULTS.md")
    ap.add_argument("--keep", action="store_true", help="keep the project (benchmarks/.work/overview) to profile")
    args = ap.parse_args(argv)
    project = C.make_project("overview", strategy="template", server="local", runtime="none", port_base=42000)
    try:
        grow(project, args.files)
        C.log("init")
        C.sandbox_cli(project, "init", timeout=900)
        C.log(f"{args.workspaces} workspaces")
        prepare(project, args.workspaces, args.files)
        t0 = time.perf_counter()
        cold = C.sandbox_cli(project, "overview", "--json", timeout=600)
        cold_s = time.perf_counter() - t0
        data = json.loads(cold.stdout)
        warm: list[float] = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            C.sandbox_cli(project, "overview", "--json", timeout=600)
            warm.append(time.perf_counter() - t0)
        risky = sum(1 for p in data["pairs"] if p["risk"] != "none")
        conflicts = sum(1 for p in data["pairs"] if p["textual_conflict"])
        schema = sum(1 for p in data["pairs"] if p["schema_collision"])
        rows = [["`overview --json`, cold (offline SQL rendered, indexes built)", C.fmt_s(cold_s), "-"],
                [f"`overview --json`, warm (median of {args.n})", C.fmt_s(C.median(warm)), "< 1 s"]]
        print(C.table(["what", "time", "goal"], rows))
        print(f"{len(data['workspaces'])} workspaces, {len(data['pairs'])} pairs: {risky} with findings, "
              f"{conflicts} textual conflicts, {schema} schema collisions")
        if not args.no_results:
            body = (C.run_header("bench_overview.py", argv)
                    + f"\n{len(data['workspaces'])} workspaces on a {args.files}-file repository; "
                      f"{len(data['pairs'])} pairs, {conflicts} textual conflicts, {schema} schema collisions.\n\n"
                    + C.md_table(["what", "time", "goal"], rows))
            C.update_results(SECTION, "## sandbox overview\n\n" + body)
    finally:
        if not args.keep:
            C.cleanup_project(project)


if __name__ == "__main__":
    main(sys.argv[1:])
