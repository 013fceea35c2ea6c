"""``sandbox doctor``: what works, what does not, and what to do about it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .checks import Check
from .errors import RegistryDamaged, SandboxError, ServiceUnavailable, UsageError
from .git import version as git_version

if TYPE_CHECKING:
    from .core import Project as Sandbox


def _git_check() -> Check:
    ver = git_version()
    if ver is None:
        return Check("git", False, "git is not installed", "apt-get install git")
    return Check("git", True, ver)


def _registry_check(sb: Sandbox, repair: bool) -> tuple[Check | None, bool]:
    """The registry's health (restored from its backup first with ``repair``); (check, usable)."""
    from .registry import repair as repair_registry
    state = sb.config.state_dir
    if not (state / "registry.db").exists() and not (state / "registry.backup.db").exists():
        return None, False
    try:
        if repair:
            done = repair_registry(state)
            if done["repaired"]:
                sb._registry = None
                reg = sb.registry
                return Check("registry", True, f"repaired: {done['detail']}; `sandbox gc --dry-run` shows "
                                               "what it does not know"), True
        reg = sb.registry
    except RegistryDamaged as exc:
        return Check("registry", False, f"{exc.message}",
                     "sandbox doctor --repair" if exc.backup else
                     "no usable backup: move .sandbox/registry.db aside and run `sandbox init`"), False
    except (ServiceUnavailable, UsageError) as exc:
        return Check("registry", False, str(exc), "retry when the other sandbox command has finished"), False
    detail = f"{reg.path}: sound (generation {reg.generation}, backup {reg.backup_path.name})"
    if reg.restored:
        return Check("registry", False, f"{detail}; restored from its backup at {reg.restored}",
                     "check `sandbox gc --dry-run`, then `sandbox gc --trust-registry`", required=False), True
    return Check("registry", True, detail), True


def run_checks(sb: Sandbox, *, repair: bool = False) -> list[Check]:
    checks = [_git_check(), Check("config", True, f"{sb.config.config_file} is valid"
                                  if sb.config.config_file and sb.config.config_file.exists()
                                  else "no sandbox.toml: defaults (run `sandbox init`)")]
    registry, usable = _registry_check(sb, repair)
    if registry is not None:
        checks.append(registry)
    try:
        checks += sb.runtime_for("docker").doctor()
    except SandboxError as exc:
        required = sb.config.workspace.runtime == "docker"
        checks.append(Check("docker", False, str(exc), "scripts/install-docker", required=required))
    checks.append(_isolation_check(sb))
    try:
        from .databases.factory import doctor_checks
        checks += doctor_checks(sb.config)
    except SandboxError as exc:
        checks.append(Check("postgres", False, str(exc), "see `sandbox doctor` docs in README"))
    from .migrations.discover import migrations_checks
    checks += migrations_checks(sb.tool, sb.root)
    if registry is None:
        checks.append(Check("state", False, "not initialised", "run `sandbox init`", required=False))
    elif usable:
        try:
            checks.append(Check("strategy", True, f"{sb.db.name} (server {sb.registry.get_meta('db.server')})"))
            checks += sb.db.doctor()
            checks.append(_baseline_probe(sb))
        except SandboxError as exc:
            checks.append(Check("database", False, str(exc), "see the message; `sandbox db baseline --refresh`"))
        checks += _state_checks(sb)
    return checks


def _state_checks(sb: Sandbox) -> list[Check]:
    """Unfinished operations, the baseline against main's head, and each workspace's health."""
    from .health import baseline_state, check_all
    from .intents import Recovery, pending
    checks: list[Check] = []
    try:
        left = pending(sb.registry)
        if left:
            checks.append(Check("operations", False, f"{len(left)} interrupted: " + "; ".join(
                Recovery(it, "", it.cause or f"process {it.pid} is gone").describe() for it in left[:5]),
                "the next command on each workspace finishes or undoes it; `sandbox gc` does all at once"))
        problem = baseline_state(sb).problem()
        if problem:
            checks.append(Check("baseline head", False, problem, "`sandbox gc`, or `sandbox db baseline --refresh`"))
        recs = sb.registry.all()
        rows = []
        for rec in recs:
            try:
                status = sb.runtime_for(rec.runtime).status(sb.config.project_id, rec.name) \
                    if rec.runtime != "none" else "none"
            except SandboxError:
                status = "unknown"
            rows.append((rec, status))
        healthy = 0
        for (rec, _), health in zip(rows, check_all(sb, rows)):
            if health.ok:
                healthy += 1
            else:
                checks.append(Check(f"workspace {rec.name}", False, "; ".join(health.problems),
                                    f"`sandbox up {rec.name}`; if its database stays broken, "
                                    f"`sandbox db reset {rec.name}`"))
        if recs:
            checks.append(Check("workspaces", healthy == len(recs),
                                f"{healthy} of {len(recs)} healthy (database answers, container runs, "
                                "nothing left half-done)"))
    except SandboxError as exc:
        checks.append(Check("workspaces", False, f"cannot check: {exc}", "see the message"))
    return checks


def _isolation_check(sb: Sandbox) -> Check:
    """Whether the untrusted-workspace rule can hold (it cannot without containers)."""
    if sb.config.workspace.runtime == "none":
        return Check("isolation", True, "runtime \"none\": workspace code runs as you, on the host "
                     "(migrations, hooks and tests of every workspace run with your rights)",
                     "use runtime = \"docker\" when agents or anyone untrusted work in the workspaces",
                     required=False)
    return Check("isolation", True, "runtime \"docker\": workspace code runs in containers, never on the host")


def _baseline_probe(sb: Sandbox) -> Check:
    """The verification ``init`` makes: the baseline's version table is at main's head."""
    if not sb.tool.available(sb.root):
        return Check("baseline migrations", True, "no migrations to verify", required=False)
    try:
        heads = sb.tool.heads(sb.root)
        found = sb.tool.current(sb.db.baseline())
    except SandboxError as exc:
        return Check("baseline migrations", False, f"cannot read the baseline's version table: {exc}",
                     "`sandbox db baseline --refresh`")
    if sorted(found) == sorted(heads):
        return Check("baseline migrations", True, f"the baseline's {sb.config.migrations.version_table} "
                     f"is at main's head ({', '.join(heads) or 'none'})")
    from .migrations.alembic import misdirected_hint
    return Check("baseline migrations", False,
                 f"the baseline is at {', '.join(found) or 'nothing'}, main's head is {', '.join(heads) or 'none'}: "
                 "the migrations did not reach the baseline database, or it is behind main",
                 f"`sandbox db baseline --refresh`; if that fails the same way, {misdirected_hint('')}")


def run_checks_standalone(open_project: Callable[[], "Sandbox"], *, repair: bool = False) -> list[Check]:
    """Doctor works outside a project too: then only git and the engines are checked."""
    try:
        sb = open_project()
    except SandboxError as exc:
        checks = [_git_check(), Check("project", False, str(exc), "run inside a git checkout, then `sandbox init`")]
        try:
            from .runtime.docker import DockerRuntime
            checks += DockerRuntime().doctor()
        except SandboxError as exc2:
            checks.append(Check("docker", False, str(exc2), "scripts/install-docker"))
        return checks
    return run_checks(sb, repair=repair)
