"""The ``sandbox`` command line: parse → one ``Sandbox`` call → render → exit code.

Only :class:`~sandbox.errors.SandboxError` is caught; it becomes one line on
stderr and its exit code. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.table import Table

from .api import Sandbox
from .cli_base import (
    EnvFormat,
    JsonOpt,
    RuntimeKind,
    Strategy,
    err,
    fail,
    open_sandbox,
    out,
    print_json,
    render_event,
    run,
    state,
)
from .cli_db import db_app
from .cli_migrate import migrate_app, render_report
from .errors import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Parallel workspaces, each with its own worktree, container and PostgreSQL database, "
                       "and a migration gate before merge.")
app.add_typer(db_app, name="db")
app.add_typer(migrate_app, name="migrate")


@app.callback()
def _root(
    project: Annotated[Optional[Path], typer.Option("--project", help="The project's main checkout "
                                                    "(default: found from the current directory).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    state.project, state.debug, state.quiet = project, debug, quiet


@app.command()
def init(
    strategy: Annotated[Optional[Strategy], typer.Option(help="How workspace databases are cloned.")] = None,
    runtime: Annotated[Optional[RuntimeKind], typer.Option(help="Where workspace commands run.")] = None,
    migrations: Annotated[Optional[str], typer.Option(help="Path of alembic.ini in the repository.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Write sandbox.toml if absent, create .sandbox/ and build the baseline database."""
    def go() -> Any:
        from . import config as config_mod
        from .git import find_project_root
        start = (state.project or Path.cwd()).resolve()
        root = find_project_root(start)
        if root is None:
            raise UsageError(f"{start} is not inside a git checkout")
        if migrations is not None:
            config_mod._check_inside(root, "migrations", "config", migrations, "--migrations")
        if (root / config_mod.CONFIG_FILE).exists():
            sb = Sandbox(config_mod.load(root), events=render_event)
        else:
            sb = Sandbox(config_mod.parse(root, {}), events=render_event)
        return sb.init(strategy=strategy.value if strategy else None,
                       runtime=runtime.value if runtime else None, migrations=migrations).to_json()
    res = run(go)
    if json_:
        print_json(res)
    else:
        verified = " (verified in its alembic_version)" if res.get("baseline_verified") and res["baseline_head"] else ""
        found = res.get("migrations")
        if found:
            out.print(f"migrations: {found['config']} ({found['layout']} layout): script location "
                      f"{found['script_location']}, version locations {', '.join(found['version_locations'])}, "
                      f"{found['revisions']} revision(s), head(s) {', '.join(found['heads']) or '-'}; "
                      f"interpreter {found['interpreter']}", markup=False)
        out.print(f"initialised: strategy {res['strategy']}, baseline at "
                  f"{res['baseline_head'] or '(no migrations)'}{verified}; config {res['config']}")


@app.command()
def up(
    names: Annotated[list[str], typer.Argument(help="Workspace names.")],
    from_: Annotated[Optional[str], typer.Option("--from", help="Branch from this ref (default: main's tip).")] = None,
    no_container: Annotated[bool, typer.Option("--no-container", help="Worktree and database only.")] = False,
    brief: Annotated[Optional[str], typer.Option("--brief", metavar="TEXT|@FILE",
                                                 help="The workspace's goal and context (kept in the registry).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Create workspaces, or start them again if they exist. Several names are created concurrently."""
    text = run(lambda: _text_arg(brief, "--brief")) if brief is not None else None
    results = run(lambda: open_sandbox().up(names, from_ref=from_, container=not no_container, brief=text))
    if json_:
        print_json([r.to_json() for r in results])
    else:
        for r in results:
            if r.ok:
                out.print(f"{r.name}: {r.state}{' (created)' if r.created else ''}")
            else:
                err.print(f"error: {r.name}: {r.error}", markup=False)
    failed = [r for r in results if not r.ok]
    if failed:
        raise typer.Exit(max(r.exit_code for r in failed))


def _text_arg(value: str, what: str) -> str:
    """TEXT as given, or the contents of FILE for ``@FILE``."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {value}: cannot read {path}: {exc}") from exc


@app.command()
def brief(
    name: str,
    text: Annotated[Optional[str], typer.Argument(metavar="[TEXT|@FILE]",
                                                  help="The new brief (\"\" clears it); none: print it.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Show or set a workspace's brief: its goal and context, the first thing its agent reads."""
    def go() -> str | None:
        sb = open_sandbox()
        if text is not None:
            sb.set_brief([name], _text_arg(text, "brief"))
        return sb.brief(name)
    current = run(go)
    if json_:
        print_json({"name": name, "brief": current})
    elif text is None:
        out.print(current if current is not None else f"{name}: no brief", markup=False)
    else:
        out.print(f"{name}: brief {'set' if current else 'cleared'}", markup=False)


@app.command("merge-request")
def merge_request(
    name: str,
    note: Annotated[Optional[str], typer.Option("--note", help="What the person merging should know.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Run the gate and record a request for a person to merge the workspace. Never moves main."""
    res = run(lambda: open_sandbox().merge_request(name, note))
    if json_:
        print_json(res.to_json())
    else:
        req = res.request
        out.print(f"{name}: merge request #{req.id} recorded for commit {req.commit[:12]} "
                  f"(gate {'passed' if req.ok else 'FAILED'})", markup=False)
        for f in res.report.findings:
            out.print(f"  {f.severity}: {f.rule} ({f.kind}): {f.message}", markup=False)
        out.print(f"a person merges it with: {req.command}", markup=False)
    if not res.ok:
        raise typer.Exit(1)


def _render_requests(json_: bool) -> None:
    reqs = run(lambda: open_sandbox().merge_requests())
    if json_:
        print_json([r.to_json() for r in reqs])
        return
    if not reqs:
        out.print("no open merge requests", markup=False)
        return
    table = Table("#", "workspace", "commit", "gate", "stale", "at", "note")
    for r in reqs:
        table.add_row(str(r.id), r.workspace, r.commit[:12], "ok" if r.ok else "FAILED",
                      "stale: branch moved" if r.stale else "", r.at, r.note or "")
    out.print(table)


@app.command("ls")
def ls_(json_: JsonOpt = False) -> None:
    """Every workspace and its state."""
    rows = [r.to_json() for r in run(lambda: open_sandbox().ls())]
    if json_:
        print_json(rows)
        return
    if not rows:
        out.print("no workspaces (create one with `sandbox up NAME`)")
        return
    stacks = any(r.get("compose") for r in rows)
    table = Table("name", "state", "branch", "container", "database", "migrations", "ports",
                  *(["services"] if stacks else []))
    for r in rows:
        m = r["migrations"]
        mig = f"{len(m['new'])} new" + (f", {m['behind']} behind" if m["behind"] else "")
        cause = f" ({r['cause'][:60]}…)" if r.get("cause") and len(r["cause"]) > 60 else \
            (f" ({r['cause']})" if r.get("cause") else "")
        git = r.get("git") or {}
        branch = r["branch"] + (f" ({git['behind_main']} behind main: sync)" if git.get("behind_main") else "")
        table.add_row(r["name"], r["state"] + cause, branch,
                      r["container"]["status"], r["database"]["strategy"] or "-", mig,
                      f"{r['ports'][0]}-{r['ports'][1]}" if r["ports"] else "-",
                      *([" ".join(f"{p['service']}:{p['target']}={p['host_port']}"
                                  for p in (r.get("compose") or {}).get("ports", [])) or "-"] if stacks else []))
    out.print(table)
    for r in rows:          # the reasons the table cut short, in full
        if r.get("cause") and len(r["cause"]) > 60:
            out.print(f"{r['name']}: {r['cause']}", markup=False, soft_wrap=True)
    problem = rows[0].get("health", {}).get("baseline_problem")
    if problem:
        err.print(f"warning: {problem}", markup=False)


@app.command()
def env(
    name: str,
    format: Annotated[EnvFormat, typer.Option("--format", help="Output format.")] = EnvFormat.dotenv,
) -> None:
    """The workspace's environment as seen from the host."""
    from .envfile import render
    data = run(lambda: open_sandbox().env(name))
    if format is EnvFormat.json:
        print_json(data)
    else:
        sys.stdout.write(render(data, format.value))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec(name: str, cmd: Annotated[list[str], typer.Argument(help="The command, after --.")]) -> None:
    """Run CMD inside the workspace (its container, or the worktree) and return CMD's exit code."""
    code = run(lambda: open_sandbox().exec(name, cmd))
    raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def compose(name: str, args: Annotated[list[str], typer.Argument(help="compose's arguments, after --.")]) -> None:
    """docker compose for the workspace's own stack ([compose] in sandbox.toml): ps, logs, exec…"""
    raise typer.Exit(run(lambda: open_sandbox().compose(name, args)))


@app.command(name="git", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def git_(name: str, args: Annotated[list[str], typer.Argument(help="git's arguments, after --.")]) -> None:
    """Run git inside the workspace (its container: the checkout's files are its user's), e.g. to
    commit from the host without weakening git's ownership check."""
    code = run(lambda: open_sandbox().git_command(name, args))
    raise typer.Exit(code)


@app.command()
def shell(name: str) -> None:
    """An interactive shell in the workspace."""
    raise typer.Exit(run(lambda: open_sandbox().shell(name)))


@app.command()
def stop(name: str) -> None:
    """Stop the workspace's containers and keep everything."""
    run(lambda: open_sandbox().stop(name))
    out.print(f"{name}: stopped")


@app.command()
def rm(
    name: str,
    force: Annotated[bool, typer.Option("--force", help="Remove even with uncommitted or unmerged work.")] = False,
    delete_branch: Annotated[bool, typer.Option("--delete-branch", help="Also delete the branch.")] = False,
) -> None:
    """Remove the workspace's container, database and worktree (refuses to lose work unless --force)."""
    res = run(lambda: open_sandbox().rm(name, force=force, delete_branch=delete_branch)).to_json()
    out.print(f"{name}: removed" + (" (branch deleted)" if res["branch_deleted"] else " (branch kept)"))


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be repaired.")] = False,
    trust_registry: Annotated[bool, typer.Option(
        "--trust-registry", help="After `doctor --repair` restored the registry: remove what it does not "
                                 "know again (until then such things are kept and reported).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Remove what the registry does not know, and repair what a crash left half-done."""
    actions = run(lambda: open_sandbox().gc(dry_run=dry_run, trust_registry=trust_registry))
    if json_:
        print_json([a.to_json() for a in actions])
        return
    if not actions:
        out.print("nothing to collect")
    for a in actions:
        verb = a.action if dry_run or a.done else f"{a.action} (failed)"
        out.print(f"{'would ' if dry_run else ''}{verb} {a.kind} {a.id}"
                  + (f" [{a.workspace}]" if a.workspace else "") + (f": {a.detail}" if a.detail else ""), markup=False)


storage_app = typer.Typer(no_args_is_help=True, help="Copy-on-write storage for snapshot clones.")
app.add_typer(storage_app, name="storage")


@storage_app.command("init")
def storage_init(
    size: Annotated[Optional[str], typer.Option("--size", help="Size of the pool image, e.g. 20G.")] = None,
) -> None:
    """Make a loop-mounted btrfs pool for snapshot clones when .sandbox is not on copy-on-write storage (root)."""
    res = run(lambda: open_sandbox().storage_init(size)).to_json()
    verb = "created" if res["created"] else "already on copy-on-write storage"
    out.print(f"{res['pool']}: {verb} ({res['kind']})", markup=False)


@storage_app.command("grow")
def storage_grow(
    size: Annotated[str, typer.Argument(help="The pool's new size, e.g. 40G, or +10G to add 10G.")],
) -> None:
    """Grow the loop-mounted copy-on-write pool (image file, loop device, btrfs; needs root)."""
    res = run(lambda: open_sandbox().storage_grow(size)).to_json()
    out.print(f"{res['pool']}: grown from {res['old_size'] // 1024 ** 2}M to {res['new_size'] // 1024 ** 2}M",
              markup=False)


@app.command()
def deinit(
    force: Annotated[bool, typer.Option("--force", help="Also remove workspaces holding uncommitted or unmerged work.")] = False,
    keep_images: Annotated[bool, typer.Option("--keep-images", help="Keep the project images sandbox built.")] = False,
) -> None:
    """Remove every workspace, the baseline, servers, storage pool, .sandbox/ and the project images
    sandbox built (sandbox.toml and branches stay)."""
    res = run(lambda: open_sandbox().deinit(force=force, keep_images=keep_images)).to_json()
    images = res.get("removed_images") or []
    out.print(f"removed {len(res['removed_workspaces'])} workspace(s) and all of sandbox's state"
              + (f", and {len(images)} project image tag(s)" if images else ""))


@app.command()
def doctor(
    repair: Annotated[bool, typer.Option("--repair", help="Restore a damaged registry from its backup "
                                         "(the damaged file is kept beside it).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Check Docker, Postgres, copy-on-write storage, git and config, and say what to do about each."""
    from .doctor import run_checks_standalone
    checks = run(lambda: run_checks_standalone(lambda: Sandbox.open(state.project, events=render_event),
                                                repair=repair))
    if json_:
        print_json({"ok": all(c.ok for c in checks if c.required), "checks": [c.to_json() for c in checks]})
    else:
        for c in checks:
            mark = "[green]ok[/green]" if c.ok else ("[red]FAIL[/red]" if c.required else "[yellow]warn[/yellow]")
            out.print(f"{mark} {c.name}: {c.detail}", markup=True)
            if not c.ok and c.fix:
                out.print(f"     fix: {c.fix}", markup=False)
    if not all(c.ok for c in checks if c.required):
        raise typer.Exit(1)


# -- db -----------------------------------------------------------------------------------------
@app.command()
def merge(
    name: Annotated[Optional[str], typer.Argument(help="The workspace to merge.")] = None,
    requests: Annotated[bool, typer.Option("--requests", help="List the open merge requests instead.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Everything except the merge.")] = False,
    allow_destructive: Annotated[Optional[str], typer.Option("--allow-destructive", metavar="REASON",
                                 help="Let destructive findings through; the reason is recorded.")] = None,
    json_: JsonOpt = False,
) -> None:
    """The gate, then the merge into main, then the baseline is brought forward. Merges are serialised.

    With --requests: the open merge requests (stale once the branch moved since the request)."""
    if requests:
        if name is not None:
            fail(UsageError("--requests lists every open request; it takes no NAME"))
        _render_requests(json_)
        return
    if name is None:
        fail(UsageError("merge needs a NAME (or --requests)"))
    if allow_destructive is not None and not allow_destructive.strip():
        fail(UsageError("--allow-destructive needs a reason"))
    render_report(run(lambda: open_sandbox().merge(name, dry_run=dry_run, allow_destructive=allow_destructive)),
                   json_)


@app.command()
def sync(name: str) -> None:
    """Bring main's new commits and migrations into the workspace and its database."""
    res = run(lambda: open_sandbox().sync(name)).to_json()
    out.print(res.get("message", "synced"), markup=False)


@app.command()
def overview(
    json_: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", help="Redraw when a ref, index, file or the registry changes.")] = False,
) -> None:
    """Every workspace against main and every pair against each other: textual conflicts (committed
    and uncommitted) and schema collisions, with a risk and a sentence each."""
    if json_:
        print_json(run(lambda: open_sandbox().overview()).to_json())
        return
    sb = run(open_sandbox)
    if watch:
        from .overview.watch import watch_terminal
        run(lambda: watch_terminal(out, sb.overview, sb.watched_paths))
        return
    from .overview.render import render
    out.print(render(run(sb.overview)))


@app.command()
def dashboard(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).")] = 8765,
) -> None:
    """The overview as a live, read-only web page on 127.0.0.1, behind a token printed at start."""
    from .overview.dashboard import serve
    if not 0 <= port <= 65535:
        fail(UsageError(f"--port {port}: not a port number"))
    sb = run(open_sandbox)
    run(lambda: serve(sb, port=port, announce=lambda line: out.print(line, markup=False)))


@app.command()
def mcp(
    workspace: Annotated[Optional[str], typer.Option("--workspace", help="The workspace the server is bound "
                                                     "to (default: the one owning the current directory).")] = None,
    lead: Annotated[bool, typer.Option("--lead", help="Serve every workspace (tools take a name).")] = False,
) -> None:
    """An MCP server over stdio for AI agents (needs the `mcp` extra: pip install 'sandbox[mcp]')."""
    from .agents.stdio import claim_stdio
    wire = claim_stdio()         # fd 1 goes to stderr before anything runs; protocol goes to a dup
    if workspace is not None and lead:
        fail(UsageError("--workspace and --lead exclude each other"))
    try:
        from .agents.mcp import serve
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("mcp", "mcp_types", "pydantic", "anyio"):
            raise
        fail(UsageError(f"the MCP SDK is not installed ({exc.name or exc}): pip install 'sandbox[mcp]'"))
    run(lambda: serve(state.project, workspace=workspace, lead=lead, wire=wire))


def _leave(code: int) -> NoReturn:
    """Flush and exit without the interpreter's teardown, which spends ~0.1 s freeing modules.

    By now every file, SQLite transaction and child process is finished; what is left is memory
    and daemon threads (background imports), which the kernel reclaims.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main() -> None:
    """Console-script entry point: usage errors become one line and exit 2.

    Click's exceptions are recognised by shape (``format_message``, ``exit_code``):
    Typer vendors Click in some versions and not in others.
    """
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is one of Click's
        kind = type(exc).__name__
        if kind == "Abort":
            err.print("aborted", markup=False)
            sys.exit(130)
        if not hasattr(exc, "format_message"):
            raise
        if kind == "NoArgsIsHelpError":
            err.print(exc.format_message(), markup=False)
            _leave(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err.print(f"error: {exc.format_message()}{where}", markup=False)
        _leave(int(getattr(exc, "exit_code", 1)))
    _leave(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
