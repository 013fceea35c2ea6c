"""Hostile migration files in a workspace (property-based, with hypothesis): files that are not
Python, not UTF-8, that do not import, that exit or raise at import, identifiers that are not
literals, revisions pointing at parents nobody defines, cycles, ids taken from main.

``migrate check`` answers exit 1 (a failed check) or 2, with one line on stderr when it prints no
report, never a traceback (a file that is valid Python but declares no revision is no migration:
exit 0, nothing to check). ``migrate status`` is a report: exit 0, the workspace's line names the
problem (``cannot read its migrations: …`` or a conflict). Neither changes anything: main, the
workspace's files and branch, its database, the registry and the server's databases are compared
before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sandbox import Sandbox

from .ops import new_project, ok, report, sandbox, toml

IDS = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12).map(lambda s: "x" + s)
HEADER = 'revision = "{rev}"\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n'


def _python(rev: str, down: str, body: str) -> bytes:
    return (f'"""{rev}"""\nfrom alembic import op\nimport sqlalchemy as sa\n' + HEADER.format(rev=rev, down=down)
            + f"\n{body}\n\ndef upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n").encode()


# one hostile revision file (or two, for a cycle): name -> bytes
hostile_files = st.one_of(
    st.binary(min_size=1, max_size=300).map(lambda b: {"h.py": b}),                        # not text at all
    st.text(min_size=1, max_size=200).map(lambda t: {"h.py": t.encode("utf-8", "surrogatepass")}),
    st.builds(lambda rev, mod: {"h.py": _python(rev, '"0001"', f"import {mod}")}, IDS, IDS),  # does not import
    st.builds(lambda rev, exc: {"h.py": _python(rev, '"0001"', f"raise {exc}")}, IDS,
              st.sampled_from(["SystemExit(3)", "KeyboardInterrupt()", "RecursionError()", "MemoryError()",
                               "ValueError('x' * 100000)"])),
    st.builds(lambda rev, parent: {"h.py": _python(rev, f'"{parent}"', "")}, IDS, IDS),     # a missing parent
    st.builds(lambda rev, a, b: {"h.py": _python(rev, f'("0001", "{a}", "{b}")', "")}, IDS, IDS, IDS),
    st.builds(lambda rev: {"h.py": _python(rev, "__import__('os').getcwd()", "")}, IDS),    # not a literal
    st.builds(lambda a, b: {"a.py": _python(a, f'"{b}"', ""), "b.py": _python(b, f'"{a}"', "")}, IDS, IDS),
    st.just({"h.py": _python("0001", '"0001"', "")}),                                       # main's id, itself
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from conftest import pg_bin_dir, service_missing
    if pg_bin_dir() is None:
        service_missing("PostgreSQL binaries not found")
    repo = new_project(tmp_path_factory.mktemp("hostile-migrations") / "demo", toml("template", 43900))
    ok(sandbox(repo, "up", "h"))
    yield repo
    try:
        Sandbox.open(repo).deinit(force=True)
    except Exception as exc:  # noqa: BLE001 - best effort cleanup, reported
        print(f"cleanup of {repo} failed: {exc}")


def _state(repo: Path, tree: Path) -> dict[str, object]:
    sb = Sandbox.open(repo)
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout  # noqa: E731
    return {"main": git("-C", str(repo), "rev-parse", "HEAD") + git("-C", str(repo), "status", "--porcelain"),
            "branch": git("-C", str(repo), "rev-parse", "refs/heads/h"),
            "tree": git("-C", str(tree), "status", "--porcelain", "--untracked-files=all"),
            "workspaces": [(r.name, r.state) for r in sb.registry.all()], "intents": sb.registry.intents(),
            "databases": sorted(r.id for r in sb.db.owned()), "version": sb.tool.current(sb.conninfo("h")),
            "baseline": sb.registry.get_meta("baseline_head")}


@pytest.mark.postgres
@settings(max_examples=int(os.environ.get("SANDBOX_HOSTILE_EXAMPLES", "12")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_files)
@example({"h.py": b"revision = 'h1'\ndown_revision = '0001'\ndef (:\n"})
@example({"h.py": b"\x00\xff\xfe garbage"})
@example({"h.py": _python("h1", '"nosuchparent"', "")})
@example({"h.py": _python("h1", '"0001"', "import no_such_module_anywhere")})
def test_hostile_revision_files_get_one_line_and_change_nothing(project: Path, files: dict[str, bytes]) -> None:
    repo = project
    tree = Path(Sandbox.open(repo).record("h").path)
    versions = tree / "migrations" / "versions"
    for name, data in files.items():
        (versions / name).write_bytes(data)
    try:
        before = _state(repo, tree)
        status = sandbox(repo, "migrate", "status", "--json")
        assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
        row = {w["name"]: w for w in json.loads(status.stdout)["workspaces"]}["h"]
        human = sandbox(repo, "migrate", "status")
        line = [ln for ln in human.stdout.splitlines() if ln.startswith("h: ")]
        assert human.returncode == 0 and len(line) == 1, human.stdout + human.stderr
        if row.get("error"):
            assert "cannot read its migrations" in line[0]
        check = sandbox(repo, "migrate", "check", "h", "--json")
        assert "Traceback" not in check.stderr + check.stdout
        if check.returncode == 0:          # valid Python that declares no revision: not a migration at all
            assert json.loads(check.stdout)["revisions"] == [] and row["new"] == [] and not row.get("error")
        else:
            assert check.returncode in (1, 2), (check.returncode, check.stdout, check.stderr)
        if check.returncode and check.stdout.strip():
            answer = json.loads(check.stdout)
            assert not answer["ok"] and any(f["severity"] == "error" for f in answer["findings"])
        elif check.returncode:
            assert len(check.stderr.strip().splitlines()) == 1, check.stderr
        assert _state(repo, tree) == before
        report("hostile-migration", files=len(files), check=check.returncode,
               status="error" if row.get("error") else ("conflict" if row.get("conflicts") else "ok"), changed=0)
    finally:
        for name in files:
            (versions / name).unlink(missing_ok=True)
