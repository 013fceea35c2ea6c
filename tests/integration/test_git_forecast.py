"""sandbox.git.forecast on real git: every pair in one merge-tree, refs verified first, and the
working tree as a throwaway commit that uses neither the workspace's index nor its config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.git.forecast import diffstats, grep_words, merge_pairs, snapshot, user_excludes, verify_commits

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=ENV).stdout


def branch(repo: Path, name: str, path: str, text: str) -> str:
    git(repo, "checkout", "-q", "-b", name, "main")
    (repo / path).write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-qm", name)
    git(repo, "checkout", "-q", "main")
    return git(repo, "rev-parse", name).strip()


def test_every_pair_in_one_merge_tree(git_repo: Path) -> None:
    a = branch(git_repo, "a", "README.md", "a\n")
    b = branch(git_repo, "b", "README.md", "b\n")
    c = branch(git_repo, "c", "other.txt", "c\n")
    main = git(git_repo, "rev-parse", "main").strip()
    found = verify_commits(git_repo, ["a", "b", "c", "main", "nosuch", "-x"])
    assert found == {"a": a, "b": b, "c": c, "main": main}
    out = merge_pairs(git_repo, [(a, b), (a, c), (b, c), (main, a)])
    assert [(m.clean, m.conflicts) for m in out] == [(False, ("README.md",)), (True, ()), (True, ()), (True, ())]
    stats = diffstats(git_repo, main, {"a": a, "c": c, "m": main})
    assert stats["a"].paths == ("README.md",) and stats["a"].added == 1 and stats["a"].removed == 1
    assert stats["c"].paths == ("other.txt",) and stats["m"].paths == ()
    assert grep_words(git_repo, {c: ["other.txt"], a: ["README.md"]}, ["c"]) == {c: ["other.txt"], a: []}


def test_snapshot_uses_its_own_index_and_nothing_of_the_workspace(git_repo: Path, tmp_path: Path) -> None:
    """A Docker workspace's repository is its own (a clone): its hooks, its config (a filter, an
    fsmonitor) and its index are never used by the snapshot, made in main's repository."""
    head = git(git_repo, "rev-parse", "main").strip()
    tree = tmp_path / "ws"
    subprocess.run(["git", "clone", "-q", "--shared", str(git_repo), str(tree)], check=True, env=ENV)
    marker = tmp_path / "ran"
    (tree / ".gitattributes").write_text("* filter=evil\n")
    (tree / "README.md").write_text("changed\n")
    (tree / "new.txt").write_text("untracked\n")
    (tree / ".env").write_text("SECRET=1\n")
    os.symlink("/etc/passwd", tree / "link")
    git(tree, "add", "README.md")          # the workspace's own index holds a staged change
    before = git(tree, "diff", "--cached", "--name-only")
    for hook in ("pre-commit", "post-index-change", "reference-transaction", "post-commit"):
        (tree / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (tree / ".git" / "hooks" / hook).chmod(0o755)
    (tmp_path / "fsmonitor.sh").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (tmp_path / "fsmonitor.sh").chmod(0o755)
    with (tree / ".git" / "config").open("a") as fh:
        fh.write(f'[filter "evil"]\n\tclean = "touch {marker}; cat"\n[core]\n\tfsmonitor = {tmp_path}/fsmonitor.sh\n')
    index = tmp_path / "sandbox.index"

    snap = snapshot(git_repo, index, tree, head, exclude=(".env",))
    assert not marker.exists()
    assert snap.dirty and snap.head == head
    assert snap.changed == ("README.md",)
    assert set(snap.untracked) == {".gitattributes", "new.txt", "link"}
    files = git(git_repo, "ls-tree", "-r", "--name-only", snap.commit).split()
    assert ".env" not in files and "new.txt" in files
    assert git(git_repo, "cat-file", "-p", f"{snap.commit}:link") == "/etc/passwd"     # a link, not followed
    assert git(git_repo, "show", f"{snap.commit}:README.md") == "changed\n"
    assert git(tree, "-c", "core.fsmonitor=false", "diff", "--cached", "--name-only") == before
    assert not git(git_repo, "for-each-ref", "--contains", snap.commit)     # no ref holds the throwaway commit

    # a second run reuses sandbox's index; a clean tree gives the head itself
    for p in ("new.txt", ".gitattributes", "link"):
        (tree / p).unlink()
    (tree / "README.md").write_text("hello\n")
    again = snapshot(git_repo, index, tree, head, exclude=(".env",))
    assert not again.dirty and again.commit == head
    assert not marker.exists()


def test_snapshot_keeps_the_users_own_excludes(git_repo: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "xdg"
    (conf / "git").mkdir(parents=True)
    (conf / "git" / "ignore").write_text("*.log\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(conf))
    head = git(git_repo, "rev-parse", "main").strip()
    tree = tmp_path / "ws"
    subprocess.run(["git", "clone", "-q", "--shared", str(git_repo), str(tree)], check=True, env=ENV)
    (tree / "debug.log").write_text("noise\n")
    (tree / ".env").write_text("SECRET=1\n")
    (tree / "work.txt").write_text("work\n")
    snap = snapshot(git_repo, tmp_path / "i.index", tree, head, exclude=(".env",),
                    also_excluded=user_excludes(git_repo))
    assert snap.untracked == ("work.txt",)


def test_a_filter_defined_for_main_never_runs_over_a_workspace(git_repo: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Main's own config and the user's global config may define filters (git-lfs does); a
    workspace's ``.gitattributes`` can name any of them, yet none runs over its files on the host."""
    marker = tmp_path / "ran"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[filter "lfs"]\n\tprocess = "touch {marker}"\n\trequired = true\n')
    monkeypatch.setenv("HOME", str(home))
    git(git_repo, "config", "filter.evil.clean", f"touch {marker}; cat")
    git(git_repo, "config", "filter.dotted.name.clean", f"touch {marker}; cat")
    head = git(git_repo, "rev-parse", "main").strip()
    tree = tmp_path / "ws"
    subprocess.run(["git", "clone", "-q", "--shared", str(git_repo), str(tree)], check=True, env=ENV)
    (tree / ".gitattributes").write_text("*.txt filter=evil\n*.md filter=lfs\n*.dat filter=dotted.name\n")
    (tree / "README.md").write_text("changed\n")
    (tree / "new.txt").write_text("untracked\n")
    (tree / "x.dat").write_text("data\n")
    # the hole this closes: plain git over the same tree runs main's filter
    subprocess.run(["git", "-C", str(git_repo), f"--work-tree={tree}", "add", "-A", "--dry-run", "new.txt"],
                   env={**ENV, "HOME": str(home), "GIT_INDEX_FILE": str(tmp_path / "probe.index")},
                   capture_output=True, check=False)
    proof = marker.exists()
    marker.unlink(missing_ok=True)

    snap = snapshot(git_repo, tmp_path / "sandbox.index", tree, head)
    assert not marker.exists(), "a filter ran over the workspace's files"
    assert snap.changed == ("README.md",) and set(snap.untracked) == {".gitattributes", "new.txt", "x.dat"}
    assert git(git_repo, "show", f"{snap.commit}:new.txt") == "untracked\n"
    assert proof, "the probe did not run the filter: this test proves nothing on this git"
