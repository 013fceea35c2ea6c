"""`sandbox dashboard`: every request needs the token, and the server listens on 127.0.0.1 only.

The real server is started (`sandbox dashboard --port 0`, uvicorn) on a real git project; the
test reads the URL it prints, then asks without a token, with a wrong one, with the right one
but another Host, and looks at the listening socket in /proc/net/tcp and from a non-loopback
address of this machine.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

URL = re.compile(r"http://(127\.0\.0\.1):(\d+)/\?token=(\S+)")


@pytest.fixture
def dashboard(git_repo: Path) -> Iterator[tuple[int, str]]:
    (git_repo / "sandbox.toml").write_text('[workspace]\nruntime = "none"\n\n[database]\nserver = "local"\n')
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--project", str(git_repo), "dashboard", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"}, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = URL.search(line)
        assert found, f"no URL printed: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        yield int(found.group(2)), found.group(3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def status(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as res:
            return int(res.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_dashboard_refuses_requests_without_the_token(dashboard: tuple[int, str]) -> None:
    port, token = dashboard
    base = f"http://127.0.0.1:{port}"
    for path in ("/", "/api/overview", "/api/events", "/api/workspace/a", "/static/app.js"):
        assert status(base + path) == 401, path
        assert status(base + path + "?token=wrong") == 401, path
        assert status(base + path, {"Authorization": "Bearer nope"}) == 401, path
    assert status(f"{base}/?token={token}") == 200
    assert status(f"{base}/static/app.js", {"Cookie": "sandbox_dashboard=wrong"}) == 401
    assert status(f"{base}/static/app.js", {"Cookie": f"sandbox_dashboard={token}"}) == 200
    assert status(f"{base}/static/app.js", {"Authorization": f"Bearer {token}"}) == 200
    # the right token from a page that reached the server under another name (DNS rebinding)
    assert status(f"{base}/?token={token}", {"Host": f"attacker.example:{port}"}) == 403


def _listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (IPv4 and IPv6), from /proc/net/tcp*."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":      # LISTEN
                found.append(addr)
    return found


def test_dashboard_listens_on_127_0_0_1_only(dashboard: tuple[int, str]) -> None:
    port, _token = dashboard
    assert _listening(port) == ["0100007F"]          # 127.0.0.1, and nothing else (no 0.0.0.0, no ::)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))             # no packet is sent: picks the outgoing address
            outside = probe.getsockname()[0]
        except OSError:
            outside = None
    if outside and not outside.startswith("127."):
        with socket.socket() as s:
            s.settimeout(5)
            assert s.connect_ex((outside, port)) != 0, f"reachable on {outside}:{port}"
