"""One hostile project per module: Docker workspaces whose agents attack the host and main.

Workspaces of :class:`HostileProject` (template strategy on a Docker server; `[migrations] test`
runs `tests/gate.sh`):

- ``a``, the victim: a ``canary`` table in its database, beside the seeded ``posts``.
- ``b``, git attacks (:func:`plant_script`) from inside its container, plus a hostile
  ``sandbox.toml`` (``runtime = "none"``, setup/teardown/seed_command/test that leave markers) and
  a hostile ``alembic.ini`` (``script_location`` outside the tree), both committed on ``b``.
- ``r``, the same git attacks with ``core.hooksPath``, and an uncommitted revision with code at
  module top level; the sweep removes it with ``rm --force``.
- ``o``, the same git attacks; the sweep forgets it (a crash) before ``gc``.
- ``t``, a committed revision with code at module top level.
- ``m``, a revision whose ``upgrade()`` reads ``.sandbox/secrets``, connects to every database it
  can reach and drops ``a``'s tables, and a ``tests/gate.sh`` that leaves a marker; the sweep
  merges it.

Files are written and committed from inside the containers, as the agents would. The markers
folder, and the folder the hostile ``alembic.ini`` points at, sit beside the project: outside
everything mounted into containers.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import pg_bin_dir, service_missing
from e2e.conftest import GIT_ENV, cli, make_demo_repo

from .payloads import (clear, cross_database_attack, markers, plant_script, revision_source,
                       toplevel_marker)

IMAGES = ("sandbox/workspace:bookworm", "sandbox/postgres:15")
TOML = """\
[workspace]
runtime = "docker"
ports = 5

[database]
strategy = "template"
server = "docker"
seed = ["db/seed.sql"]

[migrations]
test = ["sh tests/gate.sh"]
"""

# Host git run by the tests themselves in main: never runs hooks or fsmonitor, whatever an
# attack managed to write into main's .git (so that every marker is sandbox's doing).
SAFE_GIT = ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "--no-pager"]


def safe_git(repo: Path, *args: str, check: bool = True) -> str:
    res = subprocess.run([*SAFE_GIT, "-C", str(repo), *args], capture_output=True, text=True,
                         env={**os.environ, **GIT_ENV}, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {res.stderr}")
    return res.stdout


def cli_in(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """sandbox run from ``cwd`` with no --project: the way an agent calls it from its worktree."""
    return subprocess.run([sys.executable, "-m", "sandbox", "-q", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, **GIT_ENV, "NO_COLOR": "1", "COLUMNS": "200"})


def need_docker_images(docker_client: Any) -> None:
    if pg_bin_dir() is None:
        service_missing("PostgreSQL binaries not found")
    for image in IMAGES:
        try:
            docker_client.images.get(image)
        except Exception:  # noqa: BLE001
            service_missing(f"image {image} missing: run scripts/build-images")


@dataclass
class HostileProject:
    repo: Path
    mark: Path
    evil_alembic: Path
    paths: dict[str, Path] = field(default_factory=dict)
    expect: dict[str, str] = field(default_factory=dict)     # branch -> sha it must still have
    orphans: set[str] = field(default_factory=set)
    planting: list[str] = field(default_factory=list)        # what planting changed in main's repo
    victim_env: dict[str, str] = field(default_factory=dict, repr=False)   # holds a's password

    def __repr__(self) -> str:
        return f"HostileProject({self.repo})"

    # -- acting as an agent ------------------------------------------------------------------
    def sh(self, ws: str, script: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        return cli(self.repo, "exec", ws, "--", "sh", "-c", script, check=check)

    def put(self, ws: str, rel: str, text: str, *, commit: str | None = None) -> None:
        """Write a file in the workspace's checkout from inside its container (and commit it)."""
        data = base64.b64encode(text.encode()).decode()
        script = f"mkdir -p {shlex.quote(str(Path(rel).parent))} && echo {data} | base64 -d > {shlex.quote(rel)}"
        if commit:
            script += f" && git add -A && git commit -qm {shlex.quote(commit)}"
        self.sh(ws, script)

    # -- what must hold after every command ------------------------------------------------------
    def refs(self) -> dict[str, str]:
        out = safe_git(self.repo, "for-each-ref", "--format=%(refname) %(objectname)")
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def victim_damage(self) -> str | None:
        """None while a's canary (1 row) and seeded posts (2 rows) are intact, else what is wrong."""
        import psycopg
        env = self.victim_env
        try:
            with psycopg.connect(host=env["PGHOST"], port=int(env["PGPORT"]), user=env["PGUSER"],
                                 password=env["PGPASSWORD"], dbname=env["PGDATABASE"], connect_timeout=10,
                                 options=env.get("PGOPTIONS") or None) as c:
                counts = []
                for table in ("canary", "posts"):
                    try:
                        counts.append(c.execute(f"select count(*) from {table}").fetchone()[0])  # type: ignore[index]
                    except psycopg.Error as exc:
                        c.rollback()
                        counts.append(f"{table}: {exc.diag.message_primary}")
        except psycopg.Error as exc:
            return f"cannot connect to a's database: {exc}"
        return None if counts == [1, 2] else f"a's canary/posts: {counts}"

    def repair_victim(self) -> None:
        cli(self.repo, "db", "reset", "a")
        self.victim_env = json.loads(cli(self.repo, "env", "a", "--format", "json").stdout)
        self.sh("a", 'psql "$DATABASE_URL" -qc "create table if not exists canary (v text); '
                     "insert into canary values ('alive')\"")

    def verdict(self, step: str, *, victim: bool = True) -> list[str]:
        """Problems left by ``step`` (each one repaired, so the next step is judged on its own).
        ``victim=False`` when the step removed a's database itself (deinit)."""
        problems: list[str] = []
        found = markers(self.mark)
        if found:
            problems.append(f"{step}: workspace code ran on the host: {', '.join(found)}")
            clear(self.mark)
        damage = self.victim_damage() if victim else None
        if damage:
            problems.append(f"{step}: the other workspace's data was touched: {damage}")
            self.repair_victim()
        refs = self.refs()
        for branch, sha in self.expect.items():
            now = refs.get(f"refs/heads/{branch}")
            if now != sha:
                problems.append(f"{step}: branch {branch} moved from {sha[:10]} to {(now or 'nothing')[:10]}")
                safe_git(self.repo, "update-ref", f"refs/heads/{branch}", sha)
        for ref, sha in refs.items():
            if sha in self.orphans and ref.startswith(("refs/heads/", "refs/tags/")) \
                    and ref.removeprefix("refs/heads/") not in self.expect:
                problems.append(f"{step}: {ref} points at the attacker's orphan commit {sha[:10]}")
                safe_git(self.repo, "update-ref", "-d", ref)
        return problems


def _snapshot_git(repo: Path) -> dict[str, Any]:
    git_dir = repo / ".git"
    attributes = git_dir / "info" / "attributes"
    return {"HEAD": (git_dir / "HEAD").read_bytes(), "config": (git_dir / "config").read_bytes(),
            "attributes": attributes.read_bytes() if attributes.exists() else b"",
            "hooks": sorted(p.name for p in (git_dir / "hooks").iterdir() if not p.name.endswith(".sample")),
            "objects": sorted(p.name for p in (git_dir / "objects").iterdir())}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[HostileProject]:
    need_docker_images(docker_client)
    tmp = tmp_path_factory.mktemp("sec")
    os.chmod(tmp, 0o755)
    mark = tmp / "markers"
    mark.mkdir()
    evil = tmp / "evil-alembic"
    repo = make_demo_repo(tmp / "proj", TOML)
    (repo / "tests").mkdir()
    (repo / "tests" / "gate.sh").write_text("#!/bin/sh\n# the gate's test command (main's version)\nexit 0\n")
    safe_git(repo, "add", "-A")
    safe_git(repo, "commit", "-qm", "gate test")
    hp = HostileProject(repo=repo, mark=mark, evil_alembic=evil)
    try:
        cli(repo, "init")
        res = json.loads(cli(repo, "up", "a", "b", "r", "o", "t", "m", "--json").stdout)
        assert all(r["ok"] for r in res), res
        hp.paths = {row["name"]: Path(row["path"]) for row in json.loads(cli(repo, "ls", "--json").stdout)}
        _arm(hp)
        yield hp
    finally:
        teardown(repo, docker_client)


def teardown(repo: Path, docker_client: Any) -> None:
    """deinit; when an attack wedged it (today, a `.git` symlink stops `rm`), remove what is
    labelled with the project by hand, so no container or network outlives the test."""
    from sandbox import Sandbox
    res = cli(repo, "deinit", "--force", check=None)
    if res.returncode == 0:
        return
    project = Sandbox.open(repo).config.project_id
    label = {"label": f"dev.sandbox.project={project}"}
    for c in docker_client.containers.list(all=True, filters=label):
        c.remove(force=True, v=True)
    for n in docker_client.networks.list(filters=label):
        n.remove()


def _arm(hp: HostileProject) -> None:
    repo, mark = hp.repo, hp.mark
    # a: the victim
    hp.victim_env = json.loads(cli(repo, "env", "a", "--format", "json").stdout)
    hp.sh("a", 'psql "$DATABASE_URL" -qc "create table canary (v text); insert into canary values (\'alive\')"')
    # m: upgrade() goes after the secrets and a's database; the gate's test leaves a marker
    hp.put("m", "migrations/versions/m001_nickname.py", revision_source(
        "m001", "0001", 'op.add_column("users", sa.Column("nickname_m", sa.Text()))\n    _attack()',
        helpers=cross_database_attack(mark, repo, "m")))
    hp.put("m", "tests/gate.sh", "#!/bin/sh\n"
           f"touch {mark}/m-gate-tests 2>/dev/null\n"
           f"cat {repo}/.sandbox/secrets/* >/dev/null 2>&1 && touch {mark}/m-gate-tests-read-secrets\n"
           "exit 0\n", commit="m: nickname")
    # t: code at module top level, committed
    hp.put("t", "migrations/versions/t001_toplevel.py", revision_source(
        "t001", "0001", 'op.add_column("users", sa.Column("t_col", sa.Text()))',
        top=toplevel_marker(mark, "t-toplevel-import")), commit="t: toplevel")
    # r: code at module top level, not committed
    hp.put("r", "migrations/versions/r001_toplevel.py", revision_source(
        "r001", "0001", 'op.add_column("users", sa.Column("r_col", sa.Text()))',
        top=toplevel_marker(mark, "r-toplevel-uncommitted")))
    # b: its own alembic.ini sends script_location out of the tree; its own sandbox.toml is hostile
    (hp.evil_alembic / "versions").mkdir(parents=True)
    (hp.evil_alembic / "env.py").write_text(toplevel_marker(mark, "b-ini-env-py"))
    shutil.copy(repo / "migrations" / "versions" / "0001_initial.py", hp.evil_alembic / "versions")
    (hp.evil_alembic / "versions" / "e001.py").write_text(revision_source(
        "e001", "0001", "pass", top=toplevel_marker(mark, "b-ini-script-location")))
    out_of_tree = os.path.relpath(hp.evil_alembic, hp.paths["b"])     # ../../../../evil-alembic
    ini = (repo / "alembic.ini").read_text().replace(
        "script_location = migrations", f"script_location = {out_of_tree}").replace(
        "prepend_sys_path = .", f"prepend_sys_path = {out_of_tree}")
    assert ini != (repo / "alembic.ini").read_text()
    hp.put("b", "alembic.ini", ini)
    hp.put("b", "sandbox.toml", f"""\
[workspace]
runtime = "none"
setup = ["touch {mark}/b-toml-setup"]
teardown = ["touch {mark}/b-toml-teardown"]

[database]
strategy = "template"
server = "local"
seed = ["db/seed.sql"]
seed_command = ["sh", "-c", "touch {mark}/b-toml-seed-command"]

[migrations]
test = ["touch {mark}/b-toml-gate-test"]
""", commit="b: my own config")
    # whatever sandbox does to bring commits made inside into main's repository, let it happen
    cli(repo, "ls")
    before = _snapshot_git(repo)
    refs_before = hp.refs()
    hp.expect = {b: refs_before[f"refs/heads/{b}"] for b in ("main", "a", "m", "t")}
    # b, r, o: the git attacks, from inside their containers
    for ws in ("b", "r", "o"):
        out = hp.sh(ws, plant_script(mark, repo, hooks_path=(ws == "r"))).stdout
        hp.orphans |= {ln.split("=", 1)[1].strip() for ln in out.splitlines() if ln.startswith("ORPHAN=")}
    assert hp.orphans, "the plant script made no orphan commit"
    hp.planting = _planting_effects(hp, before, refs_before)
    clear(mark)


def _planting_effects(hp: HostileProject, before: dict[str, Any], refs_before: dict[str, str]) -> list[str]:
    """What the attacks run inside the containers changed in main's repository; refs and HEAD are
    put back and probe files removed (the sweep judges each command on its own), the config and
    hooks are left as the attack made them."""
    git_dir = hp.repo / ".git"
    after = _snapshot_git(hp.repo)
    effects = []
    if after["HEAD"] != before["HEAD"]:
        effects.append(f"main's HEAD rewritten: {after['HEAD']!r}")
        (git_dir / "HEAD").write_bytes(before["HEAD"])
    if after["config"] != before["config"]:
        effects.append("main's .git/config changed")
    if after["attributes"] != before["attributes"]:
        effects.append("main's .git/info/attributes changed")
    new_hooks = sorted(set(after["hooks"]) - set(before["hooks"]))
    if new_hooks:
        effects.append(f"hooks written into main's .git/hooks: {', '.join(new_hooks)}")
    probes = sorted(str(p.relative_to(git_dir)) for p in (git_dir / "objects").rglob("sandbox-probe-*"))
    if probes:
        effects.append(f"files written into main's .git/objects: {', '.join(probes)}")
        for p in probes:
            (git_dir / p).unlink()
    refs = hp.refs()
    for ref, sha in sorted(refs.items()):
        if refs_before.get(ref) != sha and (sha in hp.orphans or ref.removeprefix("refs/heads/") in hp.expect):
            effects.append(f"{ref} moved to the orphan commit {sha[:10]}")
            if ref in refs_before:
                safe_git(hp.repo, "update-ref", ref, refs_before[ref])
            else:
                safe_git(hp.repo, "update-ref", "-d", ref)
    return effects
