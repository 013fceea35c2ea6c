"""Orchestration decisions tested on ``sandbox.testing``'s fakes: a real ``Sandbox`` (registry,
intent journal, git worktrees of a real repository) with the runtime, the database strategy,
the project runner and the clock faked. No Docker, no PostgreSQL; milliseconds each."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from sandbox.checks import OwnedResource
from sandbox.errors import CheckpointExists, InvalidLabel, UnsafeRemoval, UsageError, WorkspaceError
from sandbox.faults import KILL_ENV, STEPS
from sandbox.git import run as git
from sandbox.registry import WorkspaceRecord
from sandbox.results import EventKind
from sandbox.testing import GIT_ENV, FakeSandbox, FakeStrategy, fake_sandbox, reopen
from sandbox.workspaces.checkpoints import AUTO_CHECKPOINTS


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory in memory when the machine has one: the registry syncs every write."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="sandbox-fakes-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sb(tmp: Path) -> FakeSandbox:
    return fake_sandbox(tmp)


def _commit(path: Path, name: str) -> None:
    (path / name).write_text("work\n")
    git(path, "add", name, trusted=True)
    git(path, "commit", "-q", "-m", f"add {name}", trusted=True, env=GIT_ENV)


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


# -- rm's refusals ------------------------------------------------------------------------------------

def test_rm_refuses_uncommitted_changes_and_keeps_everything(sb: FakeSandbox) -> None:
    sb.up(["a"])
    (sb.config.worktrees_dir / "a" / "notes.txt").write_text("unsaved")
    with pytest.raises(UnsafeRemoval):
        sb.rm("a")
    assert sb.registry.get("a") is not None and sb.fakes.strategy.exists("a")
    assert (sb.config.worktrees_dir / "a" / "notes.txt").exists()
    assert sb.registry.intents() == []


def test_rm_refuses_unmerged_commits(sb: FakeSandbox) -> None:
    sb.up(["a"])
    _commit(sb.config.worktrees_dir / "a", "feature.txt")
    with pytest.raises(UnsafeRemoval):
        sb.rm("a")
    assert sb.registry.get("a") is not None


def test_rm_force_removes_every_part_and_keeps_the_branch(sb: FakeSandbox) -> None:
    sb.up(["a"])
    _commit(sb.config.worktrees_dir / "a", "feature.txt")
    res = sb.rm("a", force=True)
    assert res.to_json() == {"name": "a", "removed": True, "branch_deleted": False, "teardown_error": None}
    assert sb.registry.get("a") is None and not sb.fakes.strategy.exists("a")
    assert not (sb.config.worktrees_dir / "a").exists()
    assert sb.git.branch_exists("a")


def test_rm_refuses_when_the_teardown_hook_fails(tmp: Path) -> None:
    sb = fake_sandbox(tmp, toml='[workspace]\nruntime = "none"\ncopy = []\nteardown = ["make clean"]\n'
                                     '[database]\nseed = []\n')
    sb.up(["a"])
    sb.fakes.runtime.exec_code = 2
    with pytest.raises(WorkspaceError, match="teardown failed, nothing removed"):
        sb.rm("a")
    assert sb.registry.get("a") is not None and sb.fakes.strategy.exists("a")
    res = sb.rm("a", force=True)                 # --force removes anyway and says what failed
    assert res.teardown_error and sb.registry.get("a") is None


def test_rm_of_an_unknown_workspace_changes_nothing(sb: FakeSandbox) -> None:
    from sandbox.errors import UnknownWorkspace
    with pytest.raises(UnknownWorkspace):
        sb.rm("ghost")


# -- recovery from each named kill point ------------------------------------------------------------

def _killed_at(sb: FakeSandbox, point: str, action: str) -> FakeSandbox:
    """Run ``action`` in a child process that sandbox SIGKILLs at ``point``; a new Sandbox after it."""
    pid = os.fork()
    if pid == 0:                                  # the child: a command that dies at the kill point
        code = 0
        try:
            os.environ[KILL_ENV] = point
            child = reopen(sb)
            _ACTIONS[action](child)
        except BaseException:  # noqa: BLE001 - the parent judges by the exit status
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{point} was not reached"
    return reopen(sb)


_ACTIONS = {
    "up": lambda s: s.up(["a"]),
    "rm": lambda s: s.rm("a"),
    "db-reset": lambda s: s.db_reset("a"),
    "db-restore": lambda s: s.db_restore("a", "saved"),
    "db-checkpoint": lambda s: s.db_checkpoint("a", "other"),
    "deinit": lambda s: s.deinit(force=True),
}
POINTS = [f"{op}:{step}" for op in _ACTIONS for step in STEPS[op]
          if not (op == "up" and step == "started")]       # `started` is only reached by an existing one


def _consistent(sb: FakeSandbox) -> None:
    """Nothing half-done: no unfinished intent, and registry, worktrees and databases agree."""
    assert sb.registry.intents() == []
    recs = {r.name: r for r in sb.registry.all()}
    assert all(r.state in ("ready", "broken") for r in recs.values()), recs
    assert sb.fakes.strategy.workspaces() <= set(recs)
    worktrees = {p for p in sb.git.registered() if p.is_relative_to(sb.config.worktrees_dir)}
    assert worktrees == {Path(r.path).resolve() for r in recs.values()}


@pytest.mark.parametrize("point", POINTS)
def test_recovery_from_each_kill_point(tmp: Path, point: str) -> None:
    op = point.split(":")[0]
    sb = fake_sandbox(tmp, persistent=True)
    if op != "up":
        sb.up(["a"])
        sb.db_checkpoint("a", "saved")
    after = _killed_at(sb, point, op)
    if op == "deinit":
        with pytest.raises(UsageError, match="no longer initialised"):
            after.up(["b"])                           # the next command finishes the deinit
        assert not after.config.state_dir.exists()
        return
    after.gc()
    _consistent(after)
    rec = after.registry.get("a")
    if op == "rm":
        before_removal = STEPS["rm"].index(point.split(":")[1]) < STEPS["rm"].index("removing")
        assert (rec is not None) == before_removal
    elif op == "up":
        assert rec is None or after.up(["a"])[0].ok     # rolled back, or `up` finishes it
    else:
        assert rec is not None and rec.state == "ready" and after.fakes.strategy.exists("a")
        assert "saved" in {c.label for c in after.db_checkpoints("a")}


def test_every_workspace_operation_has_its_kill_points_tried() -> None:
    assert {p.split(":")[0] for p in POINTS} == set(_ACTIONS)


# -- gc's classification ---------------------------------------------------------------------------

def test_gc_classifies_from_typed_fields(tmp: Path) -> None:
    strategy = FakeStrategy(leftovers=[
        OwnedResource("database", "fake_ghost", "ghost", "a workspace the registry does not know"),
        OwnedResource("database", "fake_scratch", None, "a gate's copy", transient=True),
        OwnedResource("database", "fake_shared", None, "scratch: only the text says so"),   # not transient: kept
    ])
    sb = fake_sandbox(tmp, strategy=strategy)
    sb.up(["a", "b", "c"])
    dead = _dead_pid()
    sb.registry.insert(WorkspaceRecord(name="d", branch="d", path=str(sb.config.worktrees_dir / "d"),
                                       state="creating", runtime="none", pid=dead))
    sb.registry.set_state("b", "stopped")
    shutil.rmtree(sb.config.worktrees_dir / "c")            # a ready workspace lost its worktree
    plan = {(a.kind, a.id): a.action for a in sb.gc(dry_run=True)}
    assert plan[("database", "fake_ghost")] == "remove"
    assert plan[("database", "fake_scratch")] == "remove"
    assert ("database", "fake_shared") not in plan
    assert plan[("workspace", "d")] == "remove"
    assert plan[("workspace", "c")] == "mark-broken"
    assert not any(key[1] in ("a", "b") for key in plan)
    assert strategy.removed == []                            # a dry run changes nothing
    done = sb.gc()
    assert all(a.done for a in done if a.action in ("remove", "mark-broken")), done
    assert {r.id for r in strategy.removed} == {"fake_ghost", "fake_scratch"}
    assert sb.registry.get("d") is None and (sb.registry.get("c") or WorkspaceRecord).state == "broken"
    assert sb.gc(dry_run=True) == []


# -- checkpoint rules ------------------------------------------------------------------------------

def test_checkpoint_labels_of_the_automatic_ones_are_refused(sb: FakeSandbox) -> None:
    sb.up(["a"])
    with pytest.raises(InvalidLabel):
        sb.db_checkpoint("a", "auto-mine")


def test_an_existing_checkpoint_is_replaced_only_with_force(sb: FakeSandbox) -> None:
    sb.up(["a"])
    first = sb.db_checkpoint("a", "before")
    with pytest.raises(CheckpointExists):
        sb.db_checkpoint("a", "before")
    sb.fakes.clock.advance(5)
    again = sb.db_checkpoint("a", "before", force=True)
    assert again.created_at > first.created_at and again.to_json()["label"] == "before"


def test_reset_and_restore_keep_what_they_replace_and_only_the_newest_automatic_ones(sb: FakeSandbox) -> None:
    sb.up(["a"])
    sb.db_checkpoint("a", "before")
    res = sb.db_reset("a")
    assert res.checkpoint and res.checkpoint.startswith("auto-")
    for _ in range(AUTO_CHECKPOINTS + 2):
        sb.fakes.clock.advance(1)
        sb.db_restore("a", "before")
    listed = sb.db_checkpoints("a")
    autos = [c for c in listed if c.auto]
    assert len(autos) == AUTO_CHECKPOINTS
    assert [c.label for c in listed if not c.auto] == ["before"]
    assert res.checkpoint not in {c.label for c in autos}      # the oldest went first
    assert sb.fakes.strategy.databases["a"].source == "before"


def test_restoring_an_unknown_checkpoint_changes_nothing(sb: FakeSandbox) -> None:
    sb.up(["a"])
    with pytest.raises(UsageError):
        sb.db_restore("a", "nothing")
    assert sb.db_checkpoints("a") == [] and sb.registry.intents() == []


# -- events ---------------------------------------------------------------------------------------

def test_warnings_are_typed_events(sb: FakeSandbox) -> None:
    git(sb.root, "branch", "old", trusted=True)
    _commit(sb.root, "newer.txt")
    sb.up(["old"])                                             # the branch lacks main's new commit
    warnings = [e for e in sb.fakes.events if e.kind is EventKind.WARNING]
    assert [e.workspace for e in warnings] == ["old"]
    assert "lacks 1 of main's commits" in warnings[0].message


# -- the merge queue's order (sandbox.migrations.queue) ----------------------------------------------

def test_merges_go_in_order_and_a_later_one_must_contain_the_earlier(sb: FakeSandbox) -> None:
    sb.up(["a", "b"])
    for name in ("a", "b"):
        _commit(sb.config.worktrees_dir / name, f"{name}.txt")
    first = sb.merge("b")
    assert first.ok and first.merged
    second = sb.merge("a")                       # main moved: a lacks b's commit (merge = "ff")
    assert not second.merged and "branch-behind-main" in {f.rule for f in second.findings}
    assert sb.git.rev("HEAD") == first.commit    # nothing merged
    assert sb.sync("a").to_json()["merged"]
    third = sb.merge("a")
    assert third.ok and third.merged
    assert [m["workspace"] for m in sb.registry.merges()] == ["b", "a"]
    # a's merge contains b's (git exits 1, an error, when it is not an ancestor); commit dates in
    # one second do not order anything, ancestry does
    git(sb.root, "merge-base", "--is-ancestor", first.commit, third.commit, trusted=True)
    assert sb.git.rev("HEAD") == third.commit
    assert sb.registry.intents() == []


def test_merge_refuses_uncommitted_work_and_changes_nothing(sb: FakeSandbox) -> None:
    sb.up(["a"])
    _commit(sb.config.worktrees_dir / "a", "a.txt")
    (sb.config.worktrees_dir / "a" / "a.txt").write_text("changed, not committed\n")
    main = sb.git.rev("HEAD")
    with pytest.raises(WorkspaceError):
        sb.merge("a")
    assert sb.git.rev("HEAD") == main and sb.registry.merges() == []


# -- many workspaces -------------------------------------------------------------------------------

def test_deinit_force_removes_every_workspace_and_the_state(sb: FakeSandbox) -> None:
    sb.up(["a", "b", "c", "d"])
    _commit(sb.config.worktrees_dir / "c", "work.txt")
    with pytest.raises(UnsafeRemoval):
        sb.deinit()                                  # c holds unmerged work: refused, nothing touched
    assert len(sb.registry.all()) == 4
    res = sb.deinit(force=True)
    assert sorted(res.removed_workspaces) == ["a", "b", "c", "d"]
    assert sorted(res.kept_branches) == ["a", "b", "c", "d"]
    assert not sb.config.state_dir.exists() and sb.fakes.strategy.workspaces() == set()


def test_ls_rows_have_the_contract_shape(sb: FakeSandbox) -> None:
    sb.up(["a", "b"])
    rows = [r.to_json() for r in sb.ls()]
    assert [r["name"] for r in rows] == ["a", "b"]
    for r in rows:
        assert {"name", "branch", "path", "state", "cause", "registry_state", "runtime", "ports", "container",
                "database", "health", "migrations", "git"} <= set(r)
        assert r["git"]["behind_main"] == 0 and r["container"] == {"status": "none"}
        assert "fake-secret" not in str(r)                                      # no secrets in ls
