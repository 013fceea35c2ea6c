"""Shared helpers for the benchmark scripts (not a test module; nothing here asserts timings).

* projects: ``make_project`` copies ``templates/demo`` into ``benchmarks/.work/NAME``, writes a
  ``sandbox.toml``, makes it a git repository; ``cleanup_project`` runs ``deinit(force=True)``
  and removes the folder (unmounting a leftover pool if needed);
* the big baseline: ``ensure_pgbench_dump`` makes (once) a custom-format dump of a
  ``pgbench -i -s 100`` database (~1.5 GB on disk) in ``benchmarks/.work/``;
* measuring: ``timed``, ``median``, ``pss_of_cluster``, ``btrfs_exclusive``;
* reporting: ``table`` (plain-text), ``md_table`` and ``update_results`` (rewrites one
  ``<!-- name -->…<!-- /name -->`` section of ``benchmarks/RESULTS.md``), ``machine_facts``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # the repository's package, whatever the editable install does
    sys.path.insert(0, str(REPO))

BENCH = REPO / "benchmarks"
WORK = BENCH / ".work"
RESULTS = BENCH / "RESULTS.md"
DEMO = REPO / "templates" / "demo"
PG_BIN = Path(os.environ.get("SANDBOX_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_IMAGE = os.environ.get("SANDBOX_POSTGRES_IMAGE", "sandbox/postgres:15")
WS_IMAGE = os.environ.get("SANDBOX_WORKSPACE_IMAGE", "sandbox/workspace:bookworm")
BIG_DUMP = WORK / "pgbench-s100.dump"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- measuring ----------------------------------------------------------------------------------

def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fmt_s(x: float | None) -> str:
    if x is None or x != x:
        return "–"
    if x < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def fmt_ratio(x: float | None) -> str:
    if x is None or x != x:
        return "–"
    return f"{x:.1f}×" if x >= 10 else f"{x:.2f}×"


def select1(**kw: Any) -> None:
    """Connect and run ``SELECT 1`` (what "ready" means in every comparison)."""
    import psycopg
    with psycopg.connect(**kw, connect_timeout=10, autocommit=True) as c:
        c.execute("SELECT 1").fetchone()


def wait_select1(timeout: float = 60.0, **kw: Any) -> None:
    import psycopg
    deadline = time.monotonic() + timeout
    while True:
        try:
            select1(**kw)
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def free_port(start: int) -> int:
    for p in range(start, start + 2000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port")


def free_block(start: int, count: int) -> int:
    """The first port of ``count`` consecutive free ports at or after ``start`` (aligned to count)."""
    p = start
    while p + count < 65535:
        if all(_bindable(q) for q in range(p, p + count)):
            return p
        p += count
    raise RuntimeError("no free port block")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pss_of_pids(pids: Sequence[int]) -> int:
    """Sum of PSS (bytes) over ``pids`` from /proc/PID/smaps_rollup."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        if m:
            total += int(m.group(1)) * 1024
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def cluster_pids(datadir: Path) -> list[int]:
    """The postmaster (first line of postmaster.pid) and its children."""
    try:
        pm = int((Path(datadir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [pm, *children(pm)]


def btrfs_exclusive(path: Path) -> tuple[int, int] | None:
    """(total, exclusive) bytes of ``path`` per ``btrfs filesystem du -s --raw``."""
    res = subprocess.run(["btrfs", "filesystem", "du", "-s", "--raw", str(path)], capture_output=True, text=True)
    rows = [r.split() for r in res.stdout.splitlines()[1:] if r.strip()]
    if res.returncode != 0 or not rows:
        return None
    return int(rows[-1][0]), int(rows[-1][1])


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


# -- projects -----------------------------------------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


SANDBOX_TOML = """\
# written by benchmarks/_common.py
[workspace]
runtime = "{runtime}"
copy = [".env"]
ports = 10
port_base = {port_base}

[database]
strategy = "{strategy}"
server = "{server}"
seed = ["db/seed.sql"]

[migrations]
config = "alembic.ini"
policy = "additive"
"""


def make_project(name: str, *, strategy: str, server: str = "local", runtime: str = "none",
                 port_base: int = 24000) -> Path:
    """A fresh copy of the demo project under benchmarks/.work/NAME (git repo, committed)."""
    dst = WORK / name
    cleanup_project(dst)
    WORK.mkdir(parents=True, exist_ok=True)
    shutil.copytree(DEMO, dst)
    (dst / "sandbox.toml").write_text(SANDBOX_TOML.format(runtime=runtime, strategy=strategy, server=server,
                                                          port_base=port_base))
    git(dst, "init", "-q", "-b", "main")
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "demo project")
    return dst


def open_sandbox(path: Path, progress: Callable[[str], None] | None = None) -> Any:
    from sandbox import Sandbox
    return Sandbox.open(path, progress=progress)


def cleanup_project(path: Path) -> None:
    """deinit(force=True), then remove the folder; never leaves a mounted pool behind."""
    path = Path(path)
    if not path.exists():
        return
    if (path / ".sandbox" / "registry.db").exists() and (path / ".git").exists():
        try:
            open_sandbox(path).deinit(force=True)
        except Exception as exc:  # noqa: BLE001 - report and fall through to the manual cleanup
            log(f"deinit of {path} failed: {type(exc).__name__}: {exc}")
    pool = path / ".sandbox" / "pool"
    if os.path.ismount(pool):
        for pid_file in pool.rglob("postmaster.pid"):
            with contextlib.suppress(Exception):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        time.sleep(1)
        subprocess.run(["umount", str(pool)], check=False)
    if os.path.ismount(pool):
        log(f"WARNING: {pool} is still mounted; not removing {path}")
        return
    shutil.rmtree(path, ignore_errors=True)


def sandbox_cli(project: Path, *args: str, timeout: float | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m sandbox --project P -q ARGS`` (the same code as the ``sandbox`` console script)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", "sandbox", "--project", str(project), "-q", *args],
                         capture_output=True, text=True, timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise RuntimeError(f"sandbox {' '.join(args)} exited {res.returncode}: {res.stderr.strip()[-800:]}")
    return res


# -- host PostgreSQL tools ----------------------------------------------------------------------

def pg_env(conn: Any) -> dict[str, str]:
    """Environment for libpq tools from a ConnInfo (host view)."""
    return {**os.environ, **conn.env()}


def pg_tool(name: str) -> str:
    return str(PG_BIN / name)


def ensure_pgbench_dump(scale: int = 100, path: Path = BIG_DUMP) -> Path:
    """A custom-format dump (-Z1) of a ``pgbench -i -s SCALE`` database, made once and cached."""
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and json.loads(meta.read_text()).get("scale") == scale:
        log(f"reusing {path} ({fmt_bytes(path.stat().st_size)})")
        return path
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = Path("/var/tmp") / f"sbx-bench-pgbench-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.chown(tmp, "postgres")
    data = tmp / "data"
    port = free_port(55400)
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    log(f"generating pgbench -i -s {scale} in a temporary cluster (one-off, ~2 min)")
    subprocess.run([*as_pg, pg_tool("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={tmp} -c fsync=off "
            "-c max_wal_size=4GB -c maintenance_work_mem=256MB")
    subprocess.run([*as_pg, pg_tool("pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(tmp / "log"),
                    "start"], check=True, capture_output=True)
    try:
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres"}
        t0 = time.perf_counter()
        subprocess.run([pg_tool("pgbench"), "-i", "-s", str(scale), "-q", "postgres"], check=True,
                       capture_output=True, env=env)
        t_init = time.perf_counter() - t0
        size = int(subprocess.run([pg_tool("psql"), "-Atc", "SELECT pg_database_size('postgres')", "postgres"],
                                  check=True, capture_output=True, text=True, env=env).stdout)
        t0 = time.perf_counter()
        subprocess.run([pg_tool("pg_dump"), "-Fc", "-Z1", "-f", str(path) + ".tmp", "postgres"], check=True,
                       capture_output=True, env=env)
        os.replace(str(path) + ".tmp", path)
        t_dump = time.perf_counter() - t0
    finally:
        subprocess.run([*as_pg, pg_tool("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    meta.write_text(json.dumps({"scale": scale, "db_size": size, "pgbench_init_s": t_init, "dump_s": t_dump}))
    log(f"pgbench -i: {fmt_s(t_init)}, database {fmt_bytes(size)}; dump {fmt_bytes(path.stat().st_size)} "
        f"in {fmt_s(t_dump)}")
    return path


def remove_pgbench_dump(path: Path = BIG_DUMP) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)


def dump_meta(path: Path = BIG_DUMP) -> dict[str, Any]:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


# -- docker -------------------------------------------------------------------------------------

def docker_rm(*names: str) -> None:
    if names:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True)


# -- reporting ----------------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(str(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def machine_facts() -> dict[str, str]:
    mem = ""
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem = fmt_bytes(int(m.group(1)) * 1024) if m else ""
    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else ""
    fs = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", str(REPO)], capture_output=True,
                        text=True).stdout.strip() or "?"
    dev = subprocess.run(["df", "--output=source", str(REPO)], capture_output=True, text=True).stdout.split()[-1:]
    os_name = ""
    with contextlib.suppress(OSError):
        m = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text())
        os_name = m.group(1) if m else ""
    pg = subprocess.run([pg_tool("postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    dv = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                        text=True).stdout.strip()
    return {"cores": str(os.cpu_count()), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "os": os_name, "filesystem": f"{fs} ({dev[0] if dev else '?'}) holding the repository; "
                                          "snapshot pools are loop-mounted btrfs images on it",
            "postgres": pg, "docker": dv, "python": platform.python_version(),
            "load (1/5/15 min) at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def facts_md(facts: dict[str, str]) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in facts.items())


_HEADER = """# Benchmark results

Written by the scripts in this folder (see README.md); each script rewrites only its own
section between `<!-- name -->` markers. Numbers are medians of N runs on the machine below,
**which is shared with other work** (test suites and other sandboxes ran at the same time), so
expect noise of ±20% or more; the ratios, measured in the same run, are more stable than the
absolute times.
"""


def update_results(section: str, body: str) -> None:
    """Replace (or append) ``<!-- section -->…<!-- /section -->`` in RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else _HEADER
    start, end = f"<!-- {section} -->", f"<!-- /{section} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        _, post = rest.split(end, 1)
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    log(f"updated section '{section}' of {RESULTS.relative_to(REPO)}")


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def run_header(script: str, argv: Sequence[str]) -> str:
    facts = machine_facts()
    return (f"_Run {now_utc()}: `python benchmarks/{script} {' '.join(argv)}`_\n\n"
            f"Machine:\n{facts_md(facts)}\n")
