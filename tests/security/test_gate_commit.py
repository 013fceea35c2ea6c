"""The gate checks a commit, and merge merges that commit; merges never touch ignored or
sandbox-owned paths; waiting for the merge lock is bounded (issue 15, items 1, 3 and 10).

One Docker project per module (template strategy on a Docker server); each workspace plays
one attack, from inside its container, as an agent would:

- ``x``: a destructive revision on its branch, an innocent one of the same id on a detached HEAD;
- ``y``: commits a destructive revision while the gate judges its innocent one;
- ``z``: a branch that tracks ``.sandbox/worktrees/x/conftest.py`` (x's checkout, in main's state);
- ``e``: a branch that tracks ``.env``, ignored (and holding main's secret) in main's checkout.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e.conftest import GIT_ENV, cli, make_demo_repo

from .conftest import need_docker_images, safe_git, teardown
from .payloads import revision_source

TOML = """\
[workspace]
runtime = "docker"
ports = 5

[database]
strategy = "template"
server = "docker"
seed = ["db/seed.sql"]
"""

SECRET = "SECRET=main-only\n"
DROP = 'op.drop_table("audit_log")'
INNOCENT = 'op.add_column("users", sa.Column("nickname", sa.Text()))'


@dataclass
class GateProject:
    repo: Path
    paths: dict[str, Path]

    def sh(self, ws: str, script: str) -> str:
        return cli(self.repo, "exec", ws, "--", "sh", "-c", script).stdout

    def put(self, ws: str, rel: str, text: str, *, commit: str | None = None, force: bool = False) -> None:
        """Write a file in the workspace's checkout from inside its container (and commit it)."""
        data = base64.b64encode(text.encode()).decode()
        q = shlex.quote(rel)
        script = f"mkdir -p {shlex.quote(str(Path(rel).parent))} && echo {data} | base64 -d > {q}"
        if commit:
            script += f" && git add {'-f ' if force else ''}-A -- {q} && git commit -qm {shlex.quote(commit)}"
        self.sh(ws, script)

    def main_sha(self) -> str:
        return safe_git(self.repo, "rev-parse", "refs/heads/main").strip()

    def branch_sha(self, branch: str) -> str:
        return safe_git(self.repo, "rev-parse", f"refs/heads/{branch}").strip()


def _errors(res: subprocess.CompletedProcess[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in json.loads(res.stdout)["findings"]:
        if f["severity"] == "error":
            out.setdefault(f["rule"], []).append(f)
    return out


@pytest.fixture(scope="module")
def gp(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[GateProject]:
    need_docker_images(docker_client)
    tmp = tmp_path_factory.mktemp("gatecommit")
    os.chmod(tmp, 0o755)
    repo = make_demo_repo(tmp / "proj", TOML)
    (repo / ".env").write_text(SECRET)          # ignored by the demo's .gitignore: main's own secret
    try:
        cli(repo, "init")
        res = json.loads(cli(repo, "up", "x", "y", "z", "e", "--json").stdout)
        assert all(r["ok"] for r in res), res
        paths = {row["name"]: Path(row["path"]) for row in json.loads(cli(repo, "ls", "--json").stdout)}
        yield GateProject(repo=repo, paths=paths)
    finally:
        teardown(repo, docker_client)


def test_the_gate_judges_the_branch_not_a_detached_checkout_and_merge_refuses(gp: GateProject) -> None:
    """Item 1: the branch holds ``drop_table``; the checkout (a detached HEAD) holds an innocent
    revision of the same id. The gate judges the branch's commit and fails; merge refuses."""
    main_before = gp.main_sha()
    rel = "migrations/versions/x001_audit.py"
    gp.put("x", rel, revision_source("x001", "0001", DROP), commit="x: drop audit_log")
    gp.sh("x", "git checkout -q --detach")
    gp.put("x", rel, revision_source("x001", "0001", INNOCENT), commit="x: innocent, on a detached HEAD")

    res = cli(gp.repo, "migrate", "check", "x", "--json", check=None)
    data = json.loads(res.stdout)
    assert res.returncode == 1 and "drop-table" in _errors(res), \
        f"the gate did not judge the branch's destructive revision: {res.stdout[:1500]}"
    assert data["judged"] == gp.branch_sha("x")
    assert any("detached HEAD" in n and data["judged"][:12] in n for n in data.get("notes", [])), data.get("notes")

    res = cli(gp.repo, "merge", "x", "--json", check=None)
    assert res.returncode == 1, f"merge x: {res.returncode}\n{res.stdout[:1500]}\n{res.stderr}"
    assert gp.main_sha() == main_before, "main moved"
    assert not (gp.repo / rel).exists()


def test_merge_refuses_when_the_branch_moved_after_the_gate_judged_it(
        gp: GateProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 1: while the gate judges y's innocent commit, its agent commits ``drop_table`` and
    someone's ``sandbox ls`` collects it. merge refuses instead of merging the new tip."""
    from sandbox import Sandbox
    from sandbox.errors import WorkspaceError
    from sandbox.migrations import gate
    from sandbox.migrations.context import GateContext

    main_before = gp.main_sha()
    gp.put("y", "migrations/versions/y001_nick.py", revision_source("y001", "0001", INNOCENT), commit="y: nick")
    original = gate.check

    def check_then_move(ctx: GateContext, name: str, **kw: Any) -> Any:
        report = original(ctx, name, **kw)
        gp.put("y", "migrations/versions/y002_drop.py", revision_source("y002", "y001", DROP),
               commit="y: drop, while the gate ran")
        cli(gp.repo, "ls")                      # another agent's ls brings it into main's repository
        return report

    monkeypatch.setattr(gate, "check", check_then_move)
    cli(gp.repo, "ls")
    judged = gp.branch_sha("y")
    with pytest.raises(WorkspaceError, match="moved") as exc:
        Sandbox.open(gp.repo).merge("y")
    assert judged[:12] in str(exc.value)
    assert gp.main_sha() == main_before, "main moved"
    assert not (gp.repo / "migrations" / "versions" / "y002_drop.py").exists()


def test_a_branch_tracking_a_path_under_sandbox_state_is_refused(gp: GateProject) -> None:
    """Item 3: z tracks ``.sandbox/worktrees/x/conftest.py``; a merge would plant it in x's checkout."""
    main_before = gp.main_sha()
    rel = f"{gp.paths['x'].relative_to(gp.repo)}/conftest.py"
    assert rel.startswith(".sandbox/")
    gp.put("z", rel, "import os\nos.system('touch /tmp/planted')\n", commit="z: a conftest for x", force=True)

    res = cli(gp.repo, "migrate", "check", "z", "--json", check=None)
    found = _errors(res).get("ignored-path", [])
    assert res.returncode == 1 and any(f["object"] == rel and f["kind"] == "ordering" for f in found), \
        f"check z: {res.returncode}\n{res.stdout[:1500]}"

    res = cli(gp.repo, "merge", "z", "--json", check=None)
    assert res.returncode == 1 and "ignored-path" in _errors(res), f"merge z: {res.stdout[:1500]}"
    assert gp.main_sha() == main_before, "main moved"
    assert not (gp.repo / rel).exists(), "the branch's file was written into x's checkout"
    assert safe_git(gp.repo, "ls-files", "--", ".sandbox") == ""


def test_a_branch_tracking_a_file_ignored_in_main_is_refused(gp: GateProject) -> None:
    """Item 3: e tracks ``.env``, which main's checkout has ignored (with main's secret); git merge
    would overwrite it without a word."""
    main_before = gp.main_sha()
    gp.put("e", ".env", "SECRET=from-the-branch\n", commit="e: my .env", force=True)

    res = cli(gp.repo, "migrate", "check", "e", "--json", check=None)
    assert res.returncode == 1 and any(f["object"] == ".env" for f in _errors(res).get("ignored-path", [])), \
        f"check e: {res.returncode}\n{res.stdout[:1500]}"
    text = cli(gp.repo, "migrate", "check", "e", check=None)
    assert "ignored-path" in text.stdout and "judged: commit" in text.stdout, text.stdout

    res = cli(gp.repo, "merge", "e", check=None)
    assert res.returncode == 1, f"merge e: {res.stdout[:1500]}"
    assert gp.main_sha() == main_before, "main moved"
    assert (gp.repo / ".env").read_text() == SECRET


def test_a_merge_waiting_for_the_merge_lock_gives_up_after_the_registry_timeout(gp: GateProject) -> None:
    """Item 10: another process holds the merge lock; ``SANDBOX_REGISTRY_TIMEOUT=2 sandbox merge``
    fails within seconds, with one line naming the holder, instead of waiting for it."""
    lock = gp.repo / ".sandbox" / "locks" / "merge.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: a slow merge".encode(), 0)
    env = {**os.environ, **GIT_ENV, "NO_COLOR": "1", "COLUMNS": "200", "SANDBOX_REGISTRY_TIMEOUT": "2"}
    start = time.monotonic()
    try:
        res = subprocess.run([sys.executable, "-m", "sandbox", "-q", "--project", str(gp.repo), "merge", "e"],
                             capture_output=True, text=True, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("merge waited for the merge lock for over 60 s despite SANDBOX_REGISTRY_TIMEOUT=2")
    finally:
        os.close(fd)
    took = time.monotonic() - start
    assert res.returncode == 1, f"{res.returncode}\n{res.stdout}\n{res.stderr}"
    assert took < 20, f"took {took:.1f} s"
    assert "merge lock" in res.stderr and f"pid {os.getpid()}" in res.stderr, res.stderr
