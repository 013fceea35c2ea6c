"""Agents as users: `sandbox mcp` over stdio (the SDK's own client), `migrate up`, briefs and merge
requests, through the installed `sandbox` console script, on a real Docker engine and Postgres."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import pytest

from sandbox import Sandbox

from .conftest import GIT_ENV, add_revision, cli, git

pytest.importorskip("mcp", reason="the mcp extra is not installed: pip install -e '.[mcp]'")

from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

TOOLS = {"workspace_info", "env", "exec", "job_start", "job_read", "job_stop", "db_reset", "db_checkpoint",
         "db_restore", "db_checkpoints", "migrate_up", "migrate_status", "migrate_check", "migrate_lint",
         "migrate_rebase", "sync", "merge_request", "overview"}
HOOK = 'echo "hook says hello on stdout"; echo "hook on stderr" >&2'


def console_script() -> str:
    found = shutil.which("sandbox", path=os.path.dirname(sys.executable))
    assert found, "the sandbox console script is not installed beside the interpreter"
    return found


@pytest.fixture
def docker_agents(demo_factory, docker_client, need_pg):  # type: ignore[no-untyped-def]
    for image in ("sandbox/workspace:bookworm", "sandbox/postgres:15"):
        try:
            docker_client.images.get(image)
        except Exception:  # noqa: BLE001
            from conftest import service_missing
            service_missing(f"image {image} missing: run scripts/build-images")
    # a port range of its own: other suites on this host use the default one (20000, databases 30000)
    toml = ('[workspace]\nruntime = "docker"\nports = 5\nport_base = 25700\n'
            f'setup = [{json.dumps(HOOK)}]\n\n'
            '[database]\nstrategy = "snapshot"\nserver = "docker"\nseed = ["db/seed.sql"]\n')
    return demo_factory(toml)


class Agent:
    """One stdio session with `sandbox mcp`, through the console script."""

    def __init__(self, session: ClientSession, instructions: str | None) -> None:
        self.session = session
        self.instructions = instructions or ""

    async def call(self, tool: str, **args: Any) -> dict[str, Any]:
        res = await self.session.call_tool(tool, args, read_timeout_seconds=120)
        assert not res.is_error, f"{tool}({args}) failed: {res.content}"
        assert res.structured_content is not None
        return dict(res.structured_content)

    async def refused(self, tool: str, **args: Any) -> str:
        res = await self.session.call_tool(tool, args, read_timeout_seconds=120)
        assert res.is_error, f"{tool}({args}) was not refused: {res.structured_content}"
        return " ".join(getattr(c, "text", "") for c in res.content)


@pytest.fixture
def connect():  # type: ignore[no-untyped-def]
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def agent(repo: Path, *args: str) -> AsyncIterator[Agent]:
        params = StdioServerParameters(command=console_script(), args=["--project", str(repo), "mcp", *args],
                                       env={**os.environ, **GIT_ENV}, cwd=str(repo))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            yield Agent(session, init.instructions)

    return agent


def psql(repo: Path, name: str, sql: str) -> str:
    return cli(repo, "exec", name, "--", "psql", "-v", "ON_ERROR_STOP=1", "-tAc", sql).stdout.strip()


@pytest.mark.docker
def test_agent_session_on_docker(docker_agents: Path, connect, docker_client) -> None:  # type: ignore[no-untyped-def]
    repo = docker_agents
    cli(repo, "up", "a", "--brief", "Add a nickname to users; keep the API stable.")
    cli(repo, "up", "b")
    main_before = git(repo, "rev-parse", "main").strip()
    tree = Path(Sandbox.open(repo).record("a").path)
    pid = Sandbox.open(repo).config.project_id

    async def session() -> None:
        async with connect(repo, "--workspace", "a") as agent:
            # the tools, their annotations and output schemas; nothing that merges but merge_request
            listed = (await agent.session.list_tools()).tools
            names = {t.name for t in listed}
            assert names == TOOLS, names ^ TOOLS
            assert [n for n in names if "merge" in n] == ["merge_request"]
            by = {t.name: t for t in listed}
            for t in listed:
                assert t.output_schema and t.output_schema.get("type") == "object", t.name
            assert by["workspace_info"].annotations.read_only_hint is True
            assert by["db_reset"].annotations.destructive_hint is True
            assert by["db_checkpoints"].annotations.idempotent_hint is True
            assert by["exec"].annotations.read_only_hint is False

            # the brief comes first, in the instructions and in workspace_info
            assert "Add a nickname to users" in agent.instructions and str(tree) in agent.instructions
            info = await agent.call("workspace_info")
            assert info["brief"] == "Add a nickname to users; keep the API stable." and info["name"] == "a"
            assert list(info)[0] == "brief"

            # the overview: every workspace, and only the pairs that involve this one
            ov = await agent.call("overview")
            assert ov["main"]["commit"] == main_before
            assert {w["name"] for w in ov["workspaces"]} == {"a", "b"}
            assert ov["pairs"] and all("a" in (p["a"], p["b"]) for p in ov["pairs"])
            assert next(w for w in ov["workspaces"] if w["name"] == "a")["brief"].startswith("Add a nickname")

            # exec: an exit code is a result; a time-out kills the command inside the container
            res = await agent.call("exec", argv=["sh", "-c", "echo out; echo err >&2; exit 3"])
            assert res["exit_code"] == 3 and res["stdout"] == "out\n" and res["stderr"] == "err\n"
            assert not res["timed_out"]
            res = await agent.call("exec", argv=["sleep", "30"], timeout_s=1)
            assert res["timed_out"] and res["duration_s"] < 30
            container = docker_client.containers.list(filters={"label": [f"dev.sandbox.project={pid}",
                                                                           "dev.sandbox.workspace=a",
                                                                           "dev.sandbox.role=workspace"]})[0]
            # (the container's own main process is `sleep infinity`)
            assert not any("sleep 30" in " ".join(p) for p in container.top()["Processes"])
            assert "50" in await agent.refused("exec", argv=["true"], timeout_s=120)

            # own database only: checkpoint, write, restore; and workspace b is refused
            await agent.call("db_checkpoint", label="clean")
            await agent.call("exec", argv=["psql", "-v", "ON_ERROR_STOP=1", "-c",
                                           "INSERT INTO users (id, email) VALUES (99, 'agent@example.com')"])
            assert psql(repo, "a", "SELECT count(*) FROM users WHERE id = 99") == "1"
            await agent.call("db_restore", label="clean")
            assert psql(repo, "a", "SELECT count(*) FROM users WHERE id = 99") == "0"
            # a long operation reports progress to a client that asks for it
            progress: list[str] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append(message or "")

            res = await agent.session.call_tool("db_reset", {}, read_timeout_seconds=120,
                                                progress_callback=on_progress)
            assert not res.is_error and any("reset" in m for m in progress), progress
            assert "not yours" in await agent.refused("workspace_info", name="b")
            assert "not yours" in await agent.refused("db_reset", name="b")
            assert "not yours" in await agent.refused("exec", argv=["true"], name="b")

            # 20 concurrent calls from one client all answer
            results: list[dict[str, Any]] = []

            async def one(i: int) -> None:
                if i % 2:
                    results.append(await agent.call("workspace_info"))
                else:
                    results.append(await agent.call("exec", argv=["echo", str(i)]))

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, i)
            assert len(results) == 20

            # an agent's additive revision: migrate_up applies it to a's database only; the gate passes
            add_revision(tree, "a001", "0001", 'op.add_column("users", sa.Column("nickname", sa.Text()))',
                         commit=False)
            await agent.call("exec", argv=["sh", "-c", "git add -A && git commit -qm 'a001: nickname'"])
            up = await agent.call("migrate_up")
            assert up["applied"] == ["a001"] and up["heads"] == ["a001"]
            assert (await agent.call("migrate_up"))["noop"]
            assert psql(repo, "a", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' "
                                   "AND column_name = 'nickname'") == "1"
            assert psql(repo, "b", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' "
                                   "AND column_name = 'nickname'") == "0"
            check = await agent.call("migrate_check")
            assert check["ok"] and check["revisions"] == ["a001"], check["findings"]

            # a destructive revision applies to a's own database; the request records the failed gate
            add_revision(tree, "a002", "a001", 'op.drop_table("audit_log")', commit=False)
            await agent.call("exec", argv=["sh", "-c", "git add -A && git commit -qm 'a002: drop audit_log'"])
            up = await agent.call("migrate_up")
            assert up["applied"] == ["a002"]
            assert psql(repo, "a", "SELECT count(*) FROM pg_tables WHERE tablename = 'audit_log'") == "0"
            req = await agent.call("merge_request", note="drops audit_log: please review")
            assert req["ok"] is False and req["workspace"] == "a" and req["note"].startswith("drops")
            assert any(f["rule"] == "drop-table" for f in req["gate"]["findings"])

            # a 70-second job, read to its end
            job = await agent.call("job_start", argv=["sh", "-c", "for i in 1 2 3 4 5 6 7; do echo tick $i; "
                                                                   "sleep 10; done; exit 5"])
            offset, output, chunk = 0, "", job
            for _ in range(40):
                chunk = await agent.call("job_read", id=job["id"], offset=offset, wait_s=20)
                output += chunk["output"]
                offset = chunk["next_offset"]
                if not chunk["running"]:
                    break
            assert not chunk["running"] and chunk["exit_code"] == 5
            assert output.splitlines() == [f"tick {i}" for i in range(1, 8)]

    anyio.run(session)
    assert git(repo, "rev-parse", "main").strip() == main_before
    reqs = json.loads(cli(repo, "merge", "--requests", "--json").stdout)
    assert [(r["workspace"], r["ok"], r["stale"]) for r in reqs] == [("a", False, False)]
    assert json.loads(cli(repo, "ls", "--json").stdout)[0]["brief"].startswith("Add a nickname")


@pytest.mark.docker
def test_lead_server_hooks_and_jobs(docker_agents: Path, connect, docker_client) -> None:  # type: ignore[no-untyped-def]
    repo = docker_agents
    cli(repo, "up", "a")

    async def session() -> None:
        async with connect(repo, "--lead") as agent:
            names = {t.name for t in (await agent.session.list_tools()).tools}
            assert names == TOOLS | {"workspace_list", "workspace_up"}
            # a setup hook that writes to stdout does not corrupt the protocol stream
            up = await agent.call("workspace_up", name="c", brief="Write the docs.")
            assert up["ok"] and up["name"] == "c"
            listed = {w["name"]: w["brief"] for w in (await agent.call("workspace_list"))["workspaces"]}
            assert listed == {"a": None, "c": "Write the docs."}
            assert "name the workspace" in await agent.refused("workspace_info")
            res = await agent.call("exec", name="c", argv=["sh", "-c", "echo to-stdout"])
            assert res["stdout"] == "to-stdout\n"
            # a job can be stopped: its process group goes
            job = await agent.call("job_start", name="a", argv=["sh", "-c", "sleep 300 & sleep 301; echo never"])
            stopped = await agent.call("job_stop", id=job["id"])
            assert stopped["stopped"] and not stopped["running"]
            assert (await agent.call("workspace_info", name="c"))["brief"] == "Write the docs."
            # a job still running when the session ends is stopped with the server
            await agent.call("job_start", name="a", argv=["sleep", "302"])

    anyio.run(session)

    # without --workspace, the server is bound to the workspace owning the current directory
    tree_c = Path(Sandbox.open(repo).record("c").path)

    async def from_worktree() -> None:
        params = StdioServerParameters(command=console_script(), args=["mcp"], env={**os.environ, **GIT_ENV},
                                       cwd=str(tree_c))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            res = await session.call_tool("workspace_info", {})
            assert not res.is_error and res.structured_content and res.structured_content["name"] == "c"

    anyio.run(from_worktree)
    assert cli(tree_c.parent, "mcp", check=2).stderr.count("\n") == 1      # no workspace here: one line

    # a request that passes the gate; stale once the branch moves; `sandbox merge` closes it
    add_revision(tree_c, "c001", "0001", 'op.add_column("posts", sa.Column("body", sa.Text()))', commit=False)
    cli(repo, "exec", "c", "--", "sh", "-c", "git add -A && git commit -qm 'c001: body'")
    req = json.loads(cli(repo, "merge-request", "c", "--note", "adds posts.body", "--json").stdout)
    assert req["ok"] and req["command"] == "sandbox merge c"
    listed = json.loads(cli(repo, "merge", "--requests", "--json").stdout)
    assert [(r["workspace"], r["stale"]) for r in listed] == [("c", False)]
    cli(repo, "exec", "c", "--", "sh", "-c", "echo notes > NOTES.md && git add -A && git commit -qm notes")
    assert json.loads(cli(repo, "merge", "--requests", "--json").stdout)[0]["stale"]
    assert json.loads(cli(repo, "merge", "c", "--json").stdout)["merged"]
    assert json.loads(cli(repo, "merge", "--requests", "--json").stdout) == []
    pid = Sandbox.open(repo).config.project_id
    container = docker_client.containers.list(filters={"label": [f"dev.sandbox.project={pid}",
                                                                   "dev.sandbox.workspace=a",
                                                                   "dev.sandbox.role=workspace"]})[0]
    assert not any("sleep 30" in " ".join(p) for p in container.top()["Processes"])    # 300, 301, 302
    # the brief on the command line
    assert cli(repo, "brief", "c").stdout.strip() == "Write the docs."
    brief_file = repo.parent / "brief.md"
    brief_file.write_text("From a file.\n")
    cli(repo, "brief", "c", f"@{brief_file}")
    assert cli(repo, "brief", "c").stdout.strip() == "From a file."
    assert cli(repo, "brief", "c", "@/nonexistent/brief.md", check=2).stderr.startswith("error: brief @")
    cli(repo, "brief", "c", "")
    assert json.loads(cli(repo, "brief", "c", "--json").stdout)["brief"] is None
    # `migrate up` from the command line: a no-op says so
    assert "nothing to apply" in cli(repo, "migrate", "up", "a").stdout
    assert cli(repo, "migrate", "up", "a", "--to", "nope", check=2).stderr
