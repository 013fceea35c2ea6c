"""The project's baseline database: ``init``, ``db baseline``, seeds, and the storage pool."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Callable

from .. import config as config_mod
from ..core import Project
from ..databases.base import ConnInfo
from ..errors import ConfigError, DatabaseError, SandboxError, UsageError
from ..migrations.discover import discover, find_configs
from ..results import BaselineResult, GrowResult, InitResult, StorageResult
from ..runtime.images import precedence


def init(p: Project, *, strategy: str | None = None, runtime: str | None = None,
         migrations: str | None = None) -> InitResult:
    """Write sandbox.toml if absent, create .sandbox/ and build the baseline."""
    cfg_path = p.root / config_mod.CONFIG_FILE
    wrote = False
    if not p.git.has_commits():
        raise UsageError("the repository has no commits yet: commit something first")
    if not cfg_path.exists():
        mig = migrations or next(iter(find_configs(p.root)), "alembic.ini")
        seed = '"db/seed.sql"'
        text = config_mod.DEFAULT_TOML.format(runtime=runtime or "docker", strategy=strategy or "auto",
                                              migrations=mig, seed=seed)
        # validate what we are about to write before writing anything
        config_mod.parse(p.root, tomllib.loads(text))
        cfg_path.write_text(text)
        wrote = True
        p.config = config_mod.load(p.root)
    elif strategy or runtime or migrations:
        p.progress("sandbox.toml exists: using it as it is (flags ignored)")
    p.check_env_file()
    p.config.state_dir.mkdir(exist_ok=True)
    p.git.ensure_excluded("/.sandbox/")
    env_file = p.env_file()
    if env_file != p.config.workspace.env_file:
        p.progress(f"{p.config.workspace.env_file} is tracked by git: the workspace's credentials go to "
                      f"{env_file} instead (untracked, excluded)")
    if not p.git.ignored(env_file):
        # the managed block holds credentials: never let git pick it up
        p.git.ensure_excluded(env_file)
    p.open_registry(create=True)
    p.registry.set_meta("project_id", p.config.project_id)
    if p.config.workspace.runtime == "docker":
        p.progress(precedence(p.config))
    found = discover(p.tool, p.root, env=p.base_env())
    if found is None:
        p.progress(f"no {p.config.migrations.config} and no other alembic config: no migrations to gate")
    elif found.env_error:
        p.warn(f"env.py failed when run offline ({found.env_error}); the locations init states are alembic's "
               "without it")
    build_baseline(p)
    return InitResult(config=str(cfg_path), wrote_config=wrote, strategy=p.db.name,
                      state_dir=str(p.config.state_dir), env_file=env_file,
                      baseline_head=p.registry.get_meta("baseline_head"),
                      baseline_verified=p.registry.get_meta("baseline_verified") == "1",
                      migrations=found)

# -- baseline ------------------------------------------------------------------------------
def _populate(p: Project, tree: Path) -> Callable[[ConnInfo], None]:
    def populate(conn: ConnInfo) -> None:
        if p.tool.available(tree):
            p.progress("baseline: running migrations to head (in the project's environment)")
            p.tool.upgrade(tree, conn, "heads", env=p.base_env(), what="the baseline database")
        _run_seeds(p, tree, conn)
    return populate


def _run_seeds(p: Project, tree: Path, conn: ConnInfo) -> None:
    from ..databases.seeds import (
        run_seed_file,  # psycopg: loaded when a baseline is built
    )
    from ..migrations.alembic import scrub_secrets
    dbc = p.config.database
    for seed in dbc.seed:
        path = tree / seed
        if not path.exists():
            if dbc.seed == config_mod.DatabaseConfig().seed:
                continue  # the default seed file is optional
            raise ConfigError(f"sandbox.toml: [database] seed: {seed} does not exist", key="database.seed")
        p.progress(f"baseline: seeding {seed}")
        run_seed_file(conn, path, seed)
    if dbc.seed_command:
        p.progress(f"baseline: seed command {' '.join(dbc.seed_command)}")
        res = p.runner.run(tree, list(dbc.seed_command), cwd=tree, env=p.base_env(), db=conn)
        if res.code != 0:
            raise DatabaseError(f"seed command exited {res.code}: "
                                f"{scrub_secrets(res.output[-500:], conn.url())}")


def build_baseline(p: Project) -> None:
    with p.registry.lock("baseline"):
        p.progress("building the baseline database")
        p.registry.set_meta("baseline_verified", "0")
        p.db.build_baseline(_populate(p, p.root))
        heads = p.main_heads()
        p.registry.set_meta("baseline_head", heads[0] if heads else "")
        p.registry.set_meta("baseline_verified", "1")
        p.registry.set_meta("baseline_commit", p.git.rev("HEAD"))


def db_baseline(p: Project, *, refresh: bool = False, import_file: Path | None = None) -> BaselineResult:
    """Rebuild the baseline from main, or load a dump into it."""
    if import_file is not None:
        if not import_file.is_file():
            raise UsageError(f"--import {import_file}: no such file")
        with p.registry.lock("baseline"):
            p.progress(f"importing {import_file} as the baseline")
            p.db.import_baseline(import_file.resolve())
            p.registry.set_meta("baseline_head", "")
            p.registry.set_meta("baseline_source", str(import_file.resolve()))
    elif refresh or not p.db.has_baseline():
        build_baseline(p)
    return BaselineResult(strategy=p.db.name, baseline_head=p.registry.get_meta("baseline_head") or None,
                          baseline_commit=p.registry.get_meta("baseline_commit"))


def storage_init(p: Project, size: str | None = None) -> StorageResult:
    """Make the copy-on-write pool for snapshot clones (a loop-mounted btrfs image; needs root)."""
    from ..databases.storage import detect, parse_size, pool_path, provision_pool
    size = size or p.config.database.pool_size
    try:
        parse_size(size)
    except (ValueError, SandboxError) as exc:
        raise UsageError(f"--size {size!r}: use a size such as 20G or 500M") from exc
    server = p.registry.get_meta("db.server") if (p.config.state_dir / "registry.db").exists() else None
    pool = pool_path(p.config, server or ("local" if p.config.database.server == "local" else "docker"))
    p.git.ensure_excluded("/.sandbox/")
    current = detect(pool)
    if current.kind != "copy":
        return StorageResult(str(pool), current.kind, False)
    st = provision_pool(pool, size)
    return StorageResult(str(pool), st.kind, True, size)


def storage_grow(p: Project, size: str) -> GrowResult:
    """Grow the loop-mounted copy-on-write pool to SIZE (or by +SIZE); needs root."""
    from ..databases.storage import grow_pool
    storage = getattr(p.db, "storage", None)
    if storage is None:
        raise UsageError(f"the {p.db.name} strategy keeps no copy-on-write pool: grow the filesystem "
                         "that holds the database server's data instead")
    return GrowResult(dict(grow_pool(storage.root, size)))

