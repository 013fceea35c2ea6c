"""Load: 4 processes create 20 workspaces at once; then a bounded random mix of ``up``, ``exec``,
``db reset``, ``db checkpoint``, ``db restore``, ``stop``, ``rm`` and ``migrate check`` runs in 4
parallel workers, some of them SIGKILLed at one of their named steps. Afterwards ``gc`` finishes
what the kills left, ``gc --dry-run`` finds nothing, no port block or database is shared, and the
data of every workspace that was not reset, restored or removed is intact.

CI: 20 workspaces, 100 operations, about a tenth of them killed. ``--soak`` (or ``SANDBOX_SOAK=1``): 40 workspaces and
``SANDBOX_SOAK_OPS`` operations (default 2000, a tenth of the killable ones killed). ``SANDBOX_SOAK_SEED`` picks the
mix. The figures are printed (``-s``) and written to ``SANDBOX_RELIABILITY_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.intents import STEPS

from .ops import KILLED, mark, marks, new_project, ok, report, sandbox, toml

PROCESSES = 4
# what an operation may answer besides 0 in a concurrent mix (another worker removed the workspace,
# or it is being made right now): exit code → words of the one line it prints
EXPECTED = {2: ("unknown workspace", "has no checkpoint"), 1: ("is still being created",)}
OP_OF = {"up": "up", "db-reset": "db-reset", "db-checkpoint": "db-checkpoint", "db-restore": "db-restore",
         "rm": "rm"}


def _report(figures: dict[str, object]) -> None:
    print("\nload figures: " + json.dumps(figures, indent=1, sort_keys=True))
    report("load", **figures)


@pytest.mark.postgres
def test_many_workspaces_and_a_random_mix_lose_nothing(tmp_path: Path, need_pg: None,
                                                       pytestconfig: pytest.Config) -> None:
    from conftest import soak
    long = soak(pytestconfig)
    per_process = 10 if long else 5
    total_ops = int(os.environ.get("SANDBOX_SOAK_OPS", "2000")) if long else 100
    kill_share = 0.1
    rng = random.Random(int(os.environ.get("SANDBOX_SOAK_SEED", "11")))
    repo = new_project(tmp_path / "demo", toml("template", 44000))
    started = time.monotonic()
    try:
        # 1. four processes create their workspaces at the same time
        names = [f"p{i}-{j}" for i in range(PROCESSES) for j in range(per_process)]
        procs = [subprocess.Popen([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), "up",
                                   *names[i * per_process:(i + 1) * per_process]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(PROCESSES)]
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0 and "Traceback" not in err, err
        for i, name in enumerate(names):
            mark(repo, name, 1000 + i)

        # 2. a bounded random mix in four workers
        touched: set[str] = set()            # reset, restored or removed: their data may change
        labels: dict[str, list[str]] = {n: [] for n in names}
        lock = threading.Lock()
        counts: Counter[str] = Counter()
        answers: Counter[str] = Counter()
        kills: Counter[str] = Counter()
        plan = []
        # reset, restore and rm (which change a workspace's data) go to two thirds of the workspaces, so
        # that a third is only ever started, stopped, checkpointed, checked and exec'd: their data must stay
        exposed = names[: len(names) * 2 // 3]
        for k in range(total_ops):
            op = rng.choice(["up", "exec", "db-reset", "db-checkpoint", "db-restore", "stop", "rm", "migrate-check"])
            kill = rng.random() < kill_share and op in OP_OF
            if op in ("db-reset", "db-restore", "rm") or (op == "up" and kill):
                target = rng.choice(exposed)
            elif op == "exec":        # a command running while its worktree is removed fails: no lock spans exec
                target = rng.choice(names[len(exposed):])
            else:
                target = rng.choice(names)
            plan.append((k, op, target, kill, rng.random()))

        def run(item: tuple[int, str, str, bool, float]) -> None:
            k, op, name, kill, pick = item
            argv: list[str]
            if op == "up":
                argv = ["up", name]
            elif op == "exec":
                argv = ["exec", name, "--", "sh", "-c", f'test "$SANDBOX_WORKSPACE" = {name} -a -n "$DATABASE_URL"']
            elif op == "db-reset":
                argv = ["db", "reset", name]
            elif op == "db-checkpoint":
                argv = ["db", "checkpoint", name, f"c{k}"]
            elif op == "db-restore":
                with lock:
                    have = labels[name]
                    label = have[int(pick * len(have))] if have else "none"
                argv = ["db", "restore", name, label]
            elif op == "stop":
                argv = ["stop", name]
            elif op == "rm":
                argv = ["rm", name]
            else:
                argv = ["migrate", "check", name]
            point = None
            if kill:
                steps = STEPS[OP_OF[op]]
                point = f"{OP_OF[op]}:{steps[int(pick * len(steps))]}"
            if op in ("db-reset", "db-restore", "rm") or (op == "up" and kill):
                with lock:
                    touched.add(name)
            res = sandbox(repo, *argv, kill=point, timeout=600)
            assert "Traceback" not in res.stderr, (argv, res.stderr)
            with lock:
                counts[op] += 1
                answers[str(res.returncode)] += 1
                if point and res.returncode == KILLED:
                    kills[point] += 1
            if res.returncode == 0:
                if op == "db-checkpoint":
                    with lock:
                        labels[name].append(f"c{k}")
                elif op == "rm":
                    with lock:
                        labels[name] = []
                return
            if res.returncode == KILLED and point:
                return
            words = EXPECTED.get(res.returncode, ())
            assert any(w in res.stderr for w in words), (argv, point, res.returncode, res.stderr)
            assert len(res.stderr.strip().splitlines()) == 1, res.stderr

        with ThreadPoolExecutor(max_workers=PROCESSES) as pool:
            list(pool.map(run, plan))

        # 3. gc finishes what the kills left; afterwards there is nothing more to collect
        ok(sandbox(repo, "gc"))
        assert json.loads(ok(sandbox(repo, "gc", "--dry-run", "--json")).stdout) == []
        sb = Sandbox.open(repo)
        assert sb.registry.intents() == []
        rows = json.loads(ok(sandbox(repo, "ls", "--json")).stdout)
        for r in rows:
            if r["state"] != "ready":
                ok(sandbox(repo, "up", r["name"]))         # a stopped, or kept broken, workspace starts again
        rows = json.loads(ok(sandbox(repo, "ls", "--json")).stdout)
        assert all(r["state"] == "ready" and r["health"]["ok"] for r in rows), rows
        # nothing shared: port blocks, databases, roles
        blocks = [set(range(r["ports"][0], r["ports"][1] + 1)) for r in rows]
        assert sum(len(b) for b in blocks) == len(set().union(*blocks))
        dbs = [r["database"]["url"].rsplit("/", 1)[1] for r in rows]
        assert len(set(dbs)) == len(dbs)
        owned = [res for res in sb.db.owned() if res.kind == "database" and res.detail == "workspace"]
        assert sorted(res.workspace or "" for res in owned) == sorted(r["name"] for r in rows)
        # data: every workspace nobody reset, restored or removed still holds its own mark
        untouched = [n for n in names if n not in touched]
        for i, name in enumerate(names):
            if name in untouched:
                assert marks(repo, name) == {1000 + i}, name
        figures = {"workspaces": len(names), "operations": sum(counts.values()), "by_operation": dict(counts),
                   "exit_codes": dict(answers), "kills": dict(kills), "kills_total": sum(kills.values()),
                   "untouched_workspaces_checked": len(untouched), "lost": 0,
                   "seconds": round(time.monotonic() - started)}
        _report(figures)
        assert sum(kills.values()) > 0 or total_ops < 20
    finally:
        try:
            Sandbox.open(repo).deinit(force=True)
        except Exception as exc:  # noqa: BLE001 - best effort cleanup, reported
            print(f"cleanup of {repo} failed: {exc}")
