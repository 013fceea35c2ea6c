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
else one the interpreter has: an async ``env.py`` gets asyncpg or psycopg, a sync one psycopg
or psycopg2.
"""

import os
import sys

# Run as a script, this file's folder is sys.path[0]; the project's code must see its own world
# instead, as `python -m alembic` run from the config's folder would: that folder first.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.getcwd()

import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402

MARK = "@@sandbox-result@@"


def _has(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _env_is_async(cfg):
    try:
        location = cfg.get_main_option("script_location") or ""
        path = os.path.join(location.replace("%(here)s", os.getcwd()), "env.py")
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return False
    return "async_engine_from_config" in text or "create_async_engine" in text


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
        driver = next((d for d in candidates if _has(d)), None)
    return f"postgresql+{driver}://{rest}" if driver else f"postgresql://{rest}"


def _config(path, buffer):
    from alembic.config import Config

    if path.endswith(".toml"):
        return Config(toml_file=path, output_buffer=buffer)
    return Config(file_=path, output_buffer=buffer)


def run(req):
    from alembic import command

    buffer = io.StringIO()
    cfg = _config(req["config"], buffer)
    url = os.environ.get("SANDBOX_DATABASE_URL") if req.get("url_from_env") else req.get("url")
    if url:
        cfg.set_main_option("sqlalchemy.url", _driver_url(cfg, url).replace("%", "%%"))
    action = req["action"]
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


def main():
    try:
        req = json.loads(sys.argv[1])
        result = {"ok": True, **run(req)}
    except BaseException as exc:  # noqa: BLE001 - everything is reported to sandbox, which decides
        text = str(exc).strip() or type(exc).__name__
        result = {"ok": False, "error": f"{type(exc).__name__}: {text}", "type": type(exc).__name__}
    sys.stdout.flush()
    sys.stdout.write("\n" + MARK + " " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
