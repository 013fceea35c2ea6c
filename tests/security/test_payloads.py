"""The detectors work: each planted route leaves its marker when git runs it (no Docker needed).

tests/security/test_untrusted_workspace.py asserts that *no* marker appears while sandbox works
on hostile workspaces. That is only worth something if the markers would appear when the route
runs. Here the same plant script runs in a throwaway repository on the host, and host git is
then run the ways sandbox must never run it: inside the hostile repository (status, commit,
checkout, merge, amend, diff, alias, editor, fetch from its remotes, a push into it), and in a
main repository whose ``.git`` the workspace could write. Each of those leaves its marker.

The last tests pin the operations the design relies on instead: ``git fetch`` *from* the hostile
repository into a trusted one (upload-pack, gitsecurityboundary(7)), and ``git status`` through a
git dir sandbox owns over the hostile files. They leave no marker (FIELD-NOTES, git 2.39.5); if a
git upgrade changed that, these tests say so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .payloads import clear, markers, plant_script

ENV = {**{k: v for k, v in os.environ.items() if k not in ("GIT_EDITOR", "EDITOR", "VISUAL", "GIT_SEQUENCE_EDITOR",
                                                           "GIT_PAGER", "PAGER", "GIT_DIR", "GIT_WORK_TREE")},
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "SANDBOX_WORKSPACE": "w"}


def run(cwd: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=ENV,
                          stdin=subprocess.DEVNULL, check=check, timeout=60)


def init(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README.md").write_text("hello\n")
    run(path, "add", "-A", check=True)
    run(path, "commit", "-qm", "init", check=True)
    return path


class Hostile:
    """A trusted repository, a workspace clone borrowing its objects (the design), planted."""

    def __init__(self, tmp: Path, *, hooks_path: bool = False) -> None:
        self.mark = tmp / "markers"
        self.mark.mkdir()
        self.trusted = init(tmp / "trusted")
        self.reach = init(tmp / "reach")          # a "main" whose .git the workspace can write
        self.ws = tmp / "ws"
        subprocess.run(["git", "clone", "-q", "--shared", str(self.trusted), str(self.ws)], check=True, env=ENV)
        (self.ws / "notes.txt").write_text("one\n")
        run(self.ws, "add", "-A", check=True)
        run(self.ws, "commit", "-qm", "notes", check=True)
        res = subprocess.run(["sh", "-c", plant_script(self.mark, self.reach, hooks_path=hooks_path)],
                             cwd=self.ws, env=ENV, capture_output=True, text=True, timeout=60)
        assert "ORPHAN=" in res.stdout, res
        clear(self.mark)                           # planting ran git here: start from nothing

    def fired(self) -> set[str]:
        found = set(markers(self.mark))
        clear(self.mark)
        return found


@pytest.fixture
def hostile(tmp_path: Path) -> Hostile:
    return Hostile(tmp_path)


def test_status_inside_the_workspace_runs_fsmonitor_and_clean_filter(hostile: Hostile) -> None:
    (hostile.ws / "notes.txt").write_text("two\n")
    run(hostile.ws, "status")
    assert {"w-cfg-fsmonitor", "w-cfg-filter-clean"} <= hostile.fired()


def test_commit_inside_the_workspace_runs_hooks_and_signing(hostile: Hostile) -> None:
    run(hostile.ws, "-c", "commit.gpgSign=false", "commit", "-q", "--allow-empty", "-m", "x")
    assert {"w-hook-pre-commit", "w-hook-prepare-commit-msg", "w-hook-commit-msg", "w-hook-post-commit",
            "w-hook-reference-transaction"} <= hostile.fired()
    run(hostile.ws, "commit", "-q", "--allow-empty", "-m", "signed")
    assert "w-cfg-gpg-program" in hostile.fired()
    run(hostile.ws, "-c", "commit.gpgSign=false", "commit", "-q", "--allow-empty")   # no -m: the editor
    assert "w-include-core-editor" in hostile.fired()


def test_checkout_merge_and_amend_inside_the_workspace_run_hooks_and_smudge(hostile: Hostile) -> None:
    run(hostile.ws, "checkout", "-q", "-b", "side")
    assert "w-hook-post-checkout" in hostile.fired()
    run(hostile.ws, "-c", "commit.gpgSign=false", "commit", "-q", "--allow-empty", "-m", "side")
    run(hostile.ws, "checkout", "-q", "-")
    hostile.fired()
    run(hostile.ws, "-c", "commit.gpgSign=false", "merge", "-q", "--no-edit", "side")
    assert "w-hook-post-merge" in hostile.fired()
    run(hostile.ws, "-c", "commit.gpgSign=false", "commit", "-q", "--amend", "--no-edit")
    assert "w-hook-post-rewrite" in hostile.fired()
    (hostile.ws / "notes.txt").unlink()
    run(hostile.ws, "checkout", "--", "notes.txt")
    assert "w-cfg-filter-smudge" in hostile.fired()


def test_diff_alias_and_remotes_inside_the_workspace_run_commands(hostile: Hostile) -> None:
    (hostile.ws / "notes.txt").write_text("changed\n")
    run(hostile.ws, "diff")
    assert "w-cfg-diff-command" in hostile.fired()
    run(hostile.ws, "diff", "--no-ext-diff", "--textconv")
    assert "w-cfg-diff-textconv" in hostile.fired()
    run(hostile.ws, "st")
    assert "w-cfg-alias" in hostile.fired()
    run(hostile.ws, "fetch", "-q", "evil")
    assert "w-cfg-ext-transport" in hostile.fired()


def test_pushing_into_the_workspace_runs_its_receive_hooks_and_alternate_refs_command(hostile: Hostile) -> None:
    """Why sync must not push main's commits into the workspace's repository from the host."""
    run(hostile.trusted, "push", "-q", str(hostile.ws), "main:refs/heads/pushed")
    fired = hostile.fired()
    assert {"w-hook-pre-receive", "w-hook-update", "w-hook-post-receive", "w-hook-post-update",
            "w-hook-reference-transaction"} <= fired
    assert "w-cfg-alternaterefs" in fired


def test_core_hookspath_moves_the_hooks(tmp_path: Path) -> None:
    hostile = Hostile(tmp_path, hooks_path=True)
    run(hostile.ws, "-c", "commit.gpgSign=false", "commit", "-q", "--allow-empty", "-m", "x")
    fired = hostile.fired()
    assert "w-hookspath-pre-commit" in fired and "w-hook-pre-commit" not in fired


def test_a_writable_main_git_runs_the_workspaces_code_in_main(hostile: Hostile) -> None:
    """The shared-.git escape: what the workspace wrote into main's .git by path runs when git
    runs in main (status: fsmonitor; commit: hooks), and main's refs and HEAD moved."""
    (hostile.reach / "README.md").write_text("changed\n")
    run(hostile.reach, "status")
    assert "w-path-fsmonitor" in hostile.fired()
    run(hostile.reach, "commit", "-qam", "x")
    assert {"w-path-hook-pre-commit", "w-path-hook-post-commit"} <= hostile.fired()
    assert (hostile.reach / ".git" / "HEAD").read_text() == "ref: refs/heads/evil\n"


def test_fetching_from_the_workspace_into_a_trusted_repository_runs_nothing(hostile: Hostile) -> None:
    """The design's transport: upload-pack in the hostile repository, driven from a trusted one."""
    run(hostile.ws, "-c", "commit.gpgSign=false", "commit", "-q", "--allow-empty", "-m", "work")
    hostile.fired()
    res = run(hostile.trusted, "fetch", "-q", str(hostile.ws), "+refs/heads/*:refs/sandbox/ws/*")
    assert res.returncode == 0, res.stderr
    assert run(hostile.trusted, "rev-parse", "refs/sandbox/ws/main").returncode == 0
    res = run(hostile.trusted, "fetch", "-q", "--no-write-fetch-head", f"file://{hostile.ws}", "main")
    assert res.returncode == 0, res.stderr
    assert hostile.fired() == set()


def test_status_through_an_owned_git_dir_over_the_hostile_files_runs_nothing(hostile: Hostile, tmp_path: Path) -> None:
    """The design's way to ask "uncommitted changes?" from the host: a git dir sandbox owns."""
    owned = tmp_path / "owned.git"
    subprocess.run(["git", "init", "-q", "--bare", str(owned)], check=True)
    run(hostile.trusted, "fetch", "-q", str(hostile.ws), "+refs/heads/*:refs/sandbox/ws/*")
    (hostile.ws / "notes.txt").write_text("dirty\n")
    res = subprocess.run(["git", f"--git-dir={owned}", f"--work-tree={hostile.ws}", "status", "--porcelain"],
                         capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr
    assert hostile.fired() == set()
