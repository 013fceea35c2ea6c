"""The dashboard in a real browser (Debian's chromium, driven by the pinned Python playwright):
the a–b cell shows a conflict, and a commit made in c from inside its container changes c's row
without a reload (server-sent events). A missing browser fails this test; it never skips."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Sandbox

from .conftest import GIT_ENV, cli, git

CHROMIUM = os.environ.get("SANDBOX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
URL = re.compile(r"(http://127\.0\.0\.1:\d+/\?token=\S+)")
LINE = '        print(f"{users} users, {posts} posts")\n'


def browser_path() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (scripts/setup does)", pytrace=False)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("python playwright is not installed: pip install -e '.[test]'", pytrace=False)
    return CHROMIUM


@pytest.fixture
def project(demo_factory, docker_client, need_pg):  # type: ignore[no-untyped-def]
    for image in ("sandbox/workspace:bookworm", "sandbox/postgres:15"):
        try:
            docker_client.images.get(image)
        except Exception:  # noqa: BLE001
            from conftest import service_missing
            service_missing(f"image {image} missing: run scripts/build-images")
    toml = ('[workspace]\nruntime = "docker"\nports = 5\n\n'
            '[database]\nstrategy = "template"\nserver = "docker"\nseed = ["db/seed.sql"]\n')
    return demo_factory(toml)


@pytest.fixture
def served(project: Path) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--project", str(project), "dashboard", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **GIT_ENV, "NO_COLOR": "1", "COLUMNS": "300"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = URL.search(line)
        assert found, f"no URL printed: {line!r}"
        yield found.group(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.docker
def test_the_page_shows_the_conflict_and_follows_a_commit_made_in_a_container(project: Path, request) -> None:  # type: ignore[no-untyped-def]
    executable = browser_path()
    cli(project, "up", "a", "b", "--no-container")
    cli(project, "up", "c")
    sb = Sandbox.open(project)
    for name, words in (("a", "a says"), ("b", "b says")):
        tree = Path(sb.record(name).path)
        report = tree / "app" / "report.py"
        report.write_text(report.read_text().replace(LINE, f'        print(f"{words} {{users}}")\n'))
        git(tree, "commit", "-qam", f"{name} edits the report")
    url = request.getfixturevalue("served")

    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(url)
            cell = page.locator("#cell-a-b")
            cell.wait_for(timeout=60_000)
            assert cell.get_attribute("data-conflict") == "yes"
            assert "risk-high" in (cell.get_attribute("class") or "")
            cell.click()
            assert "conflict" in page.locator("#findings").inner_text()
            assert page.locator("#cell-a-c").get_attribute("data-risk") == "none"

            before = page.locator("#ws-c").get_attribute("data-commit")
            page.evaluate("window.__notReloaded = true")
            cli(project, "exec", "c", "--", "sh", "-c",
                "echo from-inside > inside.txt && git add inside.txt && git commit -qm 'c inside'")
            page.wait_for_function(
                "before => { const r = document.querySelector('#ws-c');"
                " return r && r.dataset.commit && r.dataset.commit !== before; }",
                arg=before, timeout=90_000)
            assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
            after = page.locator("#ws-c").get_attribute("data-commit")
            assert after == git(project, "rev-parse", "c").strip()
            assert page.locator("#ws-c .ahead").inner_text() == "1"

            page.locator("#ws-a a.ws").click()
            page.locator("#review pre.diff").wait_for(timeout=30_000)
            assert "a says" in page.locator("#review pre.diff").inner_text()
        finally:
            browser.close()
