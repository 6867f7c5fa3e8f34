"""Submit, follow, cancel and download from the dashboard, in Chromium, with real builds."""

from __future__ import annotations

import asyncio
import io
import re
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from .. import waiting
from ..integration.conftest import job_containers
from .conftest import cutting_proxy, screenshot

pytestmark = [pytest.mark.docker, pytest.mark.browser]

BUILD_S = 120_000  # ms: a real build, its image start and makepkg included


async def test_submit_a_folder_follow_it_and_download_its_package(
    page: Page, serve: Callable[..., Any], build_dir: Callable[..., Path], tmp_path: Path
) -> None:
    async with serve() as service:
        await page.goto(f"{service.url}/submit")
        await screenshot(page, "submit")
        src = build_dir("hello-c")
        # Beside the sources, a folder and a path over ustar's 100-byte name field: the page's
        # tar writer must make an archive the service accepts.
        deep = src / "notes" / ("d" * 60)
        deep.mkdir(parents=True)
        (deep / ("f" * 60)).write_text("kept\n")
        pkgbuild = src / "PKGBUILD"
        check = f'grep -q kept "$startdir/notes/{"d" * 60}/{"f" * 60}"'
        pkgbuild.write_text(pkgbuild.read_text().replace("build() {", f"build() {{\n    {check}"))
        await page.set_input_files("#folder", src)
        await page.click("button[type=submit]")

        await page.wait_for_url(f"{service.url}/jobs/*", timeout=BUILD_S)
        job_id = page.url.rsplit("/", 1)[1]
        log = page.locator("#log")
        # makepkg's phases arrive, marked as phases; then the end and the package.
        await expect(log.locator(".is-progress").first).to_contain_text("==> ", timeout=BUILD_S)
        await expect(page.locator("#ending")).to_contain_text("succeeded", timeout=BUILD_S)
        await expect(log).to_contain_text("Finished making: hello-c")
        await expect(page.locator("dl.meta")).to_contain_text("hello-c")
        artifact = page.get_by_role("button", name="hello-c-1.0.0-1-x86_64.pkg.tar", exact=False)
        await expect(artifact).to_be_visible()
        # Not published: the page checks its provenance against the package it downloads.
        await expect(page.locator("#trust-signature")).to_contain_text("Not published")
        check = page.locator("#trust-provenance [data-check]")
        await expect(check).to_have_attribute("data-check", "match")
        await expect(check).to_contain_text("matches the package to download")
        await screenshot(page, "job")

        async with page.expect_download() as waiting:
            await artifact.click()
        download = await waiting.value
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        assert saved.name.startswith("hello-c-1.0.0-1-x86_64.pkg.tar")
        with tarfile.open(saved) as package:  # a real package: makepkg's metadata and the binary
            names = package.getnames()
            assert ".PKGINFO" in names and "usr/bin/hello" in names
            pkginfo = package.extractfile(".PKGINFO")
            assert pkginfo is not None and b"pkgname = hello-c" in pkginfo.read()

        # The list shows it, newest first, ended.
        await page.goto(service.url)
        row = page.locator(f"tr[data-job='{job_id}']")
        await expect(row).to_contain_text("succeeded")
        await expect(row.get_by_role("button", name="Cancel", exact=False)).to_have_count(0)
        await screenshot(page, "jobs")


async def test_a_bad_pkgbuild_shows_makepkgs_message(
    page: Page, serve: Callable[..., Any], tmp_path: Path
) -> None:
    pkgbuild = b"pkgname=bad\npkgver=1-0\npkgrel=1\narch=('any')\npackage() { true; }\n"
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("PKGBUILD")
        info.size = len(pkgbuild)
        tar.addfile(info, io.BytesIO(pkgbuild))
    async with serve() as service:
        await page.goto(f"{service.url}/submit")
        await page.set_input_files("#archive", archive)
        # By keyboard: Tab from the archive field reaches the Build button, Enter submits.
        await page.focus("#archive")
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.textContent") == "Build":
                break
        await page.keyboard.press("Enter")
        alert = page.locator("#submit-result [role=alert]")
        await expect(alert).to_contain_text("422", timeout=BUILD_S)
        await expect(alert).to_contain_text("pkgver is not allowed to contain")
        assert page.url == f"{service.url}/submit"
        await screenshot(page, "submit-422")


async def test_with_a_token_the_page_asks_refuses_a_wrong_one_and_cancels_builds(
    page: Page,
    serve: Callable[..., Any],
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    async with serve(api_token="browser-s3cret", max_concurrent_builds=1) as service:
        running = await service.submit(build_dir("ticker"))
        queued = await service.submit(build_dir("ticker"))  # waits: one build at a time
        await page.set_viewport_size({"width": 400, "height": 800})
        await page.goto(service.url)
        dialog = page.locator("#token-dialog")
        await expect(dialog).to_be_visible()
        await page.fill("#token-input", "wrong")
        await page.keyboard.press("Enter")
        await expect(page.locator("#token-error")).to_contain_text("refused")
        await expect(dialog).to_be_visible()
        await screenshot(page, "token")
        await page.fill("#token-input", "browser-s3cret")
        await page.keyboard.press("Enter")
        await expect(dialog).to_be_hidden()

        # The list follows the jobs without a reload; a queued one is cancelled from it.
        first = page.locator(f"tr[data-job='{running}']")
        second = page.locator(f"tr[data-job='{queued}']")
        await expect(first).to_contain_text("running", timeout=BUILD_S)
        await expect(second).to_contain_text("queued")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 400
        await screenshot(page, "jobs-400px")
        await second.get_by_role("button", name="Cancel").click()
        await expect(second).to_contain_text("cancelled")
        await expect(second.get_by_role("button")).to_have_count(0)
        # The button that had focus is gone: focus goes to the row's link, not to <body>.
        await expect(second.locator("td:nth-child(3) a")).to_be_focused()
        assert (await service.job(queued))["started_at"] is None
        await page.select_option("#status-filter", "cancelled")
        await expect(first).to_have_count(0)
        await expect(second).to_be_visible()
        await page.select_option("#status-filter", "")

        # Its page, reached by a link (the token is kept for the tab: no prompt), follows the
        # stream with the token in its header, and cancels it.
        await first.get_by_role("link", name="ticker 1.0-1").click()
        await page.wait_for_url(f"{service.url}/jobs/{running}")
        log = page.locator("#log")
        await expect(log).to_contain_text("tick 3", timeout=BUILD_S)
        await expect(dialog).to_be_hidden()
        assert job_containers(docker_client, running) != []
        assert await page.evaluate("document.documentElement.scrollWidth") <= 400
        await screenshot(page, "job-running-400px")
        await page.get_by_role("button", name="Cancel").click()
        await expect(page.locator("#ending")).to_contain_text("cancelled", timeout=BUILD_S)
        await expect(page.locator("#job-status")).to_contain_text("cancelled")
        await expect(page.locator("#cancel")).to_be_hidden()
        await expect(page.locator("#ending")).to_be_focused()  # where the gone button's focus went
        await expect(log.locator(".note").last).to_contain_text("cancelled")
        assert job_containers(docker_client, running) == []
        assert (await service.job(running))["status"] == "cancelled"


async def until_the_flood_is_shown(page: Page) -> None:
    await expect(page.locator("#ending")).to_contain_text("succeeded", timeout=BUILD_S)
    await page.wait_for_function(
        "(t => t.includes('\\n200000\\n') && t.includes('\\nflood-end\\n'))"
        "(document.getElementById('log').textContent)",
        timeout=BUILD_S,
    )


async def test_a_200_000_line_log_arrives_whole_and_the_page_stays_usable(
    page: Page, serve: Callable[..., Any], build_dir: Callable[..., Path]
) -> None:
    async with serve() as service:
        job_id = await service.submit(build_dir("flood", lines=200_000))
        # Through a proxy that drops the stream a few hundred KiB in: the page resumes it.
        async with cutting_proxy(service.url, cut_after_bytes=300_000) as proxy:
            await page.goto(f"{proxy.url}/jobs/{job_id}")
            await until_the_flood_is_shown(page)
        assert len(proxy.resumed_from) == 2 and proxy.resumed_from[0] is None
        assert (proxy.resumed_from[1] or "").isdigit(), proxy.resumed_from
        text = await page.locator("#log").evaluate("e => e.textContent")
        # Every stdout line, in order (stderr's line may fall anywhere among them: two pipes).
        lines = text.split("\n")
        numbers = [line for line in lines[lines.index("1") :] if line.isdigit()]
        assert numbers[:200_001] == [str(i) for i in range(1, 200_001)]
        await expect(page.locator("#log .stderr").last).to_contain_text("flood-end")
        # Still answering: scrolling up stops following and offers the way back.
        await page.locator("#log").evaluate("e => { e.scrollTop = 0; }")
        await expect(page.locator("#jump")).to_be_visible()
        await page.locator("#jump").click()
        await expect(page.locator("#jump")).to_be_hidden()
        assert await page.locator("#log").evaluate(
            "e => e.scrollTop + e.clientHeight >= e.scrollHeight - 8"
        )
        await expect(page.locator("#log-lines")).to_contain_text("200,")


@pytest.fixture
async def model_origin() -> AsyncIterator[str]:
    """A model server: ``/whole`` answers at once; ``/half`` sends half over two seconds (the
    service narrates progress as data comes, at most a few times a second), then waits. And
    ``/page``, a page of another origin."""
    size = 4 * 1024 * 1024
    release = asyncio.Event()

    async def whole(request: web.Request) -> web.Response:
        return web.Response(body=b"m" * size, content_type="application/octet-stream")

    async def half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = size
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"m" * (size // 40))
            await asyncio.sleep(0.1)
        await release.wait()
        return response

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>elsewhere</title>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/whole", whole)
    app.router.add_get("/half", half)
    server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
    await server.start_server()
    yield str(server.make_url("/"))
    release.set()
    await server.close()


async def test_workers_and_models_at_400px(
    page: Page, serve: Callable[..., Any], model_origin: str
) -> None:
    async with serve() as service:
        await page.set_viewport_size({"width": 400, "height": 800})
        await page.goto(f"{service.url}/catalog")
        catalog = page.locator("section[aria-labelledby=catalog-title]")
        await expect(catalog).to_contain_text("hello-c")
        await expect(page.get_by_text("None installed.")).to_be_visible()
        # Nothing wider than the screen.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 400
        await screenshot(page, "catalog")

        # Install a worker: a real build, which runs while the models are tried below.
        await page.get_by_role("button", name="Install hello-c").click()
        await page.wait_for_url(f"{service.url}/jobs/*")
        install = page.url.rsplit("/", 1)[1]
        await expect(page.locator("dl.meta")).to_contain_text("worker_install")
        # Another origin's page cannot cancel it (the guard's 403; it ends succeeded below).
        foreign = await page.context.new_page()
        await foreign.goto(model_origin + "page")
        # The request goes out; the answer (the guard's 403) is Cross-Origin-Resource-Policy:
        # same-origin, so Chromium does not even tell that page an answer came.
        sent = await foreign.evaluate(
            "url => fetch(url, {method: 'POST', mode: 'no-cors'})"
            ".then(() => 'answered', () => 'withheld')",
            f"{service.url}/v1/jobs/{install}/cancel",
        )
        assert sent == "withheld"
        await foreign.close()

        # A download that stalls half-way shows its progress and is cancelled.
        await page.goto(f"{service.url}/catalog")
        await page.fill("#model-url", model_origin + "half")
        await page.fill("#model-name", "stalled.gguf")
        await page.get_by_role("button", name="Download").click()
        download = page.locator(".downloads li", has_text="stalled.gguf")
        await expect(download).to_contain_text(re.compile(r"\([1-9][0-9]?%\)"), timeout=BUILD_S)
        shown = re.search(r"\((\d+)%\)", await download.inner_text())
        assert shown is not None
        assert await download.locator("progress").evaluate("e => e.value") == int(shown[1])
        await screenshot(page, "model-download")
        # What the user is typing meanwhile survives the models list being drawn again when
        # that download ends (the form was drawn anew, empty).
        await page.fill("#model-url", model_origin + "whole")
        await page.locator("#models-title").evaluate("e => { e.dataset.before = '1'; }")
        await download.get_by_role("button", name="Cancel").click()
        await expect(download).to_contain_text("cancelled", timeout=BUILD_S)
        await expect(page.locator("#models-title[data-before]")).to_have_count(0)
        await expect(page.locator("#model-url")).to_have_value(model_origin + "whole")
        assert list(service.settings.models_dir.glob("stalled*")) == []

        # One that completes is listed, and can be deleted.
        await page.fill("#model-url", model_origin + "whole")
        await page.fill("#model-name", "whole.gguf")
        await page.get_by_role("button", name="Download").click()
        models = page.locator("section[aria-labelledby=models-title]")
        await expect(models.get_by_role("button", name="Delete whole.gguf")).to_be_visible(
            timeout=BUILD_S
        )
        await expect(models).to_contain_text("4.0 MiB")
        await models.get_by_role("button", name="Delete whole.gguf").click()
        await expect(models).to_contain_text("No models yet.")

        # The worker, once installed, is listed and can be uninstalled.
        installed = await waiting.until(
            lambda: service.job(install),
            lambda job: job["finished_at"],
            timeout_s=BUILD_S / 1000,
            interval_s=0.5,
            what="the worker's install",
        )
        assert installed["status"] == "succeeded"
        await page.reload()
        uninstall = page.get_by_role("button", name="Uninstall hello-c")
        await expect(uninstall).to_be_visible()
        await uninstall.click()
        await expect(page.get_by_text("None installed.")).to_be_visible()
        assert not (service.settings.workers_dir / "hello-c").exists() or not any(
            (service.settings.workers_dir / "hello-c").iterdir()
        )
