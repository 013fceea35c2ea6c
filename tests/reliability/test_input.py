"""Hostile input: names, labels, refs, every sandbox.toml value, environment values. The answer is
always one line, exit 2, and nothing changed (property-based, with hypothesis)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sandbox import config as cfg
from sandbox.cli import app
from sandbox.errors import ConfigError, InvalidLabel, InvalidName
from sandbox.names import NAME_RE, validate_label, validate_name
from sandbox.registry import Registry, WorkspaceRecord

ALPHABET = "abcAZ09._-"
FIXTURE_OK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def git_accepts_branch(name: str) -> bool:
    return subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True).returncode == 0


contract_names = st.one_of(
    st.text(ALPHABET, min_size=1, max_size=50),
    st.sampled_from(["HEAD", "a..b", "x.lock", "foo.", "a.lock.b", "head", "@", "a@b", "x..", ".lock", "ok"]),
    st.builds(lambda a, b: a + b, st.text(ALPHABET, min_size=1, max_size=10),
              st.sampled_from([".lock", ".", "..", "..x", ".LOCK"])),
)


@settings(max_examples=300, deadline=None)
@given(contract_names)
def test_names_are_the_contract_pattern_and_git_branch_rules(name: str) -> None:
    expected = NAME_RE.fullmatch(name) is not None and git_accepts_branch(name)
    try:
        validate_name(name)
        accepted = True
    except InvalidName as exc:
        accepted = False
        assert exc.exit_code == 2 and "\n" not in str(exc)
    assert accepted == expected, name


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=60))
def test_labels_have_their_own_rule_and_message(label: str) -> None:
    try:
        validate_label(label)
    except InvalidLabel as exc:
        assert str(exc).startswith("invalid checkpoint label") and "\n" not in str(exc)
        return
    assert 1 <= len(label) <= 48 and ".." not in label and not label.endswith(".")


# -- through the command line: exit 2, one line, nothing changed ---------------------------------

def run(repo: Path, *argv: str) -> Any:
    return CliRunner().invoke(app, ["-q", "--project", str(repo), *argv])


def state(repo: Path) -> tuple[str, str, list[str]]:
    refs = subprocess.run(["git", "-C", str(repo), "for-each-ref"], capture_output=True, text=True).stdout
    wts = subprocess.run(["git", "-C", str(repo), "worktree", "list", "--porcelain"], capture_output=True,
                         text=True).stdout
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if ".git/" not in str(p)
                   and "registry" not in p.name and "/locks/" not in str(p))
    return refs, wts, files


@pytest.fixture
def project(git_repo: Path) -> Path:
    (git_repo / "sandbox.toml").write_text('[workspace]\nruntime = "none"\n[database]\nstrategy = "template"\n'
                                           'server = "url"\nurl = "postgresql://u@127.0.0.1:9/postgres"\n')
    (git_repo / "alembic.ini").write_text("[alembic]\n")
    subprocess.run(["git", "-C", str(git_repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(git_repo), "commit", "-qm", "config"], check=True)
    reg = Registry(git_repo / ".sandbox", create=True)
    reg.set_meta("project_id", "test")
    reg.insert(WorkspaceRecord(name="a", branch="a", path=str(git_repo / ".sandbox/worktrees/a"),
                               state="ready", runtime="none"))
    return git_repo


def assert_refused(res: Any, needle: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert needle in lines[0], lines[0]


bad_names = st.one_of(
    st.text(min_size=0, max_size=60).filter(lambda s: NAME_RE.fullmatch(s) is None),
    st.sampled_from(["HEAD", "a..b", "x.lock", "foo.", "x" * 49]),
).filter(lambda s: not s.startswith("-") and "\x00" not in s)


@FIXTURE_OK
@given(bad_names)
def test_bad_names_change_nothing(project: Path, name: str) -> None:
    before = state(project)
    for argv in (["up", name], ["rm", name, "--force"], ["db", "reset", name], ["env", name]):
        assert_refused(run(project, *argv), "invalid workspace name")
    assert state(project) == before


@FIXTURE_OK
@given(st.text(min_size=0, max_size=60).filter(lambda s: not s.startswith("-") and "\x00" not in s))
def test_bad_labels_say_label_and_change_nothing(project: Path, label: str) -> None:
    try:
        validate_label(label)
        return
    except InvalidLabel:
        pass
    before = state(project)
    for argv in (["db", "checkpoint", "a", label], ["db", "restore", "a", label],
                 ["db", "drop-checkpoint", "a", label]):
        assert_refused(run(project, *argv), "invalid checkpoint label")
    assert state(project) == before


# Every key, with values of every shape: parse() accepts it or names the key in one line.
KEYS = [(section, f.name) for section, cls in (("workspace", cfg.WorkspaceConfig), ("database", cfg.DatabaseConfig),
                                              ("migrations", cfg.MigrationsConfig)) for f in __import__(
    "dataclasses").fields(cls)]
toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
              st.sampled_from(["lots", "2g", "-1", "0", "", " ", "../..", "/etc/passwd", "${X", "a\nb", "x" * 300,
                               "10.0.0.0/8", "8.8.8.0/24", "Bad Image!", "postgresql://", "1e9", "20G", "0M"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=5)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KEYS), toml_values)
def test_every_config_value_is_accepted_or_named(key: tuple[str, str], value: Any) -> None:
    section, name = key
    root = Path("/nonexistent-sandbox-root")
    try:
        cfg.parse(root, {section: {name: value}}, environ={})
    except ConfigError as exc:
        assert exc.exit_code == 2 and "\n" not in str(exc) and "\r" not in str(exc)
        assert exc.key and exc.key.startswith(section), (exc.key, str(exc))


toml_text = st.sampled_from([
    '[workspace]\nmemory = "lots"\n', '[workspace]\ncpus = 0\n', '[workspace]\ncpus = 9999\n',
    '[workspace]\npids = 1\n', '[workspace]\nport_base = 80\n', '[workspace]\nports = 100000\n',
    '[workspace]\nimage = "UPPER/Case"\n', '[database]\nimage = "a b"\n', '[database]\npool_size = "lots"\n',
    '[database]\npool_size = "1M"\n', '[database]\nuser = "x y"\n', '[database]\nbin_dir = "relative/bin"\n',
    '[workspace]\nsubnet_pool = "8.8.0.0/16"\n', '[workspace]\nsubnet_pool = "10.0.0.0/28"\n',
    '[workspace.env]\n"A=B" = "x"\n', '[workspace.env]\nA = "line\\nbreak"\n', '[workspace.env]\nA = "${B"\n',
    '[workspace]\nworktrees = "."\n', '[workspace]\nworktrees = ".git/wt"\n', '[migrations]\npython = " py"\n',
    '[database]\nserver = "url"\nurl = "mysql://x"\n', '[workspace]\nsetup = [""]\n',
])


@FIXTURE_OK
@given(toml_text)
def test_bad_sandbox_toml_is_one_line_exit_2(project: Path, text: str) -> None:
    original = (project / "sandbox.toml").read_text()
    (project / "sandbox.toml").write_text(text)
    try:
        before = state(project)
        for argv in (["ls"], ["up", "b"], ["init"]):
            res = run(project, *argv)
            assert_refused(res, "sandbox.toml")
        assert state(project) == before
    finally:
        (project / "sandbox.toml").write_text(original)


def test_binary_sandbox_toml_is_exit_2(project: Path) -> None:
    (project / "sandbox.toml").write_bytes(b"[workspace]\nimage = \"\xff\xfe\"\n")
    assert_refused(run(project, "ls"), "not UTF-8")


def test_a_tracked_env_file_is_refused_before_anything_changes(project: Path) -> None:
    text = (project / "sandbox.toml").read_text().replace('runtime = "none"\n',
                                                         'runtime = "none"\nenv_file = "alembic.ini"\n')
    (project / "sandbox.toml").write_text(text)
    before = state(project)
    for argv in (["up", "b"], ["init"]):
        assert_refused(run(project, *argv), "tracked by git")
    assert state(project) == before
    assert (project / "alembic.ini").read_text() == "[alembic]\n"


def test_up_from_refuses_an_existing_branch_at_another_commit(project: Path) -> None:
    subprocess.run(["git", "-C", str(project), "branch", "f1", "HEAD~1"], check=True)
    before = state(project)
    assert_refused(run(project, "up", "f1", "--from", "main"), "already exists")
    assert state(project) == before


def test_env_values_that_would_corrupt_an_env_file_are_refused() -> None:
    from sandbox.envfile import render
    from sandbox.errors import UsageError
    for env in ({"A=B": "x"}, {"A": "x\ny"}, {"A": "x\ry"}, {"1A": "x"}, {"A": "nul\x00"}):
        with pytest.raises(UsageError) as info:
            render(env)
        assert info.value.exit_code == 2 and "\n" not in str(info.value)
        assert "x\ny" not in str(info.value)          # the value (maybe a secret) is not echoed


def test_binary_input_to_migrate_lint_is_exit_2(tmp_path: Path) -> None:
    for argv in (["-"], [str(tmp_path / "bin.sql")]):
        (tmp_path / "bin.sql").write_bytes(b"CREATE TABLE \xff\xfe (id int);")
        res = subprocess.run([sys.executable, "-m", "sandbox", "migrate", "lint", *argv], cwd=tmp_path,
                             input=b"\x00\xff\xfe binary", capture_output=True, env={**os.environ, "NO_COLOR": "1"})
        assert res.returncode == 2, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and b"Traceback" not in res.stderr
