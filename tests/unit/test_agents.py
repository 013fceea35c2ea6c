"""Agents' pure parts: background jobs (with a fake runner), briefs and merge requests in a real
registry, and the revision arithmetic of `migrate up`. The MCP server itself is tested end to end
in tests/e2e/test_agents.py."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import pytest

from sandbox.agents.jobs import Jobs
from sandbox.errors import UsageError
from sandbox.migrations.base import Revision
from sandbox.migrations.findings import Finding, Report
from sandbox.migrations.up import _ancestors, _ordered, _target
from sandbox.registry import Registry, WorkspaceRecord
from sandbox.requests import Requests, open_requests


def test_a_job_reports_its_group_output_in_chunks_and_its_exit_code() -> None:
    release = threading.Event()
    seen: list[list[str]] = []

    def runner(ws: str, argv: Sequence[str], sink) -> int:  # type: ignore[no-untyped-def]
        seen.append(list(argv))
        sink("sandbox-job-pgid 4242")
        sink("one")
        release.wait(5)
        sink("two")
        return 7

    jobs = Jobs(runner)
    job = jobs.start("a", ["make", "test"])
    first = jobs.read(job, 0, wait_s=5)
    assert first.output == "one\n" and first.running and first.exit_code is None
    assert job.pgid == 4242 and seen[0][-2:] == ["make", "test"] and seen[0][0] == "setsid"
    release.set()
    rest = jobs.read(job, first.next_offset, wait_s=5)
    while rest.running:
        rest = jobs.read(job, first.next_offset, wait_s=5)
    assert rest.output == "two\n" and rest.exit_code == 7 and not rest.running
    with pytest.raises(UsageError):
        jobs.get(job.id, "b")                    # another workspace's job is not found
    with pytest.raises(UsageError):
        jobs.start("a", [])


def test_stopping_a_job_signals_its_process_group() -> None:
    done = threading.Event()

    def runner(ws: str, argv: Sequence[str], sink) -> int:  # type: ignore[no-untyped-def]
        sink("sandbox-job-pgid 99")
        done.wait(10)
        return 143

    kills: list[list[str]] = []

    def kill(ws: str, argv: Sequence[str]) -> None:
        kills.append(list(argv))
        done.set()

    jobs = Jobs(runner)
    job = jobs.start("a", ["sleep", "300"])
    chunk = jobs.stop(job, kill)
    assert not chunk.running and chunk.exit_code == 143 and job.stopped
    assert len(kills) == 1 and kills[0][-1] == "99" and "-TERM" in kills[0][2]


def test_a_failing_runner_ends_the_job_with_its_message() -> None:
    def runner(ws: str, argv: Sequence[str], sink) -> int:  # type: ignore[no-untyped-def]
        raise UsageError("workspace 'a' is not running")

    jobs = Jobs(runner)
    job = jobs.start("a", ["true"])
    chunk = jobs.read(job, 0, wait_s=5)
    while chunk.running:
        chunk = jobs.read(job, 0, wait_s=5)
    assert chunk.exit_code is None and "not running" in chunk.output


def _registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path, create=True)
    reg.insert(WorkspaceRecord(name="a", branch="a", path="/x/a", state="ready", runtime="none"))
    return reg


def test_briefs_are_kept_cleared_and_forgotten(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    req = Requests(reg)
    assert req.brief("a") is None
    req.set_brief("a", "Add nicknames.")
    assert Requests(Registry(tmp_path)).brief("a") == "Add nicknames."      # another process sees it
    req.set_brief("a", "  ")
    assert req.briefs() == {}
    req.set_brief("a", "again")
    req.forget("a")
    assert req.brief("a") is None
    with pytest.raises(UsageError):
        req.set_brief("a", "x" * 20_001)
    Registry(tmp_path).verify()                  # the registry's sentinels still hold


def test_merge_requests_supersede_go_stale_and_close(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    req = Requests(reg)
    failed = Report(workspace="a", findings=[Finding(rule="drop-table", kind="destructive", severity="error",
                                                     message="drops t")])
    first = req.record("a", "a", "c1", "please", failed)
    assert not first.ok and "--allow-destructive" in first.command
    second = req.record("a", "a", "c2", None, Report(workspace="a"))
    assert second.ok and second.command == "sandbox merge a"
    assert [r.id for r in req.open()] == [second.id]                          # the first was superseded
    branch = {"a": "c2"}
    assert [r.stale for r in open_requests(reg, lambda rec: branch[rec.name])] == [False]
    branch["a"] = "c3"
    listed = open_requests(reg, lambda rec: branch[rec.name])
    assert listed[0].stale and listed[0].current == "c3" and listed[0].to_json()["stale"]
    assert req.close("a", "merged c3") == 1 and req.open() == []


def _revs(*pairs: tuple[str, tuple[str, ...]]) -> dict[str, Revision]:
    return {rid: Revision(id=rid, down_revisions=downs, path=Path(f"{rid}.py")) for rid, downs in pairs}


def test_migrate_up_computes_what_it_applied_oldest_first() -> None:
    revs = _revs(("0001", ()), ("a001", ("0001",)), ("a002", ("a001",)), ("b001", ("0001",)))
    assert _ordered(revs, _ancestors(revs, ["a002"]) - _ancestors(revs, ["0001"])) == ["a001", "a002"]
    assert _ordered(revs, _ancestors(revs, ["a002"]) - _ancestors(revs, ["a002"])) == []
    assert _target(revs, None) == "heads" and _target(revs, "head") == "heads"
    assert _target(revs, "a002") == "a002"
    with pytest.raises(UsageError):
        _target(revs, "zzzz")


def test_only_protocol_reaches_stdout() -> None:
    """After claim_stdio, a child process, a print and the fd 1 itself reach stderr; the protocol's
    private duplicate reaches the real stdout; stdin is the null device for everything else."""
    import os
    import subprocess
    import sys
    script = (
        "import os, subprocess, sys\n"
        "from sandbox.agents.stdio import claim_stdio\n"
        "wire = claim_stdio()\n"
        "subprocess.run(['sh', '-c', 'echo child-out; read x || echo child-stdin-empty'])\n"
        "print('python-print', flush=True)\n"
        "os.write(1, b'fd1\\n')\n"
        "os.write(wire.output_fd, os.read(wire.input_fd, 100))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], input="protocol\n", capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert res.returncode == 0, res.stderr
    assert res.stdout == "protocol\n"
    for line in ("child-out", "child-stdin-empty", "python-print", "fd1"):
        assert line in res.stderr


def test_tool_errors_carry_sandboxs_message_and_unexpected_ones_are_logged(caplog) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("mcp", reason="the mcp extra is not installed")
    from mcp.server.mcpserver.exceptions import ToolError

    from sandbox.agents.mcp import _call
    from sandbox.errors import UnknownWorkspace

    def unknown() -> None:
        raise UnknownWorkspace("zz")

    def broken() -> None:
        raise RuntimeError("boom")

    with pytest.raises(ToolError) as known:
        _call("env", unknown)
    assert "zz" in str(known.value) and "unexpected" not in str(known.value)
    with caplog.at_level("ERROR", logger="sandbox.mcp"), pytest.raises(ToolError) as odd:
        _call("env", broken)
    assert "unexpected error (RuntimeError: boom)" in str(odd.value)
    assert any(r.exc_info for r in caplog.records)            # the traceback went to the log (stderr)


def test_jobs_still_running_are_stopped_when_the_server_ends() -> None:
    done = threading.Event()

    def runner(ws: str, argv: Sequence[str], sink) -> int:  # type: ignore[no-untyped-def]
        sink("sandbox-job-pgid 7")
        done.wait(10)
        return 143

    kills: list[str] = []

    def kill(ws: str, argv: Sequence[str]) -> None:
        kills.append(argv[-1])
        done.set()

    jobs = Jobs(runner)
    job = jobs.start("a", ["sleep", "300"])
    jobs.stop_all(kill)
    assert kills == ["7"] and not job.running
