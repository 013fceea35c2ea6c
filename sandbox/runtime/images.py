"""The project's image: the environment its code runs in, under the Docker runtime.

Chosen, in order:

1. ``[workspace] dockerfile`` (with ``context``): built by sandbox, tagged
   ``sandbox-project/<project id>:<hash of its inputs>``, so it is rebuilt only when the
   Dockerfile, the files in its context or the build arguments change;
2. ``.devcontainer/devcontainer.json`` on main, when present: its ``image``, or its
   ``build.dockerfile`` / ``build.context`` built as above;
3. ``[workspace] image`` (default ``sandbox/workspace:bookworm``: Python with alembic,
   SQLAlchemy and psycopg, so a plain alembic project needs no Dockerfile).

Only main's checkout (trusted) names the image: a workspace cannot change what its own code
runs in. Behind a TLS-intercepting proxy, ``SANDBOX_CA_BUNDLE`` names a PEM file whose
certificates reach the build as the build argument ``SANDBOX_CA_CERT`` (a Dockerfile that wants
them declares ``ARG SANDBOX_CA_CERT``); images built ``FROM sandbox/workspace:bookworm`` trust
them already (scripts/build-images installs them).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from ..errors import ConfigError, ServiceUnavailable, WorkspaceError
from ..host import file_lock
from .labels import LABEL_PROJECT

_SKIP_DIRS = {".git", ".sandbox", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache"}


def _strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (devcontainer.json) → JSON."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2)
            i = n if i < 0 else i + 2
        else:
            out.append(c)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


_NEVER_SENT = [".sandbox", ".sandbox/**", ".git", ".git/**"]


def _dockerignore_raw(context: Path) -> list[str]:
    """The context's .dockerignore lines, as docker reads them."""
    f = context / ".dockerignore"
    if not f.is_file():
        return []
    return [ln.strip() for ln in f.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("#")]


def _dockerignore(context: Path) -> list[str]:
    """Its exclusions as plain patterns, for the inputs hash (negations are not followed)."""
    return [ln.rstrip("/") for ln in _dockerignore_raw(context) if not ln.startswith("!")]


def inputs_hash(dockerfile: Path, context: Path, buildargs: dict[str, str]) -> str:
    """A hash of what the build reads: the Dockerfile, the context's files, the build args."""
    h = hashlib.sha256()
    h.update(dockerfile.read_bytes())
    h.update(json.dumps(buildargs, sort_keys=True).encode())
    ignore = _dockerignore(context)
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = os.path.relpath(dirpath, context)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS
                             and not any(fnmatch.fnmatch(os.path.normpath(os.path.join(rel_dir, d)), p)
                                         for p in ignore))
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if any(fnmatch.fnmatch(rel, p) for p in ignore):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            h.update(rel.encode() + b"\0")
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


class ProjectImage:
    """Resolves (and builds, once) the image the project's code runs in."""

    def __init__(self, config: Config, *, progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.progress = progress or (lambda msg: None)
        self._tag: str | None = None
        self._lock = threading.Lock()

    def source(self) -> tuple[str, Path | None, Path | None]:
        """(what, dockerfile, context): ``what`` is an image tag when nothing is built."""
        root = self.config.root
        ws = self.config.workspace
        if ws.dockerfile:
            dockerfile = root / ws.dockerfile
            context = root / ws.context if ws.context else dockerfile.parent
            return "dockerfile", dockerfile, context
        if explicit_image(self.config):
            return ws.image, None, None        # an explicit key in sandbox.toml wins over .devcontainer/
        dc = root / ".devcontainer" / "devcontainer.json"
        if dc.is_file() and not os.environ.get("SANDBOX_WORKSPACE_IMAGE"):
            try:
                data = json.loads(_strip_jsonc(dc.read_text()))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{dc.relative_to(root)}: not valid JSON: {exc}", file=str(dc)) from exc
            build = data.get("build") or {}
            if isinstance(build, dict) and build.get("dockerfile"):
                dockerfile = (dc.parent / str(build["dockerfile"])).resolve()
                context = (dc.parent / str(build.get("context") or ".")).resolve()
                for p in (dockerfile, context):
                    if not p.is_relative_to(root.resolve()):
                        raise ConfigError(f"{dc.relative_to(root)}: {p} is outside the repository", file=str(dc))
                return "dockerfile", dockerfile, context
            if isinstance(data.get("image"), str) and data["image"]:
                return str(data["image"]), None, None
        return ws.image, None, None

    def tag(self) -> str:
        """The image's tag, built first if it comes from a Dockerfile that changed."""
        with self._lock:
            if self._tag is None:
                self._tag = self._resolve()
            return self._tag

    def _buildargs(self) -> dict[str, str]:
        bundle = os.environ.get("SANDBOX_CA_BUNDLE")
        if not bundle:
            return {}
        try:
            return {"SANDBOX_CA_CERT": Path(bundle).read_text()}
        except OSError as exc:
            raise ConfigError(f"SANDBOX_CA_BUNDLE={bundle}: cannot read it ({exc.strerror})") from exc

    def _resolve(self) -> str:
        what, dockerfile, context = self.source()
        if dockerfile is None or context is None:
            return what
        if not dockerfile.is_file():
            raise ConfigError(f"sandbox.toml: [workspace] dockerfile: {dockerfile} does not exist",
                              key="workspace.dockerfile")
        if not context.is_dir():
            raise ConfigError(f"sandbox.toml: [workspace] context: {context} is not a folder", key="workspace.context")
        refuse_heredocs(dockerfile)
        buildargs = self._buildargs()
        tag = f"sandbox-project/{self.config.project_id}:{inputs_hash(dockerfile, context, buildargs)}"
        from .docker import shared_client
        from .errors import BUILD_HINT, translated
        import docker.errors

        client = shared_client()

        def built() -> bool:
            with translated("looking up the project's image"):
                try:
                    client.images.get(tag)
                    return True
                except docker.errors.ImageNotFound:
                    return False

        if built():
            return tag
        self.config.state_dir.mkdir(exist_ok=True)
        # one build at a time; a waiter finds it built
        with file_lock(self.config.state_dir / "image-build.lock", mode=0o644):
            if built():
                return tag
            rel = os.path.relpath(dockerfile, context)
            self.progress(f"building the project's image from {dockerfile.relative_to(self.config.root)} "
                          "(once per change of its inputs)")
            log: list[str] = []
            try:
                # The context as docker would send it, minus sandbox's own state (a live pool of
                # clusters, secrets, other workspaces) and git's: neither belongs in an image.
                from docker.utils import build as docker_build
                exclude = [*_dockerignore_raw(context), *_NEVER_SENT]
                context_tar: Any = docker_build.tar(context, exclude=exclude, dockerfile=(rel, None))
                stream = client.api.build(fileobj=context_tar, custom_context=True, dockerfile=rel, tag=tag,
                                          rm=True, forcerm=True, buildargs=buildargs or None, decode=True,
                                          labels={LABEL_PROJECT: self.config.project_id})
                for chunk in stream:
                    if "stream" in chunk:
                        for line in str(chunk["stream"]).splitlines():
                            if line.strip():
                                log.append(line)
                    if "error" in chunk:
                        tail = " | ".join(log[-3:])
                        raise WorkspaceError(f"building the project's image failed: {chunk['error'].strip()}",
                                             hint=tail or None)
            except docker.errors.APIError as exc:
                # Docker's own message; "run scripts/build-images" only when a sandbox/ base is missing
                raise WorkspaceError(f"building the project's image failed: {exc.explanation or exc}",
                                     hint=BUILD_HINT if _missing_sandbox_base(client, dockerfile) else None) from exc
            except docker.errors.DockerException as exc:
                raise ServiceUnavailable(f"Docker engine not reachable: {exc}", hint=BUILD_HINT) from exc
            log_file = self.config.state_dir / "logs" / "image-build.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text("\n".join(log) + "\n")
            return tag


def explicit_image(config: Config) -> bool:
    """Whether sandbox.toml sets ``[workspace] image`` itself (then it wins over .devcontainer/)."""
    import tomllib
    path = config.config_file
    if path is None or not Path(path).is_file():
        return False
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    workspace = data.get("workspace")
    return isinstance(workspace, dict) and "image" in workspace


_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", re.IGNORECASE | re.MULTILINE)
_HEREDOC = re.compile(r"^\s*(?:RUN|COPY|ADD)\b[^\n]*?<<-?[\"']?([A-Za-z_]\w*)", re.IGNORECASE)


def _missing_sandbox_base(client: Any, dockerfile: Path) -> bool:
    try:
        bases = _FROM.findall(dockerfile.read_text(errors="replace"))
    except OSError:
        return False
    for base in bases:
        if base.startswith("sandbox/"):
            try:
                client.images.get(base)
            except Exception:  # noqa: BLE001 - any failure to find it: the hint applies
                return True
    return False


def refuse_heredocs(dockerfile: Path) -> None:
    """The Docker SDK builds with the legacy builder, which has no heredocs (``RUN <<EOF``): say so
    clearly instead of Docker's "unknown instruction"."""
    try:
        text = dockerfile.read_text(errors="replace")
    except OSError:
        return
    lines = text.splitlines()
    line = None
    for n, text_line in enumerate(lines, 1):
        m = _HEREDOC.match(text_line)
        # a heredoc only if its delimiter closes it on a later line of its own
        if m is not None and any(later.strip() == m.group(1) for later in lines[n:]):
            line = n
            break
    if line is not None:
        raise WorkspaceError(f"{dockerfile.name}:{line}: a heredoc (`<<EOF`) needs BuildKit, and sandbox builds with "
                             "the Docker engine's legacy builder, which does not support it",
                             hint="write the step as one RUN with && (or COPY a script), or build the image yourself "
                             "(docker buildx build -t NAME …) and set [workspace] image = \"NAME\"")


def remove_project_images(project_id: str) -> list[str]:
    """Remove the images sandbox built for the project (label ``dev.sandbox.project``); their tags."""
    from .docker import shared_client
    from .errors import translated
    import docker.errors
    removed: list[str] = []
    with translated("removing the project's images"):
        client = shared_client()
        for image in client.images.list(filters={"label": f"{LABEL_PROJECT}={project_id}"}):
            tags = list(image.tags) or [str(image.id)]
            try:
                client.images.remove(str(image.id), force=True)
            except docker.errors.APIError:
                continue
            removed += tags
    return removed


def precedence(config: Config) -> str:
    """One line for init and doctor: which image the project's code runs in, and why."""
    what, dockerfile, _ = ProjectImage(config).source()
    root = config.root
    has_dc = (root / ".devcontainer" / "devcontainer.json").is_file()
    if config.workspace.dockerfile:
        why = "[workspace] dockerfile" + (" (wins over .devcontainer/)" if has_dc else "")
    elif explicit_image(config):
        why = "[workspace] image" + (" (wins over .devcontainer/)" if has_dc else "")
    elif has_dc:
        why = ".devcontainer/devcontainer.json (no image or dockerfile key in sandbox.toml)"
    else:
        why = "the default [workspace] image"
    shown = str(dockerfile.relative_to(root)) if dockerfile is not None and dockerfile.is_relative_to(root) else what
    return f"project image: {shown}, from {why}"


def describe(config: Config) -> dict[str, Any]:
    """What ``doctor`` reports about the project's image (without building it)."""
    what, dockerfile, _ = ProjectImage(config).source()
    if dockerfile is None:
        return {"image": what, "built": False}
    return {"image": None, "dockerfile": str(dockerfile), "built": True}
