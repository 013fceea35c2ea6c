"""pytest plugin: a fresh database per test, cloned from the workspace's migrations and seeds.

Registered under ``pytest11`` (name ``sandbox``) and inert until a test asks for one of its
fixtures: at collection it imports nothing but pytest (``sandbox`` itself loads lazily).

Fixtures:

* ``sandbox_db``: a :class:`~sandbox.databases.testdbs.TestDatabase` (``name``, ``url``) of its
  own, dropped after the test (``--sandbox-keep-failed`` keeps a failed test's and names it);
* ``sandbox_db_url``: its URL; ``sandbox_conn``: a psycopg connection to it.

``@pytest.mark.sandbox_db(readonly=True)`` hands every such test of a worker the same database,
untouched by the plugin between them (for tests that only read).

Where the databases come from:

1. ``SANDBOX_TEST_DATABASE_URL`` (set in every sandbox workspace of the snapshot strategy): the
   workspace's test role, which may create databases in the workspace's own cluster and nowhere
   else. See "Tests get their own databases" in the README for why.
2. Otherwise (CI, no workspace): a throwaway container of the local ``sandbox/postgres`` image
   through testcontainers (never pulled); without Docker or the image, the tests skip with the
   reason.

The template is built from the project's migrations (``[migrations] config`` of
``sandbox.toml``: ``alembic upgrade head`` with ``DATABASE_URL`` set to the template) and seeds
(``[database] seed``), keyed by a hash of the server version, those files and the plugin
version: a migration edit rebuilds it, a second run reuses it, and pytest-xdist workers wait for
one build (an advisory lock).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .databases.testdbs import TestDatabase, TestDatabases

PLUGIN_VERSION = "1"
_KEEP = "--sandbox-keep-failed"
_FAILED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sandbox", "sandbox test databases")
    group.addoption(_KEEP, action="store_true", default=False,
                    help="keep the database of a failed test and print its URL (without the password)")
    group.addoption("--sandbox-pool", type=int, default=2, metavar="N",
                    help="databases each worker keeps ready (default 2; 0: make each on demand)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sandbox_db(readonly=False): options of the sandbox_db fixture; "
                                       "readonly=True shares one untouched database between such tests")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) \
        -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    if rep.when == "call" and rep.failed:
        item.stash[_FAILED] = True
        db = getattr(item, "funcargs", {}).get("sandbox_db")
        if db is not None and item.config.getoption(_KEEP) and not _readonly(item):
            rep.sections.append(("sandbox", f"kept the database of this test: {_shown(_kept(db).url)}"))
    return rep


def _readonly(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("sandbox_db")
    return bool(marker and marker.kwargs.get("readonly"))


def _kept(db: TestDatabase) -> TestDatabase:
    from .databases.testdbs import kept_name
    return kept_name(db)


def _shown(url: str) -> str:
    """A URL without its password (it is in SANDBOX_TEST_DATABASE_URL / the workspace's env)."""
    from urllib.parse import urlsplit, urlunsplit
    parts = urlsplit(url)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}" if parts.username else parts.netloc
    return urlunsplit(parts._replace(netloc=netloc))


# -- where the template comes from -----------------------------------------------------------------

def _project_root(start: Path) -> Path:
    for d in [start, *start.parents]:
        if (d / "sandbox.toml").is_file():
            return d
    return start


def _recipe(root: Path) -> tuple[list[str], Path | None, list[Path]]:
    """(files the template is made of, alembic config or None, seed files)."""
    import configparser
    import tomllib
    try:
        toml = tomllib.loads((root / "sandbox.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        toml = {}
    cfg_name = toml.get("migrations", {}).get("config", "alembic.ini")
    cfg = root / cfg_name if (root / cfg_name).is_file() else None
    seeds = [root / s for s in toml.get("database", {}).get("seed", []) if isinstance(s, str)]
    files: list[str] = [str(s) for s in seeds]
    if cfg is not None:
        files.append(str(cfg))
        parser = configparser.ConfigParser(defaults={"here": str(root)})
        parser.read(cfg)
        location = parser.get("alembic", "script_location", fallback="migrations")
        scripts = (root / location) if not Path(location).is_absolute() else Path(location)
        files += [str(p) for p in scripts.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return files, cfg, seeds


def _builder(root: Path, cfg: Path | None, seeds: list[Path]) -> Callable[[str], None]:
    def build(url: str) -> None:
        import subprocess
        import sys

        from .databases.testdbs import run_sql_file
        if cfg is not None:
            env = {**os.environ, "DATABASE_URL": url}
            res = subprocess.run([sys.executable, "-m", "alembic", "-c", str(cfg), "upgrade", "head"], cwd=root,
                                 env=env, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
                raise RuntimeError("building the test template: alembic upgrade head failed: " + " | ".join(tail))
        for seed in seeds:
            run_sql_file(url, seed.read_text())
    return build


def _events(path: str | None) -> Callable[[str], None]:
    """SANDBOX_TEST_EVENTS names a file that gets one line per template build (for tests)."""
    def note(line: str) -> None:
        if path:
            with open(path, "a") as f:
                f.write(line + "\n")
    return note


def _admin_url(request: pytest.FixtureRequest) -> str:
    url = os.environ.get("SANDBOX_TEST_DATABASE_URL")
    if url:
        return url
    from .databases.testdbs import throwaway_server
    image = os.environ.get("SANDBOX_POSTGRES_IMAGE", "sandbox/postgres:15")
    server = throwaway_server(image)
    if isinstance(server, str):
        pytest.skip(f"sandbox_db: no SANDBOX_TEST_DATABASE_URL (not in a sandbox workspace) and {server}")
    request.session.config.add_cleanup(server.stop)
    return server.url


def _pool_shape(pool: int) -> tuple[int, int]:
    """(warm databases, pool threads) of this worker. Each costs a connection, and a workspace's
    test role may hold 30 (its cluster is small): with more pytest-xdist workers, each keeps less."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers <= 2:
        return pool, 2
    return (pool if workers <= 4 else min(pool, 1)), 1


# -- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def _sandbox_testdbs(request: pytest.FixtureRequest) -> Iterator[TestDatabases]:
    from .databases.testdbs import TestDatabases, file_digest
    root = _project_root(Path(request.config.rootpath))
    files, cfg, seeds = _recipe(root)
    parts = file_digest(files, [PLUGIN_VERSION, *(os.path.relpath(f, root) for f in files)])
    pool, threads = _pool_shape(request.config.getoption("--sandbox-pool"))
    dbs = TestDatabases(_admin_url(request), parts=parts, build=_builder(root, cfg, seeds),
                        pool_size=pool, threads=threads, events=_events(os.environ.get("SANDBOX_TEST_EVENTS")))
    dbs.prepare()
    yield dbs
    dbs.close()


@pytest.fixture
def sandbox_db(request: pytest.FixtureRequest, _sandbox_testdbs: TestDatabases) -> Iterator[TestDatabase]:
    """A database of this test's own, cloned from the template (see the module's docstring)."""
    if _readonly(request.node):
        yield _sandbox_testdbs.readonly()
        return
    db = _sandbox_testdbs.take()
    yield db
    failed = request.node.stash.get(_FAILED, False)
    _sandbox_testdbs.give_back(db, keep=failed and bool(request.config.getoption(_KEEP)))


@pytest.fixture
def sandbox_db_url(sandbox_db: TestDatabase) -> str:
    """The URL of this test's own database."""
    return sandbox_db.url


@pytest.fixture
def sandbox_conn(sandbox_db: TestDatabase, _sandbox_testdbs: TestDatabases) -> Iterator[Any]:
    """A psycopg connection to this test's own database (closed after the test)."""
    conn = _sandbox_testdbs.connection(sandbox_db)
    try:
        yield conn
    finally:
        conn.close()
