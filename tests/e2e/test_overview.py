"""`sandbox overview --json` on the fixture of issue 18 (real git, real Postgres, real alembic):

- a and b change the same line of one file;
- c changes another file;
- d adds a revision that drops a column, and b's code reads that column;
- e has only uncommitted edits that overlap a.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox

from .conftest import add_revision, cli, git, toml_for

REPORT = "app/report.py"
LINE = '        print(f"{users} users, {posts} posts")\n'


def edit_line(tree: Path, new: str) -> None:
    path = tree / REPORT
    text = path.read_text()
    assert LINE in text
    path.write_text(text.replace(LINE, new))


def overview(repo: Path) -> dict[str, Any]:
    return json.loads(cli(repo, "overview", "--json").stdout)


def pair(ov: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    return next(p for p in ov["pairs"] if {p["a"], p["b"]} == {a, b})


def ws(ov: dict[str, Any], name: str) -> dict[str, Any]:
    return next(w for w in ov["workspaces"] if w["name"] == name)


def kinds(p: dict[str, Any]) -> set[str]:
    return {f["kind"] for f in p["findings"]}


def build_fixture(repo: Path) -> dict[str, Path]:
    cli(repo, "up", "a", "b", "c", "d", "e")
    sb = Sandbox.open(repo)
    tree = {n: Path(sb.record(n).path) for n in "abcde"}
    edit_line(tree["a"], '        print(f"a: {users} users and {posts} posts")\n')
    git(tree["a"], "commit", "-qam", "a rewords the report")
    edit_line(tree["b"], '        print(f"{users} users, {posts} posts", conn.execute("SELECT email FROM users").fetchall())\n')
    git(tree["b"], "commit", "-qam", "b lists the users' email addresses")
    (tree["c"] / "app" / "__init__.py").write_text('"""The demo application (c was here)."""\n')
    git(tree["c"], "commit", "-qam", "c documents the package")
    add_revision(tree["d"], "d1drop", "0001", 'op.drop_column("users", "email")')
    edit_line(tree["e"], '        print(f"e: {users} u / {posts} p")\n')      # not committed
    return tree


@pytest.mark.postgres
def test_overview_forecasts_the_fixture(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    tree = build_fixture(repo)
    ov = overview(repo)

    assert ov["main"]["commit"] == git(repo, "rev-parse", "main").strip()
    assert ov["main"]["head"] == "0001"

    ab = pair(ov, "a", "b")
    assert ab["textual_conflict"] and REPORT in ab["conflicts"] and ab["risk"] == "high"
    assert "conflict" in kinds(ab)

    ac = pair(ov, "a", "c")
    assert ac["findings"] == [] and ac["risk"] == "none" and not ac["overlap"]

    db = pair(ov, "d", "b")
    breaks = [f for f in db["findings"] if f["kind"] == "schema-breaks"]
    assert breaks and breaks[0]["object"] == "public.users.email" and breaks[0]["by"] == "d"
    assert "email" in breaks[0]["message"] and breaks[0]["revision"] == "d1drop"
    assert db["schema_collision"] and not db["textual_conflict"]

    ea = pair(ov, "e", "a")
    assert not ws(ov, "e")["notes"], ws(ov, "e")
    assert "uncommitted-conflict" in kinds(ea) and REPORT in ea["conflicts"]
    e = ws(ov, "e")
    assert e["uncommitted"]["changed"] == [REPORT] and e["ahead"] == 0
    # e's own index is untouched: the edit is still unstaged there
    assert git(tree["e"], "diff", "--cached", "--name-only") == ""
    assert git(tree["e"], "diff", "--name-only").split() == [REPORT]

    d = ws(ov, "d")
    assert d["revisions"]["new"] == ["d1drop"] and d["revisions"]["on_main_head"] is True
    assert ws(ov, "a")["ahead"] == 1 and ws(ov, "a")["merges_cleanly"] is True
    assert all(w["gate"]["state"] == "never" for w in ov["workspaces"])

    # the last gate result follows the branch: pass, then stale after a commit
    cli(repo, "migrate", "check", "b", "--json")
    assert ws(overview(repo), "b")["gate"]["state"] == "pass"
    (tree["b"] / "notes.txt").write_text("b's notes\n")
    git(tree["b"], "add", "notes.txt")
    git(tree["b"], "commit", "-qm", "b notes")
    assert ws(overview(repo), "b")["gate"]["state"] == "stale"

    # after c merges, the others are behind main
    cli(repo, "merge", "c", "--json")
    after = overview(repo)
    assert ws(after, "c")["ahead"] == 0
    for name in "abde":
        assert ws(after, name)["behind"] == 1, name


@pytest.mark.postgres
def test_overview_terminal_view_and_mcp_filter(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    build_fixture(repo)
    text = cli(repo, "overview").stdout
    assert "workspaces" in text and "pairs" in text and "a–b" in text
    filtered = Sandbox.open(repo).overview(workspace="e").to_json()
    assert filtered["pairs"] and all("e" in (p["a"], p["b"]) for p in filtered["pairs"])

    # --watch draws again when a workspace commits
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), "overview", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        first = lines.until("a–b [high]")
        assert "workspaces" in first
        c = Path(Sandbox.open(repo).record("c").path)
        (c / "more.txt").write_text("more\n")
        git(c, "add", "more.txt")
        git(c, "commit", "-qm", "c adds more")
        again = lines.until("workspaces")
        assert "workspaces" in again
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)


class Lines:
    """A process's output, read by a thread, so that waiting for a line has a deadline."""

    def __init__(self, stream: Any) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def until(self, needle: str, timeout: float = 60.0) -> str:
        seen: list[str] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.queue.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            if needle in line:
                return "".join(seen)
        raise AssertionError(f"{needle!r} never came: {''.join(seen)[-2000:]}")
