"""``migrate status`` reads many workspaces in a fixed number of git processes: one for every
branch's commit, one for the migration objects of those commits, and one export for each
distinct set of migrations (never one per workspace). A real git repository; no database."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any, Iterator, cast

import pytest

import sandbox.git.runner as runner
from sandbox.config import load
from sandbox.git import IsolatedRepos, Worktrees
from sandbox.migrations.alembic import AlembicTool
from sandbox.migrations.context import GateContext, WorkspaceOps
from sandbox.migrations.status import status
from sandbox.registry import WorkspaceRecord

REV = '''"""{rev}"""
revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}).stdout


def commit_on(repo: Path, branch: str, files: dict[str, str]) -> None:
    git(repo, "checkout", "-q", "-B", branch, "main")
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"{branch}: work")
    git(repo, "checkout", "-q", "main")


class _Registry:
    def __init__(self, recs: list[WorkspaceRecord]) -> None:
        self.recs = recs

    def all(self) -> list[WorkspaceRecord]:
        return list(self.recs)

    def get_meta(self, key: str) -> str | None:
        return "a001" if key == "baseline_head" else None


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    (repo / "migrations" / "versions").mkdir(parents=True)
    (repo / "migrations" / "env.py").write_text("# env\n")
    (repo / "migrations" / "versions" / "a001.py").write_text(REV.format(rev="a001", down=None))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "main")
    return repo


def context(repo: Path, recs: list[WorkspaceRecord]) -> GateContext:
    config = load(repo, environ={})
    wt = Worktrees(repo)
    tool = AlembicTool("alembic.ini")

    @contextlib.contextmanager
    def nothing(*_: Any, **__: Any) -> Iterator[Any]:
        yield None

    ops = WorkspaceOps(record=lambda n: next(r for r in recs if r.name == n), locked=nothing, operation=nothing,
                       collect=lambda rec: None, advance=lambda rec, sha: None, base_env=lambda rec: {},
                       managed_files=lambda: ())
    return GateContext(config=config, registry=cast(Any, _Registry(recs)), git=wt, repos=IsolatedRepos(wt), ws=ops,
                       progress=lambda _: None, who=lambda: "t", make_tool=lambda: tool,
                       make_db=lambda: cast(Any, None), make_runner=lambda: cast(Any, None))


def record(repo: Path, name: str) -> WorkspaceRecord:
    return WorkspaceRecord(name=name, branch=name, path=str(repo / ".sandbox" / "worktrees" / name),
                           state="ready", runtime="none")


def counted_status(repo: Path, names: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], int]:
    calls: list[list[str]] = []
    spawn = runner._spawn

    def counting(cmd: list[str], **kw: Any) -> Any:
        calls.append(cmd)
        return spawn(cmd, **kw)

    monkeypatch.setattr(runner, "_spawn", counting)
    ctx = context(repo, [record(repo, n) for n in names])
    ctx.trees.main()                        # main's revisions: read from its checkout, no git
    calls.clear()
    data = status(ctx).to_json()
    monkeypatch.setattr(runner, "_spawn", spawn)
    return data, len(calls)


def test_status_costs_the_same_git_calls_for_many_workspaces(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new = {"migrations/versions/b001.py": REV.format(rev="b001", down="a001")}
    commit_on(repo, "w3", new)
    commit_on(repo, "w4", {**new, "app.py": "x = 1\n"})       # other files differ: the same migrations
    few = ["w3", "w4"]
    for i in range(2):
        commit_on(repo, f"p{i}", {f"notes{i}.txt": "n\n"})
    data, calls_few = counted_status(repo, [*few, "p0", "p1"], monkeypatch)
    rows = {w["name"]: w for w in data["workspaces"]}
    assert rows["w3"]["new"] == ["b001"] and rows["w4"]["new"] == ["b001"]
    assert any("same head as w4" in c for c in rows["w3"]["conflicts"])
    assert any("b001 also created in w4" in c for c in rows["w3"]["conflicts"])
    assert rows["p0"]["new"] == [] and rows["p0"]["conflicts"] == [] and rows["p0"]["head"] == "a001"

    for i in range(2, 12):
        commit_on(repo, f"p{i}", {f"notes{i}.txt": "n\n"})
    many = [*few, *(f"p{i}" for i in range(12))]
    data, calls_many = counted_status(repo, many, monkeypatch)
    assert len(data["workspaces"]) == 14 and all(w["new"] == [] for w in data["workspaces"][2:])
    assert calls_many == calls_few, f"migrate status ran git once per workspace ({calls_few} → {calls_many})"
