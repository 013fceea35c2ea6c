"""The gate's policy: which findings block (``[migrations] policy``, ``--allow-destructive``),
which other workspaces a destructive change affects, and what a branch touches besides its
migrations (files main trusts; paths a merge would write over sandbox's state or ignored files)."""

from __future__ import annotations

import os
from pathlib import Path

from ...databases.pgadmin import count_rows
from ...errors import MigrationError, SandboxError, WorkspaceError
from ...registry import WorkspaceRecord
from ..context import GateContext
from ..findings import Finding, Report, explain_destructive


def apply_policy(ctx: GateContext, rec: WorkspaceRecord | None, report: Report, allow: str | None) -> list[Finding]:
    """Judge the report's findings by the policy; returns those ``--allow-destructive`` let through."""
    policy = ctx.config.migrations.policy
    affected = _Affected(ctx, rec) if rec is not None else None
    out: list[Finding] = []
    allowed: list[Finding] = []
    for f in report.findings:
        if f.kind in ("destructive", "lock") and policy == "off":
            continue
        if f.kind == "destructive":
            if affected is not None and f.severity == "error":
                f = f.with_(affected_workspaces=affected.of(f))
            if policy == "warn" and f.severity == "error":
                f = f.with_(severity="warning")
            if allow and f.severity == "error":
                f = f.with_(severity="warning", suppressed=f"--allow-destructive: {allow}")
                allowed.append(f)
            f = explain_destructive(f, rec.name if rec is not None else None)
        out.append(f)
    report.findings = out
    return allowed


class _Affected:
    """Other workspaces whose code references an object, or whose database wrote data into it."""

    def __init__(self, ctx: GateContext, rec: WorkspaceRecord) -> None:
        self.ctx, self.rec = ctx, rec
        self._changed: dict[Path, set[str]] = {}

    def of(self, finding: Finding) -> tuple[str, ...]:
        if not finding.object:
            return ()
        ctx = self.ctx
        parts = finding.object.split(".")
        # a table is found by its name; a column by its name in a file that also names its table
        needles = parts[1:] if len(parts) >= 2 else parts
        migrations_dirs = self._migrations_dirs()
        hits: list[str] = []
        for other in ctx.registry.all():
            if other.name == self.rec.name or other.state not in ("ready", "stopped"):
                continue
            # Read from main's repository (the workspace's commits are collected into its branch):
            # never by running git inside a workspace's own repository.
            try:
                ctx.ws.collect(other)
            except SandboxError:
                pass
            ref = f"refs/heads/{other.branch}"
            if not ctx.git.branch_exists(other.branch):
                continue
            args = ["grep", "-I", "-l", "-w", "-F", "--all-match"]
            for needle in needles:
                args += ["-e", needle]
            args += [ref, "--", "."]
            args += [f":(exclude){d}" for d in migrations_dirs]
            res = ctx.run_git(*args, check=False)
            files = [ln.split(":", 1)[1] if ln.startswith(ref + ":") else ln for ln in res.stdout.splitlines() if ln]
            # main's own code using the object is main's business; count files that differ from main
            if any(fl in self._changed_files(other) for fl in files) or self._holds_more_rows(other, parts):
                hits.append(other.name)
        return tuple(hits)

    def _changed_files(self, other: WorkspaceRecord) -> set[str]:
        """Files a workspace's branch changed or added compared with main (once per command)."""
        key = Path(other.path)
        if key not in self._changed:
            main = self.ctx.git.main_branch()
            self._changed[key] = set(self.ctx.run_git("diff", "--name-only", f"{main}...refs/heads/{other.branch}",
                                                      check=False).stdout.split())
        return self._changed[key]

    def _migrations_dirs(self) -> list[str]:
        dirs = set()
        for rev in self.ctx.trees.main()[0].values():
            try:
                dirs.add(str(rev.path.parent.relative_to(self.ctx.root)))
            except ValueError:
                continue
        return sorted(dirs)

    def _holds_more_rows(self, other: WorkspaceRecord, parts: list[str]) -> bool:
        """Whether ``other``'s copy of table ``parts`` holds more rows than the baseline's.

        Counted as ``other``'s own login (:meth:`Strategy.info`), never as an admin, and by
        :func:`~sandbox.databases.pgadmin.count_rows`, which counts plain tables only (no view,
        rule or function of the workspace runs), read-only and under a statement timeout.
        """
        if len(parts) < 2:
            return False
        schema, table = parts[0], parts[1]
        try:
            info = self.ctx.db.info(other.name, other.data.get("network"))
        except SandboxError:
            return False
        use_schema = not info.options
        mine = count_rows(info, schema if use_schema else None, table)
        if mine is None:
            return False
        try:
            base = count_rows(self.ctx.db.baseline(), schema if use_schema else None, table)
        except SandboxError:
            base = None
        return mine > (base or 0)


def trusted_changes(ctx: GateContext, rec: WorkspaceRecord, sha: str | None = None) -> list[str]:
    """Files the branch (the judged commit ``sha``; else the branch's tip) changes that main trusts:
    sandbox's and alembic's config, env.py, seeds, the project's Dockerfile and devcontainer, git
    attributes and .worktreeinclude."""
    sha = sha or ctx.trees.branch_sha(rec, fresh=True)
    if not sha:
        return []
    cfg = ctx.config
    exact = {"sandbox.toml", cfg.migrations.config, ".worktreeinclude", *cfg.database.seed}
    if cfg.workspace.dockerfile:
        exact.add(cfg.workspace.dockerfile)
    try:
        tool = ctx.tool
        layout = tool.layout(ctx.root) if hasattr(tool, "layout") else None
        if layout is not None:
            exact.add(str((layout.script_location / "env.py").relative_to(ctx.root)))
    except (MigrationError, ValueError):
        pass
    changed = ctx.run_git("diff", "--name-only", "-z", "--no-renames",
                          f"{ctx.git.main_branch()}...{sha}", check=False).stdout.split("\0")
    return [f for f in changed if f in exact or f.startswith(".devcontainer/")
            or f.rsplit("/", 1)[-1] == ".gitattributes"]


def ignored_paths(ctx: GateContext, sha: str) -> list[Finding]:
    """Paths the branch adds or changes that a merge would write over sandbox's state or over an
    ignored file of main's checkout: git merge replaces an *ignored* file silently (no conflict).

    Refused: anything under ``.sandbox/`` (sandbox's state, other workspaces' checkouts), and any
    path (or a folder above it) that main's checkout has, untracked and ignored (``.env``,
    ``.git/info/exclude`` entries, ...), as git's own ignore rules in main say.
    """
    main = ctx.git.main_branch()
    diff = ctx.run_git("diff", "--name-only", "-z", "--no-renames", "--diff-filter=d", f"{main}...{sha}", check=False)
    if diff.returncode != 0:
        raise WorkspaceError(f"cannot compare {sha[:12]} with {main}: {diff.stderr.strip()}")
    paths = [p for p in diff.stdout.split("\0") if p]
    state = ctx.config.state_dir.name
    bad: dict[str, str] = {}
    candidates: set[str] = set()
    for rel in paths:
        parts = rel.split("/")
        if parts[0] == state:
            bad[rel] = f"it is under {state}/, sandbox's own state"
            continue
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if os.path.lexists(ctx.root / prefix):
                candidates.add(prefix)
    hits = _ignored_untracked(ctx, sorted(candidates)) if candidates else set()
    for rel in paths:
        parts = rel.split("/")
        over = next(("/".join(parts[:i]) for i in range(1, len(parts) + 1) if "/".join(parts[:i]) in hits), None)
        if over is not None and rel not in bad:
            bad[rel] = f"main's checkout has {over} as an ignored file, which a merge would overwrite"
    return [Finding(rule="ignored-path", kind="ordering", severity="error", object=rel,
                    message=f"the branch writes {rel}: {why}; remove it from the branch (git rm --cached)")
            for rel, why in sorted(bad.items())]


def _ignored_untracked(ctx: GateContext, listed: list[str]) -> set[str]:
    """Those of ``listed`` (paths main's checkout has) that git ignores there and does not track."""
    ignored = ctx.run_git("-c", "core.fsmonitor=false", "check-ignore", "--no-index", "--stdin", "-z",
                          check=False, input="\0".join(listed) + "\0")
    hits = {p for p in ignored.stdout.split("\0") if p}
    if hits:
        tracked = set(ctx.run_git("ls-files", "-z", "--", *sorted(hits), check=False).stdout.split("\0"))
        hits = {h for h in hits if h not in tracked}
    return hits
