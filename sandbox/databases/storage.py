"""Copy-on-write pools: where the snapshot strategy keeps data directories.

A :class:`Storage` makes *volumes* (directories that can be cloned as a whole) and
clones them, as cheaply as the filesystem allows:

===============  ===========================================  ===========
kind             clone                                        atomic
===============  ===========================================  ===========
``btrfs``        ``btrfs subvolume snapshot`` (O(1))           yes
``xfs-reflink``  ``cp -a --reflink=always`` (shares extents)   no
``reflink``      same, on another reflink filesystem           no
``copy``         ``cp -a`` (a full copy: slow, reported)        no
===============  ===========================================  ===========

*Atomic* means the clone is a point-in-time image of the whole directory, so a
running PostgreSQL cluster can be cloned and the clone recovers like after a
crash. Non-atomic clones are taken only from stopped clusters.

:func:`detect` picks the best kind for a directory. :func:`provision_pool`
makes a btrfs pool where there is none: a sparse image file, ``mkfs.btrfs`` and
a loop mount (root only), idempotent and re-mounted after a reboot.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from ..checks import Check
from ..config import Config
from ..disk import is_disk_full, usage
from ..errors import DatabaseError, DiskFull, ServiceUnavailable, UsageError

KINDS = ("btrfs", "xfs-reflink", "reflink", "copy")
POOL_WARN_PERCENT = 80.0

_BTRFS_SUBVOL_INO = 256        # the root inode of every btrfs subvolume
_RENAME_EXCHANGE = 2

STORAGE_INIT_HINT = ("run `sandbox storage init` as root: it creates a btrfs pool "
                     "(a loop-mounted image file in .sandbox/)")


def _run(argv: list[str], what: str, *, unavailable: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command-line tool; translate failures into sandbox errors."""
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ServiceUnavailable(f"{what}: {argv[0]} is not installed",
                                 hint="install btrfs-progs / coreutils") from exc
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        msg = f"{what} failed: {detail[-1] if detail else f'exit {exc.returncode}'}"
        if is_disk_full(exc):
            raise DiskFull(what) from exc
        if unavailable:
            raise ServiceUnavailable(msg, hint=STORAGE_INIT_HINT) from exc
        raise DatabaseError(msg) from exc


def fs_type(path: Path) -> str:
    """The filesystem type name at ``path`` (its nearest existing ancestor), e.g. ``btrfs``."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    out = _run(["stat", "-f", "-c", "%T", str(p)], "stat").stdout.strip()
    return out


def parse_size(size: str | int) -> int:
    """``"20G"`` → bytes (K, M, G, T suffixes, powers of 1024)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", size, re.IGNORECASE)
    if not m:
        raise UsageError(f"invalid size {size!r}: use e.g. 512M or 20G")
    return int(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{value:.1f}T"


def _libc_rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False if unsupported."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):     # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot do it
        return False
    raise OSError(err, os.strerror(err), str(a))


class Storage:
    """Volumes and clones in one directory tree (a pool) of a given ``kind``."""

    def __init__(self, kind: str, root: Path, *, fs: str | None = None, reason: str = "") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown storage kind {kind!r}")
        self.kind = kind
        self.root = Path(root)
        self.fs = fs
        self.reason = reason           # why detect() chose this kind (for doctor)
        self._quotas = False           # btrfs quotas known to be on (enable_quotas)

    def __repr__(self) -> str:
        return f"Storage(kind={self.kind!r}, root={str(self.root)!r})"

    @property
    def copy_on_write(self) -> bool:
        """True when clones share blocks with their source (thin and fast)."""
        return self.kind != "copy"

    @property
    def atomic(self) -> bool:
        """True when a clone is a point-in-time image of the whole volume."""
        return self.kind == "btrfs"

    # -- volumes ---------------------------------------------------------------------------

    def is_volume(self, path: Path) -> bool:
        path = Path(path)
        if self.kind == "btrfs":
            try:
                return path.is_dir() and os.stat(path).st_ino == _BTRFS_SUBVOL_INO
            except OSError:
                return False
        return path.is_dir()

    def create_volume(self, path: Path) -> Path:
        """An empty volume at ``path`` (a btrfs subvolume, or a plain directory)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise DatabaseError(f"cannot create volume {path}: it already exists")
        if self.kind == "btrfs":
            _run(["btrfs", "subvolume", "create", str(path)], f"creating subvolume {path}")
        else:
            path.mkdir()
        os.chmod(path, 0o755)
        return path

    def clone(self, src: Path, dst: Path) -> Path:
        """Clone volume ``src`` to the new volume ``dst``."""
        src, dst = Path(src), Path(dst)
        if not src.is_dir():
            raise DatabaseError(f"cannot clone {src}: no such volume")
        if dst.exists():
            raise DatabaseError(f"cannot clone to {dst}: it already exists")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "btrfs":
            _run(["btrfs", "subvolume", "snapshot", str(src), str(dst)], f"snapshotting {src}")
        elif self.kind in ("xfs-reflink", "reflink"):
            _run(["cp", "-a", "--reflink=always", "--", str(src), str(dst)], f"reflink copy of {src}")
        else:
            _run(["cp", "-a", "--", str(src), str(dst)], f"copy of {src}")
        return dst

    # -- per-workspace quotas (btrfs qgroups) -----------------------------------------------

    @property
    def can_bound(self) -> bool:
        """True when a volume can be given a size limit (btrfs qgroups, as root).

        XFS project quotas would be the reflink equivalent; they are not implemented, so a
        volume on a reflink or copy pool is bounded only by the pool itself."""
        return self.kind == "btrfs" and os.geteuid() == 0

    def enable_quotas(self) -> bool:
        """Turn btrfs quotas on for the pool (idempotent, ~ms; the first time waits for the scan of
        what is already there, so that limits count from true numbers)."""
        if not self.can_bound:
            return False
        if not self._quotas:
            _run(["btrfs", "quota", "enable", str(self.root)], f"enabling quotas on {self.root}")
            _run(["btrfs", "quota", "rescan", "-W", str(self.root)], f"scanning quotas on {self.root}")
            self._quotas = True
        return True

    def limit(self, path: Path, limit: int | None) -> bool:
        """Cap what volume ``path`` references (blocks shared with its source included) at ``limit``
        bytes, None lifting the cap; writes past it fail in that volume alone (EDQUOT).

        Why referenced and not exclusive: a snapshot's exclusive bytes jump when the volume it
        shares blocks with is deleted (the old baseline after a refresh), which would put every
        workspace over its limit at once; what a volume references does not change that way.
        A level-1 qgroup over a workspace and its checkpoints would also count the checkpoints,
        but adding a snapshot of the baseline to one makes the numbers inconsistent (the kernel's
        quick inherit does not apply) and needs a full rescan: too slow for every `up`/`reset`."""
        if not self.enable_quotas():
            return False
        _run(["btrfs", "qgroup", "limit", str(limit) if limit else "none", str(path)],
             f"limiting the size of {path}")
        return True

    def quota_usage(self, path: Path) -> tuple[int, int | None] | None:
        """(referenced bytes, limit) of volume ``path``, or None when unknown."""
        if not self.can_bound or not self.is_volume(path):
            return None
        proc = subprocess.run(["btrfs", "qgroup", "show", "-rf", "--raw", str(path)],
                              capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            cols = line.split()
            if cols and cols[0].startswith("0/") and len(cols) >= 4:
                try:
                    return int(cols[1]), (None if cols[3] == "none" else int(cols[3]))
                except ValueError:
                    return None
        return None

    def pool_size(self) -> int | None:
        u = usage(self.root)
        return u[1] if u else None

    def delete(self, path: Path) -> None:
        """Remove a volume (or any directory in the pool, nested subvolumes included). Missing is fine."""
        path = Path(path)
        if not path.exists() and not path.is_symlink():
            return
        if self.kind == "btrfs":
            # Nested subvolumes first (e.g. a checkpoint folder holding several), deepest first.
            if path.is_dir() and not path.is_symlink():
                for child in sorted((p for p in path.rglob("*") if p.is_dir() and not p.is_symlink()),
                                    key=lambda p: len(p.parts), reverse=True):
                    if self.is_volume(child):
                        self.delete(child)
            if self.is_volume(path):
                # --commit-after: the deletion is committed now, so the cleaner starts freeing
                # its blocks at once (see reclaim)
                _run(["btrfs", "subvolume", "delete", "--commit-after", str(path)], f"deleting subvolume {path}")
                return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()

    def exchange(self, a: Path, b: Path) -> None:
        """Swap two volumes' places: atomically where the kernel can, else by three renames."""
        if _libc_rename_exchange(Path(a), Path(b)):
            return
        tmp = Path(str(a) + ".swap")
        os.rename(a, tmp)
        os.rename(b, a)
        os.rename(tmp, b)

    def usage(self, path: Path) -> int | None:
        """Bytes that ``path`` really owns (not shared with other clones), if cheaply known."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            if self.kind == "btrfs":
                out = _run(["btrfs", "filesystem", "du", "-s", "--raw", str(path)], "btrfs du").stdout
                rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
                return int(rows[-1][1]) if rows else None
            if self.kind == "copy":
                out = _run(["du", "-s", "-B1", str(path)], "du").stdout
                return int(out.split()[0])
        except (DatabaseError, ServiceUnavailable, ValueError, IndexError):
            return None
        return None          # reflink: exclusive extents are not cheaply known

    def reclaim(self) -> None:
        """Wait until the space of deleted volumes is free again (btrfs frees it in the background)."""
        if self.kind == "btrfs":
            # the cleaner drops the deleted subvolumes, then a commit makes their blocks free
            _run(["btrfs", "subvolume", "sync", str(self.root)], "waiting for btrfs to free deleted subvolumes")
            _run(["btrfs", "filesystem", "sync", str(self.root)], "btrfs filesystem sync")

    def usage_check(self) -> Check:
        """How full the pool's filesystem is; a warning from 80%."""
        u = usage(self.root)
        if u is None or not u[1]:
            return Check("pool usage", False, f"cannot read the usage of {self.root}", required=False)
        used, total = u
        pct = 100.0 * used / total
        detail = f"{self.root}: {_human(used)} of {_human(total)} used ({pct:.0f}%)"
        if pct < POOL_WARN_PERCENT:
            return Check("pool usage", True, detail)
        fix = "free space: `sandbox db drop-checkpoint NAME LABEL`, `sandbox rm NAME`" + (
            ", or `sandbox storage grow SIZE`" if self.kind == "btrfs" else "")
        return Check("pool usage", False, detail + (": full" if pct >= 99.5 else ": nearly full"), fix,
                     required=pct >= 99.5)

    def sync(self) -> None:
        """Make everything written to the pool durable."""
        if self.kind == "btrfs":
            _run(["btrfs", "filesystem", "sync", str(self.root)], "btrfs filesystem sync")
        else:
            os.sync()

    def doctor(self) -> list[Check]:
        if self.kind == "btrfs":
            detail = f"btrfs at {self.root}: atomic O(1) snapshots"
        elif self.kind in ("xfs-reflink", "reflink"):
            detail = (f"{self.kind} at {self.root}: copy-on-write file clones "
                      "(clusters are stopped while they are cloned)")
        else:
            detail = (f"no copy-on-write at {self.root} ({self.fs or 'unknown filesystem'}): "
                      "every clone is a full copy of the data directory")
        if self.reason:
            detail += f"; {self.reason}"
        fix = None if self.copy_on_write else (
            STORAGE_INIT_HINT if os.geteuid() == 0 else
            "run `sudo sandbox storage init`, put .sandbox/ on btrfs or XFS (reflink=1), "
            "or use the template strategy")
        return [Check("storage", self.copy_on_write, detail, fix, required=False), self.usage_check()]


def _reflink_probe(directory: Path) -> bool:
    """Try ``cp --reflink=always`` on a tiny file in ``directory``."""
    try:
        with tempfile.TemporaryDirectory(prefix=".sbx-reflink-", dir=directory) as tmp:
            src = Path(tmp) / "a"
            src.write_bytes(b"x" * 4096)
            proc = subprocess.run(["cp", "--reflink=always", str(src), str(Path(tmp) / "b")],
                                  capture_output=True, check=False)
            return proc.returncode == 0
    except OSError:
        return False


def detect(path: Path) -> Storage:
    """The best storage for the filesystem holding ``path`` (created if missing)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceUnavailable(f"cannot create the pool directory {path}: {exc.strerror}") from exc
    fs = fs_type(path)
    if fs == "btrfs":
        return Storage("btrfs", path, fs=fs)
    if _reflink_probe(path):
        return Storage("xfs-reflink" if fs == "xfs" else "reflink", path, fs=fs)
    return Storage("copy", path, fs=fs,
                   reason=f"{fs} cannot share blocks between files (cp --reflink=always failed)")


def is_mountpoint(path: Path) -> bool:
    return os.path.ismount(path)


def _traversable_by_others(path: Path) -> bool:
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            return False
    return True


def data_home(config: Config, server: str) -> Path:
    """Where clusters and pools live. Host clusters run as the ``postgres`` user when we are
    root, so their directories must be reachable by it: a checkout under a private home
    directory gets ``/var/lib/sandbox/<project>`` instead of ``.sandbox/``."""
    state = config.state_dir
    if server == "local" and os.geteuid() == 0 and not _traversable_by_others(state):
        return Path("/var/lib/sandbox") / config.project_id
    return state


def pool_path(config: Config, server: str) -> Path:
    """The one place the snapshot pool's path is computed: ``[database] pool`` (relative to the
    repository) in the project's state, or ``pool`` in the data home the server needs elsewhere."""
    home = data_home(config, server)
    return home / "pool" if home != config.state_dir else config.root / config.database.pool


def pool_paths(config: Config) -> set[Path]:
    """Every place a pool of this project may be, whichever server made it (``deinit``)."""
    return {pool_path(config, "docker"), pool_path(config, "local"), config.state_dir / "pool"}


def provision_pool(pool_dir: Path, size: str | int = "20G", image: Path | None = None) -> Storage:
    """Make ``pool_dir`` a btrfs pool: a sparse image file, ``mkfs.btrfs``, a loop mount.

    Idempotent: an existing btrfs at ``pool_dir`` is kept; an image that exists but is
    not mounted (e.g. after a reboot) is mounted again. ``image`` defaults to
    ``<pool_dir>/../pool.img``. Needs root.
    """
    pool_dir = Path(pool_dir).absolute()
    image = Path(image) if image else pool_dir.parent / "pool.img"
    if pool_dir.exists() and fs_type(pool_dir) == "btrfs":
        return Storage("btrfs", pool_dir, fs="btrfs")
    if os.geteuid() != 0:
        raise ServiceUnavailable("creating a btrfs pool needs root",
                                 hint="run `sudo sandbox storage init`")
    if pool_dir.exists() and any(pool_dir.iterdir()):
        raise DatabaseError(f"cannot mount a pool on {pool_dir}: the directory is not empty",
                            hint="move its contents away, or remove it if it holds only old clones")
    pool_dir.mkdir(parents=True, exist_ok=True)
    if not image.exists():
        image.parent.mkdir(parents=True, exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(parse_size(size))         # sparse: takes no space until written
        os.chmod(image, 0o600)
        try:
            _run(["mkfs.btrfs", "-q", "-L", "sandbox-pool", str(image)], "mkfs.btrfs", unavailable=True)
        except Exception:
            image.unlink(missing_ok=True)
            raise
    _run(["mount", "-o", "loop", str(image), str(pool_dir)], f"mounting {image} on {pool_dir}",
         unavailable=True)
    os.chmod(pool_dir, 0o755)           # PostgreSQL (another user) must traverse it
    return Storage("btrfs", pool_dir, fs="btrfs")


def unmount_pool(pool_dir: Path) -> None:
    """Unmount a pool made by :func:`provision_pool` (the loop device goes with it)."""
    pool_dir = Path(pool_dir)
    if is_mountpoint(pool_dir):
        _run(["umount", str(pool_dir)], f"unmounting {pool_dir}")


def loop_backing(pool_dir: Path) -> tuple[str, Path] | None:
    """(loop device, image file) of a pool mounted from an image by :func:`provision_pool`, or None."""
    pool_dir = Path(pool_dir)
    if not is_mountpoint(pool_dir):
        return None
    source = _run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(pool_dir)], "findmnt").stdout.strip()
    if not source.startswith("/dev/loop"):
        return None
    back = _run(["losetup", "-n", "-O", "BACK-FILE", source], "losetup").stdout.strip()
    back = back.removesuffix(" (deleted)")
    return (source, Path(back)) if back else None


def grow_pool(pool_dir: Path, size: str) -> dict[str, object]:
    """Grow a loop-mounted btrfs pool to ``size`` (or by ``+size``): the image file, the loop
    device (``losetup -c``), then the filesystem (``btrfs filesystem resize max``). Needs root."""
    pool_dir = Path(pool_dir)
    relative = size.strip().startswith("+")
    try:
        amount = parse_size(size.strip().lstrip("+"))
    except UsageError as exc:
        raise UsageError(f"invalid size {size!r}: use e.g. 40G, or +10G to add 10G") from exc
    backing = loop_backing(pool_dir)
    if backing is None:
        raise UsageError(f"{pool_dir} is not a loop-mounted pool made by sandbox: grow the filesystem "
                         "that holds it instead")
    device, image = backing
    old = image.stat().st_size
    new = old + amount if relative else amount
    if new <= old:
        raise UsageError(f"the pool is already {_human(old)}: give a larger size (or +SIZE)")
    if os.geteuid() != 0:
        raise ServiceUnavailable("growing the pool needs root", hint="run `sudo sandbox storage grow SIZE`")
    try:
        os.truncate(image, new)                 # sparse: takes no space until written
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(f"growing {image}", where=str(image.parent)) from exc
        raise DatabaseError(f"cannot grow {image}: {exc.strerror}") from exc
    _run(["losetup", "-c", device], f"telling {device} its new size")
    _run(["btrfs", "filesystem", "resize", "max", str(pool_dir)], f"resizing the btrfs pool {pool_dir}")
    return {"pool": str(pool_dir), "image": str(image), "device": device, "old_size": old, "new_size": new}
