"""The intent journal and the kill points, on a real registry (SQLite) and real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.intents import KILL_POINTS, STEPS, abandoned, kill_point, operation, pending
from sandbox.registry import Registry, process_alive, process_start


def _registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / ".sandbox", create=True)


def test_an_operation_records_its_steps_and_clears_its_intent(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    with operation(reg, "db-reset", "w") as op:
        [it] = reg.intents()
        assert (it.op, it.workspace, it.step, it.status) == ("db-reset", "w", "begin", "running")
        assert not abandoned(it)                            # this process is alive
        op.step("checkpointed", checkpoint="auto-1")
        assert reg.intents()[0].step == "checkpointed" and reg.intents()[0].data == {"checkpoint": "auto-1"}
    assert reg.intents() == []


def test_a_failure_before_any_change_clears_it_and_after_a_change_leaves_it_failed(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    with pytest.raises(RuntimeError), operation(reg, "rm", "w") as op:
        op.step("teardown", dirty=False)
        raise RuntimeError("refused")
    assert reg.intents() == []
    with pytest.raises(RuntimeError), operation(reg, "rm", "w") as op:
        op.step("removing")
        raise RuntimeError("the database server went away")
    [it] = reg.intents()
    assert it.status == "failed" and it.step == "removing" and "went away" in (it.cause or "")
    assert abandoned(it) and pending(reg, "w") == [it] and pending(reg, "other") == []


def test_an_intent_of_a_dead_process_is_abandoned_and_a_reused_pid_is_not_its_owner(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)
    assert not process_alive(dead)
    me = process_start(os.getpid())
    assert me is not None and process_alive(os.getpid(), me)
    assert not process_alive(os.getpid(), str(int(me) + 1)) 
    iid = reg.begin_intent("up", "w")
    with reg.transaction() as conn:
        conn.execute("UPDATE intents SET pid = ? WHERE id = ?", (dead, iid))
    assert abandoned(reg.intents()[0])


def test_steps_and_kill_points_are_checked() -> None:
    assert all(steps[0] == "begin" for steps in STEPS.values())
    assert "merge:main-moved" in KILL_POINTS and "snapshot:swapped" in KILL_POINTS
    with pytest.raises(ValueError):
        kill_point("merge:nowhere")


@pytest.mark.parametrize("wanted, survives", [("up:begin", False), ("up:begin#2", True), ("rm:begin", True),
                                              ("rm:begin,up:begin", False), ("", True)])
def test_a_kill_point_kills_its_own_process_when_named(wanted: str, survives: bool) -> None:
    res = subprocess.run([sys.executable, "-c", "from sandbox.intents import kill_point\n"
                          "kill_point('up:begin')\nprint('alive')"],
                         capture_output=True, text=True, env={**os.environ,
                                                              "SANDBOX_KILL_AT": wanted})
    assert (res.returncode == 0 and "alive" in res.stdout) if survives else res.returncode == -9
