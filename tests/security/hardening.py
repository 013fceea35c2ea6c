"""What a hardened container looks like through the Docker API (issue #9, "Containers")."""

from __future__ import annotations

from typing import Any

# Postgres's entrypoint may need these to hand its data directory to the postgres user; none of
# them opens a way out of the container.
POSTGRES_CAPS = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID", "KILL"}
ROOT_USERS = {"", "0", "root"}


def _is_root(user: str) -> bool:
    return user.split(":", 1)[0] in ROOT_USERS


def hardening_problems(container: Any, role: str) -> list[str]:
    """What is missing from ``container``'s hardening (empty when nothing is); ``role`` is its
    ``dev.sandbox.role`` label, ``database`` or ``workspace``."""
    container.reload()
    attrs, host = container.attrs, container.attrs["HostConfig"]
    name = container.name
    out = []
    user = attrs["Config"].get("User") or ""
    if _is_root(user):
        out.append(f"{name}: runs as root (User={user!r})")
    else:
        try:   # the user the processes really run as (the image's entrypoint could switch back)
            top = container.top(ps_args="-o pid,uid,comm")
            col = [t.upper() for t in top["Titles"]].index("UID")
            uids = {row[col] for row in top.get("Processes") or []}
            if "0" in uids:
                out.append(f"{name}: a process runs as uid 0: {top.get('Processes')}")
        except Exception:  # noqa: BLE001 - `top` is a best-effort second look
            pass
    if "ALL" not in [c.upper() for c in (host.get("CapDrop") or [])]:
        out.append(f"{name}: CapDrop={host.get('CapDrop')}, expected ALL")
    added = {c.upper().removeprefix("CAP_") for c in (host.get("CapAdd") or [])}
    allowed = POSTGRES_CAPS if role == "database" else set()
    if added - allowed:
        out.append(f"{name}: capabilities added back: {sorted(added - allowed)}")
    if host.get("Privileged"):
        out.append(f"{name}: privileged")
    if not any(o.replace("=", ":").split(":")[0] == "no-new-privileges" and not o.endswith(("false", "False"))
               for o in host.get("SecurityOpt") or []):
        out.append(f"{name}: SecurityOpt={host.get('SecurityOpt')}, expected no-new-privileges")
    if not host.get("Memory"):
        out.append(f"{name}: no memory limit")
    if not host.get("PidsLimit") or host["PidsLimit"] < 0:
        out.append(f"{name}: no pids limit (PidsLimit={host.get('PidsLimit')})")
    networks = set((attrs["NetworkSettings"].get("Networks") or {}).keys())
    if "bridge" in networks or host.get("NetworkMode") in ("bridge", "default"):
        out.append(f"{name}: on Docker's default bridge network (networks {sorted(networks)})")
    for m in attrs.get("Mounts") or []:
        if "docker.sock" in (m.get("Source") or ""):
            out.append(f"{name}: the Docker socket is mounted")
    return out
