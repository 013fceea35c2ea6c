"""sandbox.secretstore: one format (JSON), mode 0600, legacy plain-text secrets still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.errors import DatabaseError
from sandbox.secretstore import SecretStore


def test_secrets_are_json_files_only_their_owner_reads(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    password, created = store.get_or_create("role-a")
    assert created and store.get_or_create("role-a") == (password, False)
    path = tmp_path / "secrets" / "role-a.json"
    assert json.loads(path.read_text()) == {"user": "role-a", "password": password}
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    store.delete("role-a")
    assert store.read("role-a") is None and not store.exists("role-a")


def test_a_legacy_plain_text_secret_is_read_and_replaced(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    legacy = tmp_path / "secrets" / "snapshot-admin.password"
    legacy.write_text("old-secret\n")
    store = SecretStore(tmp_path)
    assert store.read("snapshot-admin") == "old-secret"
    store.write("snapshot-admin", "new-secret")
    assert store.read("snapshot-admin") == "new-secret" and not legacy.exists()


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", ""])
def test_a_name_that_is_not_a_plain_file_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatabaseError):
        SecretStore(tmp_path).read(name)
