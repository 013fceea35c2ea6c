"""``sandbox migrate …``: the migration gate's commands (status, check, lint, up, rebase) and
the rendering of its report, which ``merge`` and ``merge-request`` share."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .cli_base import JsonOpt, err, open_sandbox, out, print_json, run
from .errors import UsageError
from .migrations.findings import describe_evidence

migrate_app = typer.Typer(no_args_is_help=True, help="The migration coordinator: status, check, lint, rebase.")


def render_report(report: Any, json_: bool) -> None:
    data = report.to_json()
    if json_:
        print_json(data)
    else:
        head = f"workspace {data['workspace']}: " if data.get("workspace") else ""
        out.print(f"{head}{'ok' if data['ok'] else 'FAILED'}"
                  + (f" (base {data['base_head']}, revisions {', '.join(data['revisions']) or '-'})"
                     if data.get("workspace") else ""), markup=False)
        if data.get("judged"):
            out.print(f"  judged: commit {data['judged'][:12]} of branch {data.get('branch', '?')}", markup=False)
        for f in data["findings"]:
            where = f" [{f['revision']}]" if f.get("revision") else ""
            obj = f" {f['object']}" if f.get("object") else ""
            out.print(f"  {f['severity']}: {f['rule']} ({f['kind']}){where}{obj}: {f['message']}", markup=False)
            if f.get("affected_workspaces"):
                out.print(f"      affects workspaces: {', '.join(f['affected_workspaces'])}", markup=False)
            if f.get("suppressed"):
                out.print(f"      allowed: {f['suppressed']}", markup=False)
            if f.get("evidence"):
                out.print(f"      evidence: {describe_evidence(f['evidence'])}", markup=False)
        if data.get("merged"):
            out.print(f"merged into main at {str(data.get('commit', ''))[:12]}", markup=False)
        elif data.get("dry_run") and data["ok"]:
            out.print("dry run: the gate passes; nothing was merged", markup=False)
        if data.get("baseline_error"):
            err.print(f"warning: {data['baseline_error']}", markup=False)
        for note in data.get("notes", []):
            out.print(f"  note: {note}", markup=False)
    if not data["ok"]:
        raise typer.Exit(1)


@migrate_app.command("status")
def migrate_status(json_: JsonOpt = False) -> None:
    """Per workspace: its new revisions, main's head, how far behind it is, conflicts."""
    data = run(lambda: open_sandbox().migrate_status()).to_json()
    if json_:
        print_json(data)
        return
    out.print(f"main head: {data['main_head'] or '-'}" + (f" (HEADS: {', '.join(data['main_heads'])})"
                                                           if len(data["main_heads"]) > 1 else ""), markup=False)
    for w in data["workspaces"]:
        if w.get("error"):
            out.print(f"{w['name']}: cannot read its migrations: {w['error']}", markup=False)
            continue
        out.print(f"{w['name']}: {len(w['new'])} new ({', '.join(w['new']) or '-'}), behind {w['behind']}"
                  + (f"; {'; '.join(w['conflicts'])}" if w["conflicts"] else ""), markup=False)


@migrate_app.command("check")
def migrate_check(name: str, json_: JsonOpt = False) -> None:
    """Run the merge gate's checks without merging."""
    render_report(run(lambda: open_sandbox().migrate_check(name)), json_)


@migrate_app.command("lint")
def migrate_lint(
    file: Annotated[Optional[str], typer.Argument(help="A SQL file, or - for stdin (default).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Lint raw PostgreSQL migration SQL; needs no workspace.

    alembic --sql output of several revisions is linted revision by revision.
    """
    from .migrations.gate.static import lint_report
    from .migrations.lint import decode_sql
    def go() -> Any:
        if file in (None, "-"):
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
            source = "stdin"
        else:
            p = Path(file)
            if not p.is_file():
                raise UsageError(f"{file}: no such file")
            try:
                data, source = p.read_bytes(), file
            except OSError as exc:
                raise UsageError(f"{file}: cannot read: {exc}") from exc
        return lint_report(decode_sql(data, source))
    render_report(run(go), json_)


@migrate_app.command("up")
def migrate_up(
    name: str,
    to: Annotated[Optional[str], typer.Option("--to", metavar="REV", help="Stop at this revision "
                                              "(default: the workspace's heads).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Apply the workspace's own revisions to its own database, in the project's environment, verified."""
    res = run(lambda: open_sandbox().migrate_up(name, to))
    if json_:
        print_json(res.to_json())
    else:
        out.print(res.message, markup=False)


@migrate_app.command("rebase")
def migrate_rebase(name: str) -> None:
    """Move the workspace's new revisions onto main's current head and re-apply them to its database."""
    res = run(lambda: open_sandbox().migrate_rebase(name)).to_json()
    out.print(res.get("message", "rebased"), markup=False)
