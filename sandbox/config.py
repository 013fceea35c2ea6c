"""``sandbox.toml`` plus the environment, loaded once into a frozen :class:`Config`.

Every key has a default, so a file holding only the keys someone changed is valid.
Unknown keys, wrong types and paths that leave the repository are rejected with a
:class:`ConfigError` that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

CONFIG_FILE = "sandbox.toml"
STATE_DIR = ".sandbox"

DEFAULT_WORKSPACE_IMAGE = "sandbox/workspace:bookworm"
DEFAULT_POSTGRES_IMAGE = "sandbox/postgres:15"


@dataclass(frozen=True)
class WorkspaceConfig:
    runtime: str = "docker"
    image: str = DEFAULT_WORKSPACE_IMAGE
    setup: tuple[str, ...] = ()
    teardown: tuple[str, ...] = ()
    copy: tuple[str, ...] = (".env",)
    ports: int = 10
    port_base: int = 20000
    worktrees: str = ".sandbox/worktrees"
    memory: str = "2g"
    cpus: float = 2.0
    pids: int = 1024
    env: Mapping[str, str] = field(default_factory=dict)
    env_file: str = ".env"
    dockerfile: str | None = None      # build the project's own image from this Dockerfile
    context: str | None = None         # its build context (default: the Dockerfile's folder)

    def mapped_env(self, values: Mapping[str, str]) -> dict[str, str]:
        """``[workspace.env]`` with ``${NAME}`` replaced by the workspace's ``values`` (``$$`` is a $)."""
        return {key: expand(value, values) for key, value in self.env.items()}


@dataclass(frozen=True)
class DatabaseConfig:
    strategy: str = "auto"
    server: str = "auto"
    image: str = DEFAULT_POSTGRES_IMAGE
    seed: tuple[str, ...] = ("db/seed.sql",)
    seed_command: tuple[str, ...] = ()
    url: str | None = None
    bin_dir: str | None = None
    pool: str = ".sandbox/pool"
    pool_size: str = "20G"
    user: str = "postgres"


@dataclass(frozen=True)
class MigrationsConfig:
    tool: str = "alembic"
    config: str = "alembic.ini"
    policy: str = "additive"
    test: tuple[str, ...] = ()
    merge: str = "ff"
    auto_rebase: bool = False
    roundtrip: bool = False
    python: str | None = None          # runtime "none": the interpreter that runs alembic
    version_table: str = "alembic_version"   # what sandbox reads to verify an upgrade
    version_table_schema: str | None = None


@dataclass(frozen=True)
class Config:
    root: Path
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    migrations: MigrationsConfig = field(default_factory=MigrationsConfig)
    config_file: Path | None = None

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def worktrees_dir(self) -> Path:
        return (self.root / self.workspace.worktrees).resolve()

    @property
    def project_id(self) -> str:
        """A short stable id of this checkout: labels and database names carry it."""
        return hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:8]

    @property
    def project_name(self) -> str:
        return self.root.resolve().name


# The workspace's own values that `[workspace.env]` may refer to as ${NAME}.
ENV_REFERENCES = ("SANDBOX_WORKSPACE", "SANDBOX_PROJECT", "SANDBOX_PATH", "SANDBOX_BRANCH", "SANDBOX_PORT",
                  "SANDBOX_PORTS", "DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")
_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}")


def expand(value: str, values: Mapping[str, str]) -> str:
    """``value`` with ``${NAME}`` replaced from ``values`` (unknown names become empty)."""
    return _REFERENCE.sub(lambda m: "$" if m.group(0) == "$$" else values.get(m.group(1), ""), value)


def _check_references(key: str, value: str, file: str) -> None:
    for m in _REFERENCE.finditer(value):
        if m.group(0) != "$$" and m.group(1) not in ENV_REFERENCES:
            raise ConfigError(f"{file}: [workspace.env] {key}: ${{{m.group(1)}}} is not a workspace value "
                              f"(known: {', '.join(ENV_REFERENCES)})", file=file, key=f"workspace.env.{key}")


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("workspace", "runtime"): ("docker", "none"),
    ("database", "strategy"): ("auto", "snapshot", "template", "schema"),
    ("database", "server"): ("auto", "docker", "local", "url"),
    ("migrations", "tool"): ("alembic",),
    ("migrations", "policy"): ("additive", "warn", "off"),
    ("migrations", "merge"): ("ff", "merge"),
}

# Keys holding paths that must stay inside the repository.
_REPO_PATHS = {("workspace", "worktrees"), ("workspace", "copy"), ("database", "seed"),
               ("migrations", "config"), ("database", "pool"), ("workspace", "env_file"),
               ("workspace", "dockerfile"), ("workspace", "context")}

_SECTIONS = {"workspace": WorkspaceConfig, "database": DatabaseConfig, "migrations": MigrationsConfig}


def _coerce(section: str, key: str, value: Any, default: Any, file: str) -> Any:
    where = f"{file}: [{section}] {key}"
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings", file=file, key=f"{section}.{key}")
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false", file=file, key=f"{section}.{key}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where} must be a positive integer", file=file, key=f"{section}.{key}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{where} must be a positive number", file=file, key=f"{section}.{key}")
        return float(value)
    if isinstance(default, dict) or key == "env":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where} must be a table of strings", file=file, key=f"{section}.{key}")
        for k, v in value.items():
            _check_references(k, v, file)
        return dict(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string", file=file, key=f"{section}.{key}")
    choices = _CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}, not {value!r}",
                          file=file, key=f"{section}.{key}")
    return value


def _check_inside(root: Path, section: str, key: str, value: Any, file: str) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        p = Path(v)
        resolved = (root / p).resolve() if not p.is_absolute() else p.resolve()
        if p.is_absolute() or not resolved.is_relative_to(root.resolve()):
            raise ConfigError(f"{file}: [{section}] {key}: path {v!r} is outside the repository",
                              file=file, key=f"{section}.{key}")


def parse(root: Path, data: Mapping[str, Any], file: str = CONFIG_FILE,
          environ: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document into a :class:`Config`."""
    environ = os.environ if environ is None else environ
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{file}: unknown section [{name}] (known: {', '.join(_SECTIONS)})",
                              file=file, key=name)
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: [{name}] must be a table", file=file, key=name)
        cls = _SECTIONS[name]
        defaults = {f.name: (f.default if f.default is not dataclasses.MISSING
                             else f.default_factory())  # type: ignore[misc,operator]
                    for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, v in value.items():
            if key not in defaults:
                raise ConfigError(f"{file}: unknown key [{name}] {key}", file=file, key=f"{name}.{key}")
            default = defaults[key]
            if default is None:  # optional strings
                default = ""
            kwargs[key] = _coerce(name, key, v, default, file)
            if (name, key) in _REPO_PATHS:
                _check_inside(root, name, key, kwargs[key], file)
        sections[name] = cls(**kwargs)
    ws = sections.get("workspace", WorkspaceConfig())
    db = sections.get("database", DatabaseConfig())
    if environ.get("SANDBOX_WORKSPACE_IMAGE"):
        ws = dataclasses.replace(ws, image=environ["SANDBOX_WORKSPACE_IMAGE"])
    if environ.get("SANDBOX_POSTGRES_IMAGE"):
        db = dataclasses.replace(db, image=environ["SANDBOX_POSTGRES_IMAGE"])
    if db.server == "url" and not db.url:
        raise ConfigError(f"{file}: [database] url is required when server = \"url\"",
                          file=file, key="database.url")
    if db.server == "url" and db.strategy == "snapshot":
        raise ConfigError(f"{file}: [database] strategy = \"snapshot\" needs server docker or local, not url",
                          file=file, key="database.strategy")
    if ws.port_base + ws.ports > 65535:
        raise ConfigError(f"{file}: [workspace] port_base + ports exceeds 65535", file=file, key="workspace.port_base")
    return Config(root=root, workspace=ws, database=db,
                  migrations=sections.get("migrations", MigrationsConfig()),
                  config_file=root / file)


def load(root: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``root/sandbox.toml`` (absent means all defaults)."""
    path = root / CONFIG_FILE
    if not path.exists():
        return parse(root, {}, environ=environ)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE}: invalid TOML: {exc}", file=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"{CONFIG_FILE}: cannot read: {exc.strerror}", file=str(path)) from exc
    return parse(root, data, environ=environ)


DEFAULT_TOML = """\
# sandbox configuration: commit this file. Every key has a default; keep only what you change.
[workspace]
runtime = "{runtime}"              # docker | none (worktree and database only)
image = "sandbox/workspace:bookworm"
setup = []                      # run in the workspace after creation, e.g. ["pip install -e ."]
teardown = []                   # run before rm
copy = [".env"]                 # git-ignored files copied from the main checkout (also .worktreeinclude)
ports = 10                      # size of each workspace's own block of host ports

[database]
strategy = "{strategy}"              # auto | snapshot | template | schema
server = "auto"                 # auto | docker | local | url
image = "sandbox/postgres:15"
seed = [{seed}]

[migrations]
tool = "alembic"
config = "{migrations}"
policy = "additive"             # additive | warn | off
"""
