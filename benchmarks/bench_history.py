#!/usr/bin/env python3
"""Large histories: ``migrate status`` and ``migrate check`` on a generated 120-revision project.

sandbox reads revisions statically (``ast``: ``revision``/``down_revision`` as literals) and runs
alembic only in the project's environment (a container of its image, with Docker), caching each
revision's offline SQL by the hash of its file. This measures, on the demo project grown to 120
linear revisions plus one new revision in a workspace:

1. ``sandbox migrate status`` through the CLI (goal ≤ 1 s), against the usual alternative of
   asking alembic itself (``alembic heads`` + ``alembic history``, which imports every revision);
2. ``sandbox migrate check NAME`` of the one new revision through the CLI, first run (offline SQL
   rendered in a container) and warm (offline SQL cached); goal ≤ 3 s plus the replay, whose time
   is reported apart (the library's replay step, measured on its own).

Usage: ``python benchmarks/bench_history.py [-n 5] [--runtime docker|none]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SECTION = "history"
REVISIONS = 120

REVISION = '''"""step {i}

Revision ID: r{i:04d}
Revises: {down}
"""
from alembic import op
import sqlalchemy as sa

revision = "r{i:04d}"
down_revision = {down_lit}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("c{i:04d}", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "c{i:04d}")
'''


def grow(project: Path, count: int) -> str:
    """Add ``count`` linear revisions after the demo's 0001; returns the head."""
    versions = project / "migrations" / "versions"
    down = "0001"
    for i in range(2, count + 1):
        (versions / f"r{i:04d}_step.py").write_text(
            REVISION.format(i=i, down=down, down_lit=repr(down)))
        down = f"r{i:04d}"
    C.git(project, "add", "-A")
    C.git(project, "commit", "-q", "-m", f"{count} revisions")
    return down


def timed_cli(project: Path, *args: str, ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    res = C.sandbox_cli(project, *args, check=False)
    dt = time.perf_counter() - t0
    if res.returncode not in ok:
        raise RuntimeError(f"sandbox {' '.join(args)} exited {res.returncode}: {res.stderr[-600:]}")
    return dt


def alembic_history(project: Path) -> float:
    """The usual alternative: alembic's own CLI reads the graph by importing every revision."""
    alembic = shutil.which("alembic") or str(Path(sys.executable).parent / "alembic")
    t0 = time.perf_counter()
    for args in (["heads"], ["history"]):
        subprocess.run([alembic, "-c", "alembic.ini", *args], cwd=project, check=True, capture_output=True,
                       env={**C.os.environ, "DATABASE_URL": "postgresql://x@localhost/x"})
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--runtime", default="docker", choices=("docker", "none"))
    args = ap.parse_args(argv)
    server = "docker" if args.runtime == "docker" else "local"
    project = C.make_project("history", strategy="snapshot", server=server, runtime=args.runtime, port_base=41000)
    try:
        head = grow(project, REVISIONS)
        C.log(f"{REVISIONS} revisions, head {head}; init")
        C.sandbox_cli(project, "init", timeout=900)
        C.sandbox_cli(project, "up", "w", timeout=300)
        ws = project / ".sandbox" / "worktrees" / "w"
        new = ws / "migrations" / "versions" / "zz_new.py"
        new.write_text(REVISION.format(i=9999, down=head, down_lit=repr(head)).replace("r9999", "znew"))
        if args.runtime == "docker":
            C.sandbox_cli(project, "exec", "w", "--", "sh", "-c",
                          "git add -A && git -c user.name=b -c user.email=b@x commit -qm new")
        else:
            C.git(ws, "add", "-A")
            C.git(ws, "commit", "-q", "-m", "new")

        status = [timed_cli(project, "migrate", "status", "--json") for _ in range(args.n)]
        alembic = [alembic_history(project) for _ in range(args.n)]
        shutil.rmtree(project / ".sandbox" / "cache", ignore_errors=True)
        cold = timed_cli(project, "migrate", "check", "w", "--json", ok=(0, 1))
        warm = [timed_cli(project, "migrate", "check", "w", "--json", ok=(0, 1)) for _ in range(args.n)]

        # the replay alone (library): a fresh clone, upgrade to the new revision, catalog diffs
        sb = C.open_sandbox(project)
        from sandbox.migrations.context import GateContext
        from sandbox.migrations.findings import Report
        from sandbox.migrations.gate.clock import GateClock
        from sandbox.migrations.gate.replay import replay as replay_gate
        from sandbox.migrations.gate.static import static
        ctx = GateContext.from_sandbox(sb)
        rec = sb.record("w")
        main_revs, _ = ctx.trees.main()
        new_revs = ctx.trees.new_revisions(rec, main_revs)
        replay = []
        clock = GateClock(ctx.config.migrations.gate_timeout)
        rendered = static(ctx, clock, rec, new_revs, Report(workspace="w"))     # cached offline SQL
        for _ in range(args.n):
            t0 = time.perf_counter()
            replay_gate(ctx, GateClock(ctx.config.migrations.gate_timeout), rec, new_revs, Report(workspace="w"),
                        offline=rendered)
            replay.append(time.perf_counter() - t0)

        rows = [
            ["`migrate status` (CLI, 120 revisions)", C.fmt_s(C.median(status)), "≤ 1 s",
             "met" if C.median(status) <= 1 else "missed"],
            ["`alembic heads` + `alembic history` (imports every revision)", C.fmt_s(C.median(alembic)), "", ""],
            ["`migrate check` of 1 new revision, offline SQL not cached (CLI)", C.fmt_s(cold), "", ""],
            ["`migrate check` of 1 new revision, cached (CLI)", C.fmt_s(C.median(warm)), "", ""],
            ["  of which the replay on a fresh clone (library)", C.fmt_s(C.median(replay)), "", ""],
            ["  check minus replay", C.fmt_s(C.median(warm) - C.median(replay)), "≤ 3 s",
             "met" if C.median(warm) - C.median(replay) <= 3 else "missed"],
        ]
        body = (f"## Large histories ({REVISIONS} revisions, runtime {args.runtime})\n\n"
                + C.run_header("bench_history.py", argv)
                + f"\nMedians of {args.n}. sandbox's status reads the revision files with `ast`; alembic's "
                  "own CLI imports each one. `migrate check` renders the new revision's offline SQL in the "
                  "project's environment (a container with Docker) once per file hash, then lints it and "
                  "replays it on a fresh clone.\n\n"
                + C.md_table(["what", "time", "goal", ""], rows)
                + f"\n\nsandbox status vs alembic's CLI: {C.fmt_ratio(C.median(alembic) / C.median(status))} faster.\n")
        print(body)
        C.update_results(SECTION, body)
    finally:
        C.cleanup_project(project)


if __name__ == "__main__":
    main(sys.argv[1:])
