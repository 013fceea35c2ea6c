"""Copy-on-write pools on a real loop-mounted btrfs, and the fallbacks elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.databases import storage as st
from sandbox.errors import UsageError
from tests.conftest import service_missing


@pytest.fixture
def btrfs_dir() -> Iterator[Path]:
    """A fresh btrfs loop mount (root only); unmounted and removed afterwards."""
    if os.geteuid() != 0:
        service_missing("a btrfs loop mount needs root")
    if shutil.which("mkfs.btrfs") is None:
        service_missing("btrfs-progs is not installed")
    base = Path(tempfile.mkdtemp(prefix="sbx-storage-"))
    try:
        yield base
    finally:
        st.unmount_pool(base / "pool")
        shutil.rmtree(base, ignore_errors=True)


def test_provision_is_idempotent_and_remounts(btrfs_dir: Path) -> None:
    pool = btrfs_dir / "pool"
    s = st.provision_pool(pool, "256M")
    assert s.kind == "btrfs" and s.copy_on_write and s.atomic
    assert st.fs_type(pool) == "btrfs" and (btrfs_dir / "pool.img").exists()
    assert (btrfs_dir / "pool.img").stat().st_blocks * 512 < 256 * 1024 * 1024   # sparse
    s.create_volume(pool / "v")
    (pool / "v" / "f").write_text("kept")
    assert st.provision_pool(pool, "256M").kind == "btrfs"           # already mounted: no-op
    st.unmount_pool(pool)                                             # e.g. a reboot
    assert not st.is_mountpoint(pool)
    st.provision_pool(pool, "256M")
    assert (pool / "v" / "f").read_text() == "kept"


def test_btrfs_clone_is_thin_and_independent(btrfs_dir: Path) -> None:
    pool = btrfs_dir / "pool"
    st.provision_pool(pool, "512M")
    s = st.detect(pool)
    assert s.kind == "btrfs"
    src = s.create_volume(pool / "src")
    (src / "big").write_bytes(os.urandom(8 * 1024 * 1024))
    subprocess.run(["sync"], check=True)
    dst = s.clone(src, pool / "dst")
    assert s.is_volume(dst)
    assert (dst / "big").read_bytes() == (src / "big").read_bytes()
    assert s.usage(dst) == 0                            # untouched clone owns nothing
    with open(dst / "big", "r+b") as f:                  # rewrite 1 MB of it
        f.write(os.urandom(1024 * 1024))
    subprocess.run(["sync"], check=True)
    used = s.usage(dst)
    assert used is not None and 900_000 < used < 2_000_000
    assert (src / "big").read_bytes() != (dst / "big").read_bytes()
    # exchange swaps two volumes' places
    s.exchange(src, dst)
    assert s.usage(src) == used
    # nested subvolumes go with their parent
    s.clone(dst, src / "nested")
    s.delete(src)
    s.delete(dst)
    s.delete(pool / "missing")                          # missing is fine
    assert not src.exists() and not dst.exists()
    assert s.doctor()[0].ok


def test_detect_without_cow_falls_back_and_says_so(tmp_path: Path) -> None:
    s = st.detect(tmp_path / "pool")                    # ext4 or tmpfs here: no reflink
    assert st.fs_type(tmp_path) != "btrfs"
    assert s.kind in ("copy", "reflink", "xfs-reflink")
    check = s.doctor()[0]
    if s.kind == "copy":
        assert not s.copy_on_write and not check.ok and check.fix
        assert "full copy" in check.detail
    src = s.create_volume(tmp_path / "pool" / "a")
    (src / "f").write_text("x")
    dst = s.clone(src, tmp_path / "pool" / "b")
    assert (dst / "f").read_text() == "x"
    if s.kind == "copy":
        assert (s.usage(dst) or 0) > 0
    s.delete(dst)
    assert not dst.exists()


def test_detect_on_tmpfs_reports_copy() -> None:
    if os.geteuid() != 0:
        service_missing("mounting a tmpfs needs root")
    d = Path(tempfile.mkdtemp(prefix="sbx-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)], check=True)
    try:
        s = st.detect(d / "pool")
        assert s.fs == "tmpfs" and s.kind == "copy" and not s.doctor()[0].ok
    finally:
        subprocess.run(["umount", str(d)], check=True)
        d.rmdir()


def test_parse_size() -> None:
    assert st.parse_size("20G") == 20 * 1024 ** 3
    assert st.parse_size("512m") == 512 * 1024 ** 2
    assert st.parse_size(1000) == 1000
    with pytest.raises(UsageError):
        st.parse_size("lots")
