"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the real
service (aiohttp's server on 127.0.0.1, the Docker backend, real makepkg).

Playwright cannot download its own browser here, so it starts ``/usr/bin/chromium``
(``scripts/setup`` installs it). Screenshots go to ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.build.runner import INSTANCE_LABEL

from ..integration.conftest import remove_volumes
from ..integration.service import tar_dir

pytestmark = [pytest.mark.docker, pytest.mark.browser]

CHROMIUM = Path(os.environ.get("ORCHESTRATOR_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).parents[2] / "test-artifacts" / "screenshots"


@dataclass
class Service:
    url: str
    token: str | None
    settings: Settings

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def submit(self, src: Path, **params: Any) -> str:
        """Submit a build through the API (the browser tests' own submits go through the page)."""
        async with ClientSession() as http:
            response = await http.post(
                f"{self.url}/v1/builds",
                params={k: str(v) for k, v in params.items()},
                data=tar_dir(src),
                headers={"Content-Type": "application/gzip", **self.headers()},
            )
            body = await response.json()
            assert response.status == 201, body
            return str(body["job_id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        async with ClientSession() as http:
            response = await http.get(f"{self.url}/v1/jobs/{job_id}", headers=self.headers())
            return dict(await response.json())


@asynccontextmanager
async def running(settings: Settings, client: docker.DockerClient) -> AsyncIterator[Service]:
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        token = settings.api_token.get_secret_value() if settings.api_token else None
        yield Service(f"http://127.0.0.1:{server.port}", token, settings)
    finally:
        await server.close()
    # One that vanishes between the listing and its inspection was removed, not left behind.
    left = client.containers.list(
        all=True,
        filters={"label": f"{INSTANCE_LABEL}={settings.instance_id}"},
        ignore_removed=True,
    )
    assert left == [], f"containers left behind: {[c.name for c in left]}"
    remove_volumes(client, settings.instance_id)


@pytest.fixture
def serve(settings: Settings, docker_client: docker.DockerClient) -> Callable[..., Any]:
    """``async with serve(**setting_overrides) as service``: the real app over real HTTP."""

    def start(**overrides: Any) -> Any:
        # A loaded CI machine can take longer than the default to read a PKGBUILD; these tests
        # are about the page, not that deadline.
        fields = {**settings.model_dump(), "inspect_timeout_s": 60.0, **overrides}
        return running(Settings(**fields), docker_client)

    return start


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, through Playwright; closed at the end."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        await browser.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as browser:
        yield browser


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A tab 1000 px wide; a script error on any page fails the test."""
    context = await browser.new_context(viewport={"width": 1000, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await context.close()
    assert errors == []


@dataclass
class Proxy:
    url: str
    resumed_from: list[str | None]  # each stream request's Last-Event-ID


@asynccontextmanager
async def cutting_proxy(target: str, *, cut_after_bytes: int) -> AsyncIterator[Proxy]:
    """A reverse proxy that drops the first stream it relays after ``cut_after_bytes`` (most
    likely in the middle of an event), as a flaky network or a restarting proxy would."""
    proxy = Proxy("", [])
    hop = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        stream = request.path.endswith("/stream")
        if stream:
            proxy.resumed_from.append(request.headers.get("Last-Event-ID"))
        cut = stream and len(proxy.resumed_from) == 1
        async with http.request(
            request.method, target + request.path_qs, headers=headers, data=await request.read()
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in hop},
            )
            await response.prepare(request)
            sent = 0
            async for chunk in upstream.content.iter_any():
                if cut and sent + len(chunk) > cut_after_bytes:
                    await response.write(chunk[: cut_after_bytes - sent])
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    async with ClientSession(auto_decompress=False) as http:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        proxy.url = f"http://127.0.0.1:{server.port}"
        try:
            yield proxy
        finally:
            await server.close()


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
