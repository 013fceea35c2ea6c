"""``sandbox.toml`` plus the environment, loaded once into a frozen :class:`Config`.

Every key has a default, so a file holding only the keys someone changed is valid.
Unknown keys, wrong types and paths that leave the repository are rejected with a
:class:`ConfigError` that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
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
DEFAULT_SUBNET_POOL = "10.213.0.0/16"


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
    subnet_pool: str = DEFAULT_SUBNET_POOL   # workspace networks take small subnets from this range

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
    workspace_quota: str = "50%"      # each workspace's share of a btrfs pool: a size, N% of it, or "off"


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
    # what alembic runs inside (sandbox/migrations/runner.py): the Flask app whose context env.py
    # needs ("module:create_app"), and a wrapper ("module:callable", "anyio-worker", "asyncio-thread")
    app: str | None = None
    wrap: str | None = None
    version_table: str = "alembic_version"   # what sandbox reads to verify an upgrade
    version_table_schema: str | None = None
    run_timeout: str = "10m"           # deadline of each container that runs project code
    # A server outside Docker (server = "local" or "url") can be reached from a container only
    # through the host's network, where the workspace's code reaches every host service too.
    allow_host_network: bool = False
    # the gate: every replay, trace and alembic session on its scratch clones stops a statement after
    # this long, and the whole check (render, replay, trace, tests) stops after gate_timeout
    statement_timeout: str = "60s"
    gate_timeout: str = "15m"

    @property
    def run_timeout_seconds(self) -> int:
        return int(duration_seconds(self.run_timeout) or 600)


@dataclass(frozen=True)
class ComposeConfig:
    """``[compose]``: the project's own services (web, worker, redis…), one stack per workspace."""

    files: tuple[str, ...] = ()        # default: compose.yaml / docker-compose.yml … when present
    services: tuple[str, ...] = ()     # which ones run per workspace (default: all)
    replace: Mapping[str, str] = field(default_factory=dict)   # service -> "database": sandbox provides it
    command: str = "auto"              # auto | v2 | v1 | a path to a compose binary
    allow: tuple[str, ...] = ()        # refused keys main's sandbox.toml allows anyway (e.g. "cap_add")
    enabled: bool = True               # false: never run the project's compose stack
    settle: str = "2s"                 # after `up -d`, how long a service that exits counts as failing


@dataclass(frozen=True)
class Config:
    root: Path
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    migrations: MigrationsConfig = field(default_factory=MigrationsConfig)
    compose: ComposeConfig = field(default_factory=ComposeConfig)
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
               ("workspace", "dockerfile"), ("workspace", "context"), ("compose", "files")}

_SECTIONS = {"workspace": WorkspaceConfig, "database": DatabaseConfig, "migrations": MigrationsConfig,
             "compose": ComposeConfig}


# -- the form of each value (beyond its type) ----------------------------------------------------
# A problem is returned as the end of a sentence ("must be …"); None means the value is fine.

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
# docker's RAMInBytes: a number, an optional unit (b, k, m, g, t), an optional "i" and "b"
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s?([bkmgt]?)(?:i?b)?", re.IGNORECASE)
_MEMORY_MIN = 6 * 1024 ** 2           # the engine refuses less than 6 MiB
# docker's reference grammar (distribution/reference), without the digest algorithm zoo
_IMAGE = re.compile(
    r"(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")
_PG_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SIZE = re.compile(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", re.IGNORECASE)
POOL_SIZE_MIN = 256 * 1024 ** 2       # below this mkfs.btrfs refuses or the pool is useless


def memory_bytes(value: str) -> int | None:
    """Docker's memory syntax (``512m``, ``2g``, ``1.5GiB``) in bytes, or None if malformed."""
    m = _MEMORY.fullmatch(value.strip())
    if not m:
        return None
    return int(float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower()))


def size_bytes(value: str) -> int | None:
    """``20G``-style sizes (K, M, G, T; powers of 1024) in bytes, or None if malformed."""
    m = _SIZE.fullmatch(value)
    if not m:
        return None
    return int(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())


def subnet_pool_problem(value: str) -> str | None:
    """Why ``value`` cannot be the range workspace networks are carved from, or None."""
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return 'must be an IPv4 network such as "10.213.0.0/16" (address bits past the prefix are zero)'
    if net.prefixlen > 22:
        return "must be /22 or larger (it holds one /28 per workspace network; 100 workspaces need /21)"
    if not net.is_private:
        return "must be a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
    return None


def _image_problem(value: str) -> str | None:
    if _IMAGE.fullmatch(value) is None:
        return 'must be a Docker image reference such as "sandbox/postgres:15" or "registry:5000/app:1.2"'
    return None


def _memory_problem(value: str) -> str | None:
    n = memory_bytes(value)
    if n is None:
        return 'must be a Docker memory size such as "512m" or "2g"'
    if n < _MEMORY_MIN:
        return "must be at least 6m (the engine refuses less)"
    return None


def _env_problem(env: Mapping[str, str]) -> str | None:
    for key, value in env.items():
        if not _ENV_KEY.fullmatch(key):
            return f"has an invalid variable name {key!r} (letters, digits and _, not starting with a digit)"
        if any(c in value for c in "\n\r\0"):
            return f"{key}: a value must be one line without NUL bytes (it is written into the env file)"
        for ref in _INTERPOLATION.findall(value):
            if not _ENV_KEY.fullmatch(ref):
                return f"{key}: ${{{ref}}} does not name a variable"
        if "${" in _INTERPOLATION.sub("", value):
            return f"{key}: an unterminated ${{"
    return None


def _range(lo: float, hi: float) -> Any:
    def check(value: float) -> str | None:
        return None if lo <= value <= hi else f"must be between {lo:g} and {hi:g}"
    return check


def _one_of_lines(value: Any) -> str | None:
    items = value if isinstance(value, tuple) else (value,)
    for v in items:
        if isinstance(v, str) and any(c in v for c in "\n\r\0"):
            return "must be one line without NUL bytes"
        if isinstance(v, str) and not v.strip():
            return "must not be blank"
    return None


def _commands(value: tuple[str, ...]) -> str | None:
    for v in value:
        if "\0" in v:
            return "must not hold NUL bytes"
        if not v.strip():
            return "must not hold an empty command"
    return None


def _argv(value: tuple[str, ...]) -> str | None:
    if any("\0" in v for v in value):
        return "must not hold NUL bytes"
    if value and not value[0].strip():
        return "must start with the program to run"
    return None


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def duration_seconds(value: str) -> float | None:
    """``"60s"``, ``"500ms"``, ``"15m"``, ``"1h"`` (a bare number is seconds) → seconds; None if malformed."""
    m = _DURATION.fullmatch(str(value))
    if not m:
        return None
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def _duration(lo: float, hi: float) -> Any:
    def check(value: str) -> str | None:
        n = duration_seconds(value)
        if n is None:
            return 'must be a duration such as "500ms", "60s", "15m" or "1h"'
        if not lo <= n <= hi:
            return f"must be between {lo:g} s and {hi:g} s"
        return None
    return check


def _pool_size(value: str) -> str | None:
    n = size_bytes(value)
    if n is None:
        return 'must be a size such as "20G" or "512M"'
    if n < POOL_SIZE_MIN:
        return "must be at least 256M"
    return None





def workspace_quota_problem(value: str) -> str | None:
    """Why ``value`` cannot be ``[database] workspace_quota``, or None."""
    v = value.strip().lower()
    if v == "off":
        return None
    if v.endswith("%"):
        pct = v[:-1].strip()
        return None if pct.isdigit() and 1 <= int(pct) <= 90 else "must be a percentage from 1% to 90%"
    n = size_bytes(value)
    if n is None:
        return 'must be a size such as "2G", a share of the pool such as "50%", or "off"'
    return None if n >= 64 * 1024 ** 2 else "must be at least 64M (a PostgreSQL cluster needs room for its WAL)"


def _url(value: str) -> str | None:
    from urllib.parse import urlsplit
    if any(c in value for c in "\n\r\0 "):
        return "must be a postgresql:// URL without spaces"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "must be a postgresql:// URL"
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        return "must be a postgresql://USER:PASSWORD@HOST:PORT/DBNAME URL"
    return None


def _python(value: str) -> str | None:
    if any(c in value for c in "\n\r\0") or value != value.strip():
        return "must be an interpreter path or command name (one line, no surrounding spaces)"
    return None


_OBJECT_REF = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*(?::[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)?")
WRAP_BUILTINS = ("anyio-worker", "asyncio-thread")


def _object_ref(value: str) -> str | None:
    return None if _OBJECT_REF.fullmatch(value) else 'must be "module:attribute" (e.g. "app:create_app")'


def _wrap(value: str) -> str | None:
    if value in WRAP_BUILTINS or _OBJECT_REF.fullmatch(value):
        return None
    if value.startswith("advanced-alchemy:") and _OBJECT_REF.fullmatch(value[len("advanced-alchemy:"):]):
        return None
    return f'must be "module:callable", "advanced-alchemy:module:config" or one of {", ".join(WRAP_BUILTINS)}'


def _bin_dir(value: str) -> str | None:
    if any(c in value for c in "\n\r\0") or not os.path.isabs(value):
        return 'must be an absolute directory such as "/usr/lib/postgresql/15/bin"'
    return None


def _user(value: str) -> str | None:
    return None if _PG_IDENT.fullmatch(value) else "must be a PostgreSQL role name (letters, digits, _)"


def _compose_replace(value: Mapping[str, str]) -> str | None:
    bad = [k for k, v in value.items() if v != "database"]
    return f"{bad[0]} = {value[bad[0]]!r}: sandbox provides only \"database\"" if bad else None


_FORMS: dict[tuple[str, str], Any] = {
    ("workspace", "image"): _image_problem,
    ("workspace", "setup"): _commands,
    ("workspace", "teardown"): _commands,
    ("workspace", "copy"): _one_of_lines,
    ("workspace", "ports"): _range(1, 1000),
    ("workspace", "port_base"): _range(1024, 65535),
    ("workspace", "worktrees"): _one_of_lines,
    ("workspace", "memory"): _memory_problem,
    ("workspace", "cpus"): _range(0.01, 1024),
    ("workspace", "pids"): _range(16, 4_194_304),
    ("workspace", "env"): _env_problem,
    ("workspace", "env_file"): _one_of_lines,
    ("workspace", "dockerfile"): _one_of_lines,
    ("workspace", "context"): _one_of_lines,
    ("workspace", "subnet_pool"): subnet_pool_problem,
    ("database", "image"): _image_problem,
    ("database", "seed"): _one_of_lines,
    ("database", "seed_command"): _argv,
    ("database", "url"): _url,
    ("database", "bin_dir"): _bin_dir,
    ("database", "pool"): _one_of_lines,
    ("database", "pool_size"): _pool_size,
    ("database", "user"): _user,
    ("database", "workspace_quota"): workspace_quota_problem,
    ("migrations", "config"): _one_of_lines,
    ("migrations", "test"): _commands,
    ("migrations", "python"): _python,
    ("migrations", "app"): _object_ref,
    ("migrations", "wrap"): _wrap,
    ("migrations", "run_timeout"): _duration(1, 7 * 86_400),
    ("migrations", "statement_timeout"): _duration(0.1, 86_400),
    ("migrations", "gate_timeout"): _duration(1, 7 * 86_400),
    ("compose", "replace"): _compose_replace,
    ("compose", "command"): _one_of_lines,
    ("compose", "settle"): _duration(0, 600),
}


def _check_form(section: str, key: str, value: Any, file: str) -> None:
    check = _FORMS.get((section, key))
    problem = check(value) if check is not None else None
    if problem:
        raise ConfigError(f"{file}: [{section}] {key} {problem}", file=file, key=f"{section}.{key}")


def _check_repo_path(root: Path, section: str, key: str, value: Any, file: str) -> None:
    """Paths inside the repository, and never the repository itself nor its .git (worktrees, pool)."""
    _check_inside(root, section, key, value, file)
    if (section, key) in (("workspace", "worktrees"), ("database", "pool"), ("workspace", "env_file")):
        resolved = (root / value).resolve()
        git_dir = (root / ".git").resolve()
        if resolved == root.resolve() or resolved.is_relative_to(git_dir):
            raise ConfigError(f"{file}: [{section}] {key}: {value!r} must be a path below the repository "
                              "root, outside .git", file=file, key=f"{section}.{key}")


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
            _check_form(name, key, kwargs[key], file)
            if (name, key) in _REPO_PATHS:
                _check_repo_path(root, name, key, kwargs[key], file)
        sections[name] = cls(**kwargs)
    ws = sections.get("workspace", WorkspaceConfig())
    db = sections.get("database", DatabaseConfig())
    for var, section, key in (("SANDBOX_WORKSPACE_IMAGE", "workspace", "image"),
                              ("SANDBOX_POSTGRES_IMAGE", "database", "image"),
                              ("SANDBOX_SUBNET_POOL", "workspace", "subnet_pool")):
        if environ.get(var):
            _check_form(section, key, environ[var], f"environment variable {var}")
    if environ.get("SANDBOX_WORKSPACE_IMAGE"):
        ws = dataclasses.replace(ws, image=environ["SANDBOX_WORKSPACE_IMAGE"])
    if environ.get("SANDBOX_POSTGRES_IMAGE"):
        db = dataclasses.replace(db, image=environ["SANDBOX_POSTGRES_IMAGE"])
    if environ.get("SANDBOX_SUBNET_POOL"):
        ws = dataclasses.replace(ws, subnet_pool=environ["SANDBOX_SUBNET_POOL"])
    db = _server_url(root, db, file, environ)
    compose = sections.get("compose", ComposeConfig())
    if environ.get("SANDBOX_COMPOSE"):              # which compose runs: auto, v2, v1 or a path
        compose = dataclasses.replace(compose, command=environ["SANDBOX_COMPOSE"])
    if db.server == "url" and not db.url:
        raise ConfigError(f"{file}: [database] url is required when server = \"url\" (without a password; "
                          f"or the whole URL in {SERVER_URL_ENV} or {STATE_DIR}/{SERVER_URL_FILE})",
                          file=file, key="database.url")
    if db.server == "url" and db.strategy == "snapshot":
        raise ConfigError(f"{file}: [database] strategy = \"snapshot\" needs server docker or local, not url",
                          file=file, key="database.strategy")
    if ws.port_base + ws.ports > 65535:
        raise ConfigError(f"{file}: [workspace] port_base + ports exceeds 65535", file=file, key="workspace.port_base")
    return Config(root=root, workspace=ws, database=db,
                  migrations=sections.get("migrations", MigrationsConfig()),
                  compose=compose, config_file=root / file)


SERVER_URL_ENV = "SANDBOX_SERVER_URL"
SERVER_URL_FILE = "secrets/database-url"      # under the state folder, mode 0600


def _url_password(value: str) -> bool:
    """Whether a connection URL carries a password (``user:pw@`` or ``?password=``)."""
    from urllib.parse import parse_qs, urlsplit
    try:
        parts = urlsplit(value)
        return bool(parts.password) or "password" in parse_qs(parts.query)
    except ValueError:
        return False


def _server_url(root: Path, db: DatabaseConfig, file: str, environ: Mapping[str, str]) -> DatabaseConfig:
    """The admin URL of ``server = "url"``: ``$SANDBOX_SERVER_URL``, else ``.sandbox/secrets/database-url``,
    else ``[database] url`` (which must hold no password: sandbox.toml is committed).

    (Not ``SANDBOX_DATABASE_URL``: that names a workspace's own database in project code's environment.)
    """
    if db.url and _url_password(db.url):
        raise ConfigError(f"{file}: [database] url holds a password, and {file} is committed: "
                          f"set {SERVER_URL_ENV} or write the URL to {STATE_DIR}/{SERVER_URL_FILE} instead, "
                          f"and keep only postgresql://USER@HOST:PORT/DBNAME in {file}",
                          file=file, key="database.url")
    value, where = environ.get(SERVER_URL_ENV), f"environment variable {SERVER_URL_ENV}"
    if not value:
        path = root / STATE_DIR / SERVER_URL_FILE
        where = f"{STATE_DIR}/{SERVER_URL_FILE}"
        try:
            value = path.read_text().strip() if db.server == "url" else None
        except FileNotFoundError:
            value = None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror}", file=str(path), key="database.url") from exc
    if not value:
        return db
    problem = _url(value)
    if problem:
        raise ConfigError(f"{where} {problem}", key="database.url")
    return dataclasses.replace(db, url=value)


def load(root: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``root/sandbox.toml`` (absent means all defaults)."""
    path = root / CONFIG_FILE
    if not path.exists():
        return parse(root, {}, environ=environ)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE}: invalid TOML: {str(exc).splitlines()[0]}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{CONFIG_FILE}: not UTF-8 text (byte {exc.start})", file=str(path)) from exc
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
