"""Issue #9: nothing inside a Docker workspace runs code on the host or touches main.

One hostile project (see conftest.py) is armed once; then every command of the sweep runs in
order, and after each one :meth:`HostileProject.verdict` checks the three promises:

- no marker exists: no hook, git config, filter, alias, migration file, test or config of a
  workspace ran on the host;
- main's branch moved only by sandbox's own merge, and no other workspace's branch moved;
- workspace a's data (``canary``, ``posts``) is intact.

Each verdict repairs what it found, so a failure names the command that caused it. The tests
run in the order written: they share the project and its history.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.conftest import cli

from .conftest import HostileProject, cli_in, safe_git
from .payloads import markers
from .hardening import hardening_problems

pytestmark = pytest.mark.docker


def _judge(hp: HostileProject, step: str, res: Any, expect_code: int | None = 0, *,
           victim: bool = True) -> list[str]:
    problems = hp.verdict(step, victim=victim)
    if expect_code is not None and res.returncode != expect_code:
        problems.append(f"{step}: exit {res.returncode}, expected {expect_code}\n{res.stdout[-1500:]}\n"
                        f"{res.stderr[-1500:]}")
    return problems


def test_planting_from_inside_the_container_leaves_mains_repository_alone(hostile: HostileProject) -> None:
    """From inside b, r, o: `git config`/hooks in the repository git shows them, hooks and config
    written into main's .git by path, `git update-ref refs/heads/main <orphan>` (and a's branch, a
    tag), main's HEAD rewritten, files written into main's .git/objects. None may reach main."""
    assert not hostile.planting, "\n".join(hostile.planting)


def test_ls_runs_nothing_of_the_workspaces(hostile: HostileProject) -> None:
    """`ls` reads revisions of t (top-level code), r (uncommitted top-level code) and b (its
    alembic.ini points out of the tree): statically, never importing them on the host."""
    res = cli(hostile.repo, "ls", "--json", check=None)
    problems = _judge(hostile, "ls", res)
    if res.returncode == 0:
        rows = {r["name"]: r for r in json.loads(res.stdout)}
        if rows["t"]["migrations"]["new"] != ["t001"]:
            problems.append(f"ls: t's new revisions read as {rows['t']['migrations']}, expected ['t001']")
    assert not problems, "\n".join(problems)


def test_migrate_status_runs_nothing_of_the_workspaces(hostile: HostileProject) -> None:
    res = cli(hostile.repo, "migrate", "status", "--json", check=None)
    assert not (problems := _judge(hostile, "migrate status", res)), "\n".join(problems)


def test_migrate_check_runs_the_revision_away_from_secrets_and_other_databases(hostile: HostileProject) -> None:
    """m's upgrade() reads .sandbox/secrets/*, connects to every server it can reach with every
    credential it found and drops a's tables; the gate must run it where none of that is reachable."""
    res = cli(hostile.repo, "migrate", "check", "m", "--json", check=None)
    problems = _judge(hostile, "migrate check m", res)
    if res.returncode == 0 and json.loads(res.stdout)["revisions"] != ["m001"]:
        problems.append(f"migrate check m: revisions {json.loads(res.stdout)['revisions']}, expected ['m001']")
    assert not problems, "\n".join(problems)


def test_the_workspaces_own_config_is_not_read_from_inside_it(hostile: HostileProject) -> None:
    """b committed a sandbox.toml of its own (runtime none, setup/teardown/seed_command/test
    that leave markers). Run from inside b's checkout, sandbox still resolves to main, reads
    main's sandbox.toml, and makes no project of b's checkout."""
    b = hostile.paths["b"]
    problems = _judge(hostile, "init (from inside b)", cli_in(b, "init"))
    res = cli_in(b, "ls", "--json")
    problems += _judge(hostile, "ls (from inside b)", res)
    if res.returncode == 0 and not {"a", "b", "m"} <= {r["name"] for r in json.loads(res.stdout)}:
        problems.append(f"ls from inside b did not resolve to main: {res.stdout[:300]}")
    if (b / ".sandbox").exists():
        problems.append("a .sandbox state folder was made inside b's checkout")
    assert not problems, "\n".join(problems)


def test_merge_runs_gate_and_tests_away_from_the_host_and_moves_main_to_the_branch(
        hostile: HostileProject) -> None:
    """The gate replays m's upgrade() and runs m's tests/gate.sh; then main moves to m (ff),
    and only then. Bringing the baseline forward runs the merged revision, still not on the host."""
    m_tip = hostile.refs()["refs/heads/m"]
    res = cli(hostile.repo, "merge", "m", "--json", check=None)
    main_now = safe_git(hostile.repo, "rev-parse", "refs/heads/main").strip()
    hostile.expect.pop("m", None)
    if main_now == m_tip:
        hostile.expect["main"] = m_tip          # sandbox's own merge: the one way main may move
    problems = _judge(hostile, "merge m", res)
    if main_now != m_tip:
        problems.append(f"merge m: main is at {main_now[:10]}, expected m's tip {m_tip[:10]}")
    if res.returncode == 0 and not json.loads(res.stdout).get("merged"):
        problems.append(f"merge m: not merged: {res.stdout[:500]}")
    assert not problems, "\n".join(problems)


def test_sync_rebases_without_running_workspace_code_on_the_host(hostile: HostileProject) -> None:
    """sync t: main (now with m001) comes into t, t001 moves onto m001, t's database is rebuilt
    by running t's revisions, whose top level leaves a marker if imported on the host."""
    hostile.expect.pop("t", None)     # t's branch is sandbox's to move here
    res = cli(hostile.repo, "sync", "t", check=None)
    assert not (problems := _judge(hostile, "sync t", res)), "\n".join(problems)


def test_up_runs_no_hook_of_the_workspaces(hostile: HostileProject) -> None:
    """A new workspace (c: the issue's `sandbox up c`) and a running one (b) again."""
    res = cli(hostile.repo, "up", "c", "b", "--json", check=None)
    problems = _judge(hostile, "up c b", res)
    if res.returncode == 0 and not all(r["ok"] for r in json.loads(res.stdout)):
        problems.append(f"up c b: {res.stdout[:500]}")
    assert not problems, "\n".join(problems)


def test_workspace_and_database_containers_are_hardened(hostile: HostileProject, docker_client: Any) -> None:
    """Through the Docker API: every workspace container and the shared database server run as a
    user other than root, drop every capability (the server keeps only what Postgres needs),
    cannot gain privileges, have memory and pids limits; the shared server is not on `bridge`."""
    from sandbox import Sandbox
    project = Sandbox.open(hostile.repo).config.project_id
    problems: list[str] = []
    for role, expect in (("workspace", {"a", "b", "c", "m", "t"}), ("database", None)):
        found = docker_client.containers.list(filters={"label": [f"dev.sandbox.project={project}",
                                                                 f"dev.sandbox.role={role}"]})
        names = {c.labels.get("dev.sandbox.workspace") for c in found}
        if expect is not None and not expect <= names:
            problems.append(f"{role} containers: found {sorted(map(str, names))}, expected at least {sorted(expect)}")
        if role == "database" and not found:
            problems.append("no database container found")
        for c in found:
            problems += hardening_problems(c, role)
    assert not problems, "\n".join(problems)


def test_rm_force_of_a_hostile_workspace_runs_nothing_of_it(hostile: HostileProject) -> None:
    """r has hostile git config and hooks, core.hooksPath, and uncommitted changes; last, its
    agent swaps its `.git` for a symlink to main's `.git` (a host path, dangling inside the
    container): removing r must not run, follow or delete anything through it."""
    git_dir = hostile.repo / ".git"
    head, config = (git_dir / "HEAD").read_bytes(), (git_dir / "config").read_bytes()
    hostile.sh("r", f"mv .git .git-moved && ln -s {git_dir} .git")
    res = cli(hostile.repo, "rm", "r", "--force", check=None)
    problems = _judge(hostile, "rm r --force", res)
    if hostile.paths["r"].exists():
        problems.append("rm r --force: r's checkout is still there")
    if (git_dir / "HEAD").read_bytes() != head or (git_dir / "config").read_bytes() != config \
            or not (git_dir / "objects").is_dir():
        problems.append("rm r --force: main's .git changed through r's .git symlink")
    assert not problems, "\n".join(problems)


def test_gc_of_a_forgotten_hostile_checkout_runs_nothing_of_it(hostile: HostileProject) -> None:
    """o's registry entry is lost (a crash); gc finds its checkout, container, database: it must
    decide what to do with them without running git inside o's repository."""
    from sandbox import Sandbox
    Sandbox.open(hostile.repo).registry.delete("o")
    res = cli(hostile.repo, "gc", "--json", check=None)
    assert not (problems := _judge(hostile, "gc", res)), "\n".join(problems)


def test_doctor_runs_nothing_of_the_workspaces(hostile: HostileProject) -> None:
    res = cli(hostile.repo, "doctor", "--json", check=None)
    assert not (problems := _judge(hostile, "doctor", res, expect_code=None)), "\n".join(problems)


def test_deinit_runs_nothing_of_the_workspaces(hostile: HostileProject) -> None:
    res = cli(hostile.repo, "deinit", "--force", check=None)
    problems = _judge(hostile, "deinit --force", res, victim=False)
    leftover = markers(hostile.mark)
    assert not problems and not leftover, "\n".join(problems + leftover)


def test_nothing_of_the_attacks_is_left_in_mains_checkout(hostile: HostileProject) -> None:
    """Main's checkout holds no file an attack wrote (the hostile alembic.ini and sandbox.toml
    stayed on branch b; m's merged files are m's revision and test only)."""
    status = safe_git(hostile.repo, "status", "--porcelain", "--untracked-files=all")
    changed = [ln for ln in status.splitlines() if not ln[3:].startswith(".sandbox")]
    assert not changed, changed
    assert "script_location = migrations" in (hostile.repo / "alembic.ini").read_text()
    assert "runtime = \"docker\"" in (hostile.repo / "sandbox.toml").read_text()
