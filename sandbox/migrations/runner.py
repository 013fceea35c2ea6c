"""One alembic command, run by the PROJECT's interpreter (its image, or its virtualenv).

sandbox never imports this module: it hands this file to the project's ``python`` as a script,
with the working directory at the folder that holds the alembic config, exactly as a developer
runs ``alembic upgrade head`` there. It needs only alembic and the standard library (plus
whatever the project's own ``env.py`` imports), and works with alembic 1.8 and newer.

    python runner.py '{"config": "alembic.ini", "action": "upgrade", "target": "heads",
                       "url": "postgresql://…"}'

Actions: ``upgrade`` / ``downgrade`` (``target``), ``sql`` (offline SQL from ``downs`` to
``target``). The last line of standard output is ``@@sandbox-result@@ {json}``: ``{"ok": true,
"sql": …}`` or ``{"ok": false, "error": "…"}``; whatever the project prints comes before it.

The URL is given to ``env.py`` as ``sqlalchemy.url`` (and as ``DATABASE_URL`` in the
environment). Its driver is the one the project's config names (``postgresql+asyncpg://…``),
else one the interpreter has and its SQLAlchemy has a dialect for: an async ``env.py`` gets asyncpg
or psycopg, a sync one psycopg or psycopg2.

Layouts alembic itself resolves: ``script_location`` as a path or in package form
(``package:path``), ``version_locations``, and the Flask-Migrate layout (an ``alembic.ini``
without ``script_location`` beside its ``env.py``, which Flask-Migrate's own ``Config`` points at
its folder). ``describe`` asks alembic, after ``env.py`` ran (offline, under the same wrapper),
where the revisions are: ``env.py`` may choose its version locations at run time.

Wrappers (``[migrations] app`` / ``wrap`` in sandbox.toml, sent as ``app`` / ``wrap``): every
action, offline SQL included, runs inside them.

- ``app = "module:factory"`` (or ``"module:app"``): the Flask application, whose app context is
  pushed around alembic. A Flask-Migrate ``env.py`` with no ``app`` finds the application as
  ``flask db upgrade`` does (``FLASK_APP``, ``.flaskenv``/``.env``, ``wsgi.py``/``app.py``).
- ``wrap = "module:callable"``: ``callable()`` returning a context manager (a
  ``@contextmanager`` with no arguments), or ``callable(run)`` that must call ``run()`` (the
  alembic command) and return its result, in its own event loop, thread or context; a coroutine
  it returns is run with ``asyncio.run``.
- ``wrap = "advanced-alchemy:module:config"``: the alembic Config that advanced-alchemy's CLI
  (``app database upgrade``) builds from the project's SQLAlchemy config object, for env.py files
  that read ``config.db_url``/``config.engine`` (Litestar and advanced-alchemy templates).
- ``wrap = "anyio-worker"``: alembic runs in an AnyIO worker thread of an AnyIO event loop
  (``env.py`` calls ``anyio.from_thread.run``); ``wrap = "asyncio-thread"``: in a thread while an
  asyncio loop runs in the main one (``env.py`` schedules onto the running loop).
"""

import os
import sys

# Run as a script, this file's folder is sys.path[0]; the project's code must see its own world
# instead, as `python -m alembic` run from the config's folder would: that folder first.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.getcwd()

import importlib.util
import io
import json

MARK = "@@sandbox-result@@"


def _has(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _env_text(cfg):
    """The text of env.py (empty when it cannot be found or read)."""
    try:
        from alembic.script import ScriptDirectory

        path = os.path.join(ScriptDirectory.from_config(cfg).dir, "env.py")
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except Exception:  # noqa: BLE001 - no env.py to read: no hint from it
        return ""


def _env_is_async(cfg):
    text = _env_text(cfg)
    return "async_engine_from_config" in text or "create_async_engine" in text


def _is_flask(cfg):
    text = _env_text(cfg)
    return "flask_migrate" in text or ("current_app" in text and "flask" in text)


def _driver_url(cfg, url):
    """``url`` (libpq style) with the SQLAlchemy driver this project uses."""
    scheme, sep, rest = url.partition("://")
    if not sep or "+" in scheme or scheme not in ("postgresql", "postgres"):
        return url
    driver = None
    try:
        existing = cfg.get_main_option("sqlalchemy.url") or ""
    except Exception:  # noqa: BLE001 - an unresolvable interpolation: no hint from the config
        existing = ""
    ex_scheme = existing.partition("://")[0]
    if "+" in ex_scheme:
        driver = ex_scheme.partition("+")[2]
    if driver is None:
        candidates = ("asyncpg", "psycopg") if _env_is_async(cfg) else ("psycopg", "psycopg2", "asyncpg")
        # a driver the interpreter has AND its SQLAlchemy has a dialect for (SQLAlchemy 1.4 has none
        # for psycopg 3, which an image may still hold)
        driver = next((d for d in candidates if _has(d) and _has(f"sqlalchemy.dialects.postgresql.{d}")), None)
    return f"postgresql+{driver}://{rest}" if driver else f"postgresql://{rest}"


def _config(path, buffer):
    from alembic.config import Config

    if path.endswith(".toml"):
        cfg = Config(toml_file=path, output_buffer=buffer)
    else:
        cfg = Config(file_=path, output_buffer=buffer)
    if not cfg.get_main_option("script_location"):
        # Flask-Migrate's layout: its alembic.ini has no script_location, its own Config points
        # alembic at the folder that holds the ini (and env.py); do what it does
        here = os.path.dirname(os.path.abspath(path))
        if os.path.isfile(os.path.join(here, "env.py")):
            cfg.set_main_option("script_location", here.replace("%", "%%"))
    return cfg


def _root(req):
    """The checkout's root as this process sees it (the request gives it relative to the cwd)."""
    return os.path.normpath(os.path.join(os.getcwd(), req.get("root") or "."))


_SKIP_DIRS = {".git", ".sandbox", ".venv", "venv", "node_modules", "__pycache__", "site-packages", ".tox"}


def _find_package_parent(root, top):
    """The folder under ``root`` (at most 3 levels down: ``src/``, ``src/py/``) holding package
    ``top``: where a developer's editable install would put it on sys.path."""
    level = [root]
    for _ in range(4):
        for folder in level:
            if os.path.isfile(os.path.join(folder, top, "__init__.py")):
                return folder
        nxt = []
        for folder in level:
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            nxt += [os.path.join(folder, n) for n in names
                    if n not in _SKIP_DIRS and not n.startswith(".") and os.path.isdir(os.path.join(folder, n))]
        level = nxt[:200]
    return None


def _resolve(spec, root=None):
    """``module.path:attr.attr`` -> the object (imported with the checkout's root on sys.path, or
    the folder of the checkout that holds the module's package: a src layout)."""
    module, _, attr = spec.partition(":")
    module = module.strip()
    top = module.split(".")[0]
    if root and importlib.util.find_spec(top) is None:
        parent = _find_package_parent(root, top)
        if parent and parent not in sys.path:
            sys.path.insert(1, parent)
    obj = importlib.import_module(module)
    for part in [a for a in attr.strip().split(".") if a]:
        obj = getattr(obj, part)
    return obj


def _flask_app(req, cfg):
    """The Flask application whose context env.py needs, or None when it needs none."""
    spec = req.get("app")
    if not spec and not _is_flask(cfg):
        return None
    root, cwd = _root(req), os.getcwd()
    os.chdir(root)      # FLASK_APP, .flaskenv and the app's own relative paths are the root's
    try:
        if spec:
            obj = _resolve(spec, root)
            return obj if hasattr(obj, "app_context") else obj()
        from flask.cli import ScriptInfo, load_dotenv

        load_dotenv()   # .flaskenv/.env, without overriding what sandbox set (DATABASE_URL)
        return ScriptInfo().load_app()
    finally:
        os.chdir(cwd)


def _in_app(req, cfg, work):
    app = _flask_app(req, cfg)
    if app is None:
        return work()
    with app.app_context():
        return work()


def _required_params(fn):
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in sig.parameters.values()
               if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


_WRAP_ROOT = []  # type: ignore[var-annotated]  # the checkout root of the current request


def _wrapped(spec, work):
    """``work()`` inside the project's wrapper (see the module's docstring)."""
    box = {}

    def run():
        box["result"] = work()
        return box["result"]

    if not spec:
        return run()
    if spec == "anyio-worker":
        import anyio
        import anyio.to_thread

        async def main():
            return await anyio.to_thread.run_sync(run)

        anyio.run(main)
    elif spec == "asyncio-thread":
        import asyncio

        async def main():
            return await asyncio.get_running_loop().run_in_executor(None, run)

        asyncio.run(main())
    else:
        import asyncio

        wrapper = _resolve(spec, _WRAP_ROOT[0] if _WRAP_ROOT else None)
        if _required_params(wrapper) == 0:
            manager = wrapper()
            if hasattr(manager, "__enter__"):
                with manager:
                    run()
            elif hasattr(manager, "__aenter__"):
                async def main():
                    async with manager:
                        return await asyncio.get_running_loop().run_in_executor(None, run)

                asyncio.run(main())
            else:
                raise TypeError(f"[migrations] wrap = {spec!r}: calling it with no argument gave "
                                f"{type(manager).__name__}, not a context manager")
        else:
            outcome = wrapper(run)
            if asyncio.iscoroutine(outcome):
                asyncio.run(outcome)
    if "result" not in box:
        raise RuntimeError(f"[migrations] wrap = {spec!r} returned without running alembic")
    return box["result"]


def _describe(cfg, req):
    """Where alembic finds the revisions, after env.py ran (offline, with no database)."""
    import alembic
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(cfg)

    def locations(each):
        each.__dict__.pop("_version_locations", None)     # memoized by alembic: env.py may change it
        found = getattr(each, "_version_locations", None) or [os.path.join(each.dir, "versions")]
        return [os.path.abspath(str(loc)) for loc in found]

    before = locations(script)
    env_error = None
    if req.get("run_env", True):
        try:
            with EnvironmentContext(cfg, script, as_sql=True, fn=lambda rev, context: [],
                                    starting_rev=None, destination_rev="heads"):
                script.run_env()
        except BaseException as exc:  # noqa: BLE001 - reported: the static answer still stands
            env_error = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
    # env.py may set context.script.version_locations, or the config's option, at run time
    chosen = script if locations(script) != before else ScriptDirectory.from_config(cfg)
    root = _root(req)
    revisions = {}
    for rev in chosen.walk_revisions():
        down = rev.down_revision
        downs = [] if down is None else [down] if isinstance(down, str) else list(down)
        deps = rev.dependencies
        deps = [] if deps is None else [deps] if isinstance(deps, str) else list(deps)
        revisions[rev.revision] = {"down": downs, "depends_on": deps,
                                   "path": os.path.relpath(os.path.abspath(rev.path), root)}
    found_locations = locations(chosen)

    def rel(path):
        return os.path.relpath(os.path.abspath(str(path)), root)

    return {"describe": {
        "script_location": rel(script.dir), "version_locations": [rel(p) for p in found_locations],
        "configured": cfg.get_main_option("script_location"), "revisions": revisions,
        "env_error": env_error, "alembic": getattr(alembic, "__version__", "?"), "python": sys.executable,
        "flask": bool(_is_flask(cfg)),
    }}


def _act(cfg, req, buffer):
    from alembic import command

    action = req["action"]
    if action == "describe":
        return _describe(cfg, req)
    if action == "upgrade":
        command.upgrade(cfg, req["target"])
        return {}
    if action == "downgrade":
        command.downgrade(cfg, req["target"])
        return {}
    if action == "sql":
        target, downs = req["target"], req.get("downs") or []
        if len(downs) <= 1:
            command.upgrade(cfg, f"{downs[0]}:{target}" if downs else target, sql=True)
        else:   # a merge revision: command.upgrade's "start:end" takes one start
            from alembic.runtime.environment import EnvironmentContext
            from alembic.script import ScriptDirectory

            script = ScriptDirectory.from_config(cfg)
            with EnvironmentContext(cfg, script, as_sql=True, starting_rev=tuple(downs), destination_rev=target,
                                    fn=lambda rev, context: script._upgrade_revs(target, tuple(downs))):
                script.run_env()
        return {"sql": buffer.getvalue()}
    raise ValueError(f"unknown action {action!r}")


def run(req):
    buffer = io.StringIO()
    root = _root(req)
    if root not in sys.path:    # the project's modules (app factory, wrapper) import from its root
        sys.path.insert(1, root)
    _WRAP_ROOT[:] = [root]
    wrap = req.get("wrap") or None
    if wrap and wrap.startswith(ADVANCED_ALCHEMY):
        cfg = _advanced_alchemy_config(req, wrap[len(ADVANCED_ALCHEMY):], buffer)
        wrap = None
    else:
        cfg = _config(req["config"], buffer)
        _prepend_sys_path(cfg)
        url = os.environ.get("SANDBOX_DATABASE_URL") if req.get("url_from_env") else req.get("url")
        if url:
            cfg.set_main_option("sqlalchemy.url", _driver_url(cfg, url).replace("%", "%%"))
    return _wrapped(wrap, lambda: _in_app(req, cfg, lambda: _act(cfg, req, buffer)))


def _prepend_sys_path(cfg):
    """``prepend_sys_path``, as the alembic command line applies it (relative to the cwd)."""
    import re

    value = cfg.get_main_option("prepend_sys_path") or ""
    paths = [p for p in re.split(r"[\s,]+|" + re.escape(os.pathsep), value) if p]
    sys.path[:0] = [os.path.abspath(p) for p in paths if os.path.abspath(p) not in sys.path]


ADVANCED_ALCHEMY = "advanced-alchemy:"


def _advanced_alchemy_config(req, spec, buffer):
    """The alembic Config that advanced-alchemy's CLI (``app database upgrade``) builds from the
    project's SQLAlchemy config object: its env.py reads ``config.db_url``/``config.engine``, which a
    plain alembic Config lacks. The URL is the project's own (its settings read DATABASE_URL)."""
    from advanced_alchemy.alembic.commands import AlembicCommands

    root, cwd = _root(req), os.getcwd()
    os.chdir(root)      # the SQLAlchemy config's script paths are the project's, from its root
    try:
        target = _resolve(spec, root)
        commands = AlembicCommands(sqlalchemy_config=target)
        cfg = commands.config
        location = cfg.get_main_option("script_location")
        if location and not os.path.isabs(location) and ":" not in location:
            cfg.set_main_option("script_location", os.path.join(root, location).replace("%", "%%"))
    finally:
        os.chdir(cwd)
    cfg.output_buffer = buffer
    return cfg


def _qualified(cls):
    return f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', cls.__name__)}"


def _facts(exc):
    """What sandbox decides a hint from, typed rather than read from the message: the exception's
    classes (qualified), the module whose code raised it, the module an ImportError could not
    find, and for an AttributeError the class of the object that lacked the attribute."""
    facts = {"type": type(exc).__name__, "types": [_qualified(c) for c in type(exc).__mro__]}
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        facts["raised_in"] = str(tb.tb_frame.f_globals.get("__name__") or "")
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    if missing:
        facts["missing_module"] = str(missing)
    if isinstance(exc, AttributeError):
        obj, name = getattr(exc, "obj", None), getattr(exc, "name", None)   # Python 3.10+
        if obj is not None:
            facts["attribute_of"] = _qualified(type(obj))
        if name:
            facts["attribute"] = str(name)
    return facts


def main():
    try:
        req = json.loads(sys.argv[1])
        result = {"ok": True, **run(req)}
    except BaseException as exc:  # noqa: BLE001 - everything is reported to sandbox, which decides
        text = str(exc).strip() or type(exc).__name__
        result = {"ok": False, "error": f"{type(exc).__name__}: {text}", **_facts(exc)}
    sys.stdout.flush()
    sys.stdout.write("\n" + MARK + " " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
