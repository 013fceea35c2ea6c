"""Issue #15, items 6-8: host file operations in a workspace never follow links, and one
workspace's repository cannot stall the tools.

One project (Docker workspaces, template strategy, ``copy = [".env"]`` with a secret in main's
ignored ``.env``). Attacks are made from inside the containers where a container can make them
(a symlink's target is only a string: the container names a host path it cannot see); the
repositories they point at are made by the test on the host, beside the project.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e.conftest import GIT_ENV, cli

from .conftest import need_docker_images, safe_git, teardown

pytestmark = pytest.mark.docker

TOML = """\
[workspace]
runtime = "docker"
ports = 5
copy = [".env"]

[database]
strategy = "template"
server = "docker"
seed = ["db/seed.sql"]
"""
SECRET = "MAIN_ONLY_SECRET=s3cr3t-of-main"
BOUND = 60          # seconds: every command must answer within this, whatever a workspace holds


class Project:
    def __init__(self, repo: Path, tmp: Path) -> None:
        self.repo, self.tmp = repo, tmp

    def sh(self, ws: str, script: str) -> str:
        return cli(self.repo, "exec", ws, "--", "sh", "-c", script).stdout

    def rows(self) -> dict[str, dict[str, Any]]:
        res = cli(self.repo, "ls", "--json", timeout=BOUND)
        return {r["name"]: r for r in json.loads(res.stdout)}

    def in_main(self, sha: str) -> bool:
        return subprocess.run(["git", "-C", str(self.repo), "cat-file", "-e", f"{sha}^{{commit}}"],
                              capture_output=True).returncode == 0


def _other_repo(where: Path, text: str) -> str:
    """A repository elsewhere on the host holding a secret commit; its id."""
    where.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(where)], check=True)
    (where / "secret.txt").write_text(text)
    safe_git(where, "add", "-A")
    safe_git(where, "commit", "-qm", "host secret")
    return safe_git(where, "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Project]:
    from e2e.conftest import make_demo_repo
    need_docker_images(docker_client)
    tmp = tmp_path_factory.mktemp("hostfs")
    os.chmod(tmp, 0o755)
    repo = make_demo_repo(tmp / "proj", TOML)
    (repo / ".env").write_text(SECRET + "\n")          # ignored in main (.gitignore): main's secret
    try:
        cli(repo, "init")
        res = json.loads(cli(repo, "up", "g", "al", "f", "s", "--json").stdout)
        assert all(r["ok"] for r in res), res
        yield Project(repo, tmp)
    finally:
        teardown(repo, docker_client)


# -- item 6: a .git that leads elsewhere ---------------------------------------------------------
def test_ls_does_not_follow_a_git_symlink_to_another_host_repository(proj: Project) -> None:
    """g replaces its .git with a link to another repository on the host: `ls` must not fetch
    that repository's commits into main, and reports g as unsafe."""
    other = proj.tmp / "other"
    secret = _other_repo(other, "the other repository's secret\n")
    proj.sh("g", f"rm -rf .git && ln -s {other}/.git .git")
    rows = proj.rows()
    assert not proj.in_main(secret), "ls fetched the other repository's secret commit into main's objects"
    assert rows["g"]["state"] == "broken" and "unsafe" in (rows["g"]["cause"] or ""), rows["g"]
    assert rows["g"]["git"].get("unsafe") is True


def test_alternates_pointing_outside_mains_objects_are_refused(proj: Project) -> None:
    """al adds another host repository's objects to its alternates and a ref naming its secret
    commit (written as a file: the container cannot see that repository)."""
    other = proj.tmp / "other-alt"
    secret = _other_repo(other, "borrowed secret\n")
    proj.sh("al", f"echo {other}/.git/objects >> .git/objects/info/alternates && "
                  f"mkdir -p .git/refs/heads && echo {secret} > .git/refs/heads/steal")
    rows = proj.rows()
    assert not proj.in_main(secret), "ls copied objects of a repository named in the workspace's alternates"
    assert rows["al"]["state"] == "broken" and "alternates" in (rows["al"]["cause"] or ""), rows["al"]


# -- item 7: copying main's ignored files into a branch's tree -----------------------------------
def test_up_from_a_branch_with_an_env_symlink_writes_nothing_through_it(proj: Project) -> None:
    """A branch commits `.env` as a link to /tmp/<unique>/stolen; `up v --from` it copies main's
    `.env` (a secret) into the new checkout. Nothing may be created at the link's target."""
    target_dir = Path("/tmp") / f"sandbox-stolen-{uuid.uuid4().hex[:10]}"
    target_dir.mkdir()
    try:
        wt = proj.tmp / "evil-wt"
        safe_git(proj.repo, "worktree", "add", "-q", "-b", "evil-env", str(wt), "main")
        os.symlink(target_dir / "stolen", wt / ".env")
        safe_git(wt, "add", "-f", ".env")
        subprocess.run(["git", "-C", str(wt), "commit", "-qm", "env link"], check=True,
                       env={**os.environ, **GIT_ENV})
        safe_git(proj.repo, "worktree", "remove", "--force", str(wt))
        res = cli(proj.repo, "up", "v", "--from", "evil-env", check=None, quiet=False)
        assert not (target_dir / "stolen").exists(), "root wrote main's .env through the branch's link"
        assert "not copied" in res.stdout + res.stderr, res.stdout + res.stderr
        assert res.returncode == 0, res.stdout + res.stderr
        env_in_ws = proj.sh("v", "cat .env")
        assert SECRET not in env_in_ws
    finally:
        for p in target_dir.iterdir():
            p.unlink()
        target_dir.rmdir()


def test_up_from_a_workspace_branch_uses_its_latest_commit(proj: Project) -> None:
    """A commit made inside s, then `up s2 --from s` with no `ls` in between: s2 starts there."""
    head = proj.sh("s", "echo new > later.txt && git add later.txt && git commit -qm later && "
                        "git rev-parse HEAD").strip().splitlines()[-1]
    cli(proj.repo, "up", "s2", "--from", "s", "--no-container")
    assert safe_git(proj.repo, "rev-parse", "refs/heads/s2").strip() == head


# -- item 8: a FIFO must not stall the tools -----------------------------------------------------
def _bounded(proj: Project, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return cli(proj.repo, *args, check=None, timeout=BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`sandbox {' '.join(args)}` did not finish within {BOUND} s")


def test_a_fifo_in_git_does_not_stall_ls_status_or_rm(proj: Project) -> None:
    proj.sh("f", "rm -f .git/packed-refs && mkfifo .git/packed-refs")
    res = _bounded(proj, "ls", "--json")
    assert res.returncode == 0, res.stderr
    row = {r["name"]: r for r in json.loads(res.stdout)}["f"]
    assert row["state"] == "broken" and "FIFO" in row["cause"], row
    res = _bounded(proj, "migrate", "status", "--json")
    assert res.returncode == 0, res.stderr
    res = _bounded(proj, "rm", "f")
    assert res.returncode == 1 and "FIFO" in res.stderr, res.stdout + res.stderr
    res = _bounded(proj, "rm", "--force", "f")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "f" not in {r["name"] for r in json.loads(_bounded(proj, "ls", "--json").stdout)}
    assert not (proj.repo / ".sandbox" / "worktrees" / "f").exists()
