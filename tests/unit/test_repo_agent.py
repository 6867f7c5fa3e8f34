"""The repository key's gpg-agent (gpg starts one for its home as the key is made) ends with
the app, however its start went: it would outlive the service, and every test's app."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend
from orchestrator.errors import OrchestratorError

from .. import waiting


def agents(home: Path) -> list[int]:
    """The live gpg-agents of ``home`` (a dead one waiting to be reaped has no command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:
            continue
        if args and args[0].endswith(b"gpg-agent") and str(home).encode() in args:
            found.append(int(proc.name))
    return found


async def no_agent_left(home: Path) -> None:
    await waiting.until(lambda: agents(home), lambda pids: not pids, what=f"no agent of {home}")


async def test_an_app_that_started_leaves_no_agent(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", instance_id="unit")
    runner = web.AppRunner(create_app(settings, backend=FakeBackend()))
    await runner.setup()
    assert agents(settings.data_dir / "gnupg"), "the test needs an agent to have started"
    await runner.cleanup()
    await no_agent_left(settings.data_dir / "gnupg")


async def test_an_app_whose_repository_failed_to_open_leaves_no_agent(tmp_path: Path) -> None:
    """The key is made, then re-signing what a repository serves fails (its database is
    gone): the start fails, and the cleanup that follows (as ``run_app`` does it) ends the
    agent all the same."""
    settings = Settings(data_dir=tmp_path / "data", instance_id="unit")
    broken = settings.repo_dir / "cpu" / settings.repo_arch
    (broken / "current").mkdir(parents=True)
    runner = web.AppRunner(create_app(settings, backend=FakeBackend()))
    with pytest.raises((OrchestratorError, OSError)):
        await runner.setup()
    await runner.cleanup()
    await no_agent_left(settings.data_dir / "gnupg")
