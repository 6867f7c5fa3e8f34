"""The CLI is a light client: importing and running it loads none of the service's engine
dependencies (docker, tenacity, pydantic-settings), and the package's public names still
resolve lazily, as ``__all__`` and the type checker see them."""

from __future__ import annotations

import ast
import asyncio
import os
import sys
from pathlib import Path

from aiohttp.test_utils import TestServer

import orchestrator
from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend

from ..conftest import PKGBUILDS

ROOT = Path(orchestrator.__file__).parent.parent
HEAVY = ("docker", "tenacity", "pydantic_settings")

# Runs in a fresh interpreter: which heavy modules the import loaded, then which the command did.
PROBE = f"""
import sys
import orchestrator.cli
print("after import:", sorted(m for m in {HEAVY!r} if m in sys.modules), flush=True)
code = orchestrator.cli.main(sys.argv[1:])
print("after command:", sorted(m for m in {HEAVY!r} if m in sys.modules), flush=True)
sys.exit(code)
"""


async def probe(*argv: str) -> tuple[int, str]:
    # The app serves in this process's loop, so the client runs as an asyncio subprocess.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        *argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_cli_builds_without_loading_the_engine_dependencies(
    settings: Settings, tmp_path: Path
) -> None:
    async with TestServer(create_app(settings, backend=FakeBackend()), host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        code, out = await probe(
            "build", str(PKGBUILDS / "hello-c"), "--url", url, "--follow", "-o", str(tmp_path)
        )
    assert code == 0, out
    assert "after import: []" in out
    assert "after command: []" in out
    assert list(tmp_path.glob("*.pkg.tar.gz")), out  # the fake build made one


def test_every_public_name_resolves_from_the_module_it_is_declared_in() -> None:
    tree = ast.parse(Path(orchestrator.__file__).read_text())
    declared: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module is not None
                for alias in stmt.names:
                    declared[alias.name] = stmt.module
    lazy = orchestrator._LAZY
    assert declared == lazy
    assert sorted(orchestrator.__all__) == sorted([*lazy, "__version__"])
    for name, module in lazy.items():
        source = __import__(f"orchestrator.{module}", fromlist=[name])
        assert getattr(orchestrator, name) is getattr(source, name)
        assert name in dir(orchestrator)
