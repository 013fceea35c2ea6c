"""The one secret store: passwords of the roles sandbox creates, under ``<state>/secrets``.

One format: ``<name>.json`` holding ``{"user": name, "password": ...}``, mode 0600, in a
folder of mode 0700, written atomically (a temporary file renamed into place). A secret from an
older sandbox kept as ``<name>.password`` (the plain text of the snapshot strategy) is still
read, and :meth:`SecretStore.write` / :meth:`SecretStore.delete` replace or remove it too.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _secrets
import tempfile
from pathlib import Path

from .errors import DatabaseError

__all__ = ["SecretStore", "new_password"]

_NAME = re.compile(r"[A-Za-z0-9._-]+")


def new_password() -> str:
    """A random password (URL-safe, so it survives DATABASE_URL without surprises)."""
    return _secrets.token_urlsafe(24)


class SecretStore:
    """Passwords of the roles sandbox created, one 0600 JSON file each under ``state_dir/secrets``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "secrets"

    def path(self, name: str) -> Path:
        """The file that holds ``name``'s secret."""
        if not _NAME.fullmatch(name) or name.startswith("."):
            raise DatabaseError(f"invalid secret name {name!r}")
        return self.dir / f"{name}.json"

    def _legacy(self, name: str) -> Path:
        return self.dir / f"{name}.password"

    def read(self, name: str) -> str | None:
        path = self.path(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return self._read_legacy(name)
        except (OSError, ValueError) as exc:
            raise DatabaseError(f"cannot read the secret of {name!r}: {exc.__class__.__name__}") from exc
        value = data.get("password") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    def _read_legacy(self, name: str) -> str | None:
        try:
            value = self._legacy(name).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DatabaseError(f"cannot read the secret of {name!r}: {exc.__class__.__name__}") from exc
        return value or None

    def write(self, name: str, password: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        path = self.path(name)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".json")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({"user": name, "password": password}, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._legacy(name).unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)
        self._legacy(name).unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return self.path(name).exists() or self._legacy(name).exists()

    def get_or_create(self, name: str) -> tuple[str, bool]:
        """The stored password, or a new one (stored). Returns (password, created)."""
        existing = self.read(name)
        if existing:
            return existing, False
        password = new_password()
        self.write(name, password)
        return password, True
