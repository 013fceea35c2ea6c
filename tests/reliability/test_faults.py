"""A SIGKILL at every named step of every operation (``sandbox.intents.KILL_POINTS``), each followed
by ``gc`` and the next command: main is never half-merged, the baseline is never damaged or behind
main, no other workspace is touched, and no data is lost.

The kill is exact: ``SANDBOX_KILL_AT=<op>:<step>`` makes the process SIGKILL itself right after
it recorded that step (the test asserts that it died of SIGKILL, so a kill point that is never
reached fails). Workspaces use ``runtime = "none"`` and a local server, so each case takes
seconds; the snapshot strategy (a cluster per workspace) has cases of its own for the steps where
a database is stopped or replaced. One case runs a merge with the Docker runtime.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.intents import KILL_POINTS, STEPS

from .ops import (KILLED, add_main_revision, add_workspace_revision, assert_sound, checkpoints, ls, mark, marks,
                  new_project, ok, report, sandbox, toml)

# (operation, kill point, strategy). Every kill point is in at least one case (checked below).
CASES: list[tuple[str, str, str]] = [
    (op, f"{op}:{step}", "template") for op, steps in STEPS.items() if op != "deinit" for step in steps
] + [
    ("db-reset", "template:copied#2", "template"),        # the reset's own copy (#1 is its automatic checkpoint)
    ("db-restore", "template:copied#2", "template"),
    ("db-checkpoint", "template:copied", "template"),
    ("migrate-rebase", "template:copied#2", "template"),
    ("db-reset", "db-reset:checkpointed", "snapshot"),
    ("db-reset", "snapshot:stopped", "snapshot"),
    ("db-reset", "snapshot:swapped", "snapshot"),
    ("db-restore", "snapshot:stopped", "snapshot"),
    ("db-restore", "snapshot:swapped", "snapshot"),
    ("migrate-rebase", "snapshot:swapped", "snapshot"),
]
DEINIT = [f"deinit:{step}" for step in STEPS["deinit"]]
BYSTANDER = {"by": {42}}
_counter = itertools.count(1)


def test_every_kill_point_is_tried() -> None:
    tried = {point.split("#")[0] for _, point, _ in CASES} | set(DEINIT)
    assert tried == set(KILL_POINTS)


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[
        Callable[[str], Path]]:
    """One project per strategy for the whole module, each with a bystander workspace ``by``."""
    from conftest import pg_bin_dir, service_missing
    if pg_bin_dir() is None:
        service_missing("PostgreSQL binaries not found")
    made: dict[str, Path] = {}

    def get(strategy: str) -> Path:
        if strategy not in made:
            port_base = {"template": 43000, "snapshot": 43400}[strategy]
            extra = 'pool_size = "400M"\n' if strategy == "snapshot" else ""
            repo = new_project(tmp_path_factory.mktemp(f"faults-{strategy}") / "demo", toml(strategy, port_base,
                                                                                              extra=extra))
            made[strategy] = repo
            ok(sandbox(repo, "up", "by"))
            mark(repo, "by", 42)
            ok(sandbox(repo, "db", "checkpoint", "by", "by-one"))
        return made[strategy]

    yield get
    for repo in made.values():
        try:
            Sandbox.open(repo).deinit(force=True)
        except Exception as exc:  # noqa: BLE001 - best effort cleanup, reported
            print(f"cleanup of {repo} failed: {exc}")


def _prepare(repo: Path, op: str, point: str, victim: str) -> list[str]:
    """Make the state the operation starts from; return its command line."""
    if op == "up":
        if point == "up:started":
            ok(sandbox(repo, "up", victim))
            ok(sandbox(repo, "stop", victim))
        return ["up", victim]
    ok(sandbox(repo, "up", victim))
    mark(repo, victim, 1)
    if op == "rm":
        return ["rm", victim]
    if op == "db-reset":
        return ["db", "reset", victim]
    if op == "db-restore":
        ok(sandbox(repo, "db", "checkpoint", victim, "one"))
        mark(repo, victim, 2)
        return ["db", "restore", victim, "one"]
    if op == "db-checkpoint":
        return ["db", "checkpoint", victim, "cp"]
    if op in ("migrate-rebase", "sync"):
        add_workspace_revision(repo, victim, f"w{victim}")
        add_main_revision(repo, f"m{victim}")          # main moves on: the workspace is behind
        return ["migrate", "rebase", victim] if op == "migrate-rebase" else ["sync", victim]
    if op == "merge":
        add_workspace_revision(repo, victim, f"w{victim}")
        return ["merge", victim]
    raise AssertionError(op)


def _data_kept(repo: Path, victim: str, wanted: set[int]) -> None:
    """``wanted`` is in the live database or in one of its checkpoints (restored to look)."""
    if marks(repo, victim) >= wanted:
        return
    for label in reversed(checkpoints(repo, victim)):
        ok(sandbox(repo, "db", "restore", victim, label))
        if marks(repo, victim) >= wanted:
            return
    raise AssertionError(f"{wanted} lost from {victim}")


@pytest.mark.postgres
@pytest.mark.parametrize("op, point, strategy", CASES, ids=[f"{p}-{s}" for _, p, s in CASES])
def test_a_kill_at_every_step_is_finished_or_undone(projects: Callable[[str], Path], op: str, point: str,
                                                    strategy: str) -> None:
    repo = projects(strategy)
    victim = f"v{next(_counter)}"
    argv = _prepare(repo, op, point, victim)
    main_before = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()
    by_checkpoints = checkpoints(repo, "by")

    killed = sandbox(repo, *argv, kill=point)
    assert killed.returncode == KILLED, f"{point} was not reached: {killed.returncode}\n{killed.stderr}"

    # doctor (and ls, for a workspace's own operations) tell the truth before anything is repaired
    left = Sandbox.open(repo).registry.intents()
    doctor = json.loads(ok(sandbox(repo, "doctor", "--json"), 0, 1).stdout)
    failed = {c["name"] for c in doctor["checks"] if not c["ok"] and c["required"]}
    if left:
        assert "operations" in failed, doctor
        if op == "merge" and left[0].step in ("main-moved", "recorded"):
            assert "baseline head" in failed, doctor            # main moved, the baseline not yet
        elif op != "merge":
            row = ls(repo).get(victim)
            assert row is None or (row["state"] != "ready" and not row["health"]["ok"]), row
    actions = json.loads(ok(sandbox(repo, "gc", "--json")).stdout)
    assert any(a["kind"] == "operation" and a["done"] for a in actions) or not actions, actions
    assert_sound(repo, bystanders=BYSTANDER)
    assert checkpoints(repo, "by") == by_checkpoints

    # the next command, then what the operation promised
    rows = ls(repo)
    if op == "up":
        ok(sandbox(repo, "up", victim))
        assert ls(repo)[victim]["state"] == "ready"
        assert marks(repo, victim) == set()            # a fresh clone of the baseline
    elif op == "rm":
        if victim in rows:
            assert rows[victim]["state"] == "ready", rows[victim]
            assert marks(repo, victim) == {1}          # nothing was removed
            ok(sandbox(repo, "rm", victim))
        assert victim not in ls(repo)
        assert not any(r.workspace == victim for r in Sandbox.open(repo).db.owned())
    elif op == "db-reset":
        assert rows[victim]["state"] == "ready" and rows[victim]["database"]["answers"]
        _data_kept(repo, victim, {1})
    elif op == "db-restore":
        assert rows[victim]["state"] == "ready" and rows[victim]["database"]["answers"]
        assert marks(repo, victim) in ({1}, {1, 2})    # restored, or untouched
        _data_kept(repo, victim, {1, 2})
    elif op == "db-checkpoint":
        assert marks(repo, victim) == {1}
        if "cp" in checkpoints(repo, victim):
            mark(repo, victim, 3)
            ok(sandbox(repo, "db", "restore", victim, "cp"))
            assert marks(repo, victim) == {1}
    elif op in ("migrate-rebase", "sync"):
        ok(sandbox(repo, *argv))                       # the next command: the same one, now complete
        sb = Sandbox.open(repo)
        rec = sb.record(victim)
        assert sb.tool.current(sb.conninfo(victim)) == sb.tool.heads(Path(rec.path)) == [f"w{victim}"]
        assert json.loads(ok(sandbox(repo, "migrate", "check", victim, "--json")).stdout)["ok"]
        _data_kept(repo, victim, {1})
    elif op == "merge":
        main_now = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()
        if main_now == main_before:
            ok(sandbox(repo, "merge", victim))         # main did not move: merging again works
        assert Sandbox.open(repo).main_heads() == [f"w{victim}"]
        assert_sound(repo, bystanders=BYSTANDER)
        ok(sandbox(repo, "up", f"n{victim}"))          # a new workspace starts at main's head
        sb = Sandbox.open(repo)
        assert sb.tool.current(sb.conninfo(f"n{victim}")) == [f"w{victim}"]
        ok(sandbox(repo, "rm", f"n{victim}", "--delete-branch"))
    if victim in ls(repo):
        ok(sandbox(repo, "rm", victim, "--force", "--delete-branch"))
    assert_sound(repo, bystanders=BYSTANDER)
    report("fault", op=op, point=point, strategy=strategy, runtime="none",
           recovery=[a["action"] for a in actions if a["kind"] == "operation"], lost=0)


@pytest.mark.postgres
@pytest.mark.parametrize("point", DEINIT)
def test_a_killed_deinit_is_finished_by_the_next_command(tmp_path: Path, need_pg: None, point: str) -> None:
    repo = new_project(tmp_path / "demo", toml("template", 43800))
    ok(sandbox(repo, "up", "a", "b"))
    killed = sandbox(repo, "deinit", kill=point)
    assert killed.returncode == KILLED, killed.stderr
    nxt = sandbox(repo, "ls")
    assert nxt.returncode == 2 and "interrupted `sandbox deinit` was finished" in nxt.stderr, nxt.stderr
    assert len(nxt.stderr.strip().splitlines()) == 1
    assert not (repo / ".sandbox").exists()
    assert subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True,
                          text=True).stdout.count("\n") == 1
    assert {"a", "b"} <= set(subprocess.run(["git", "-C", str(repo), "branch", "--format=%(refname:short)"],
                                            capture_output=True, text=True).stdout.split())
    ok(sandbox(repo, "init"))                         # the project can start again
    ok(sandbox(repo, "up", "a"))
    Sandbox.open(repo).deinit(force=True)
    report("fault", op="deinit", point=point, strategy="template", runtime="none", recovery=["roll-forward"], lost=0)


def test_the_docs_name_every_kill_point() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    missing = [p for p in KILL_POINTS if f"`{p}`" not in docs]
    assert not missing, f"docs/reliability.md does not name {missing}"
