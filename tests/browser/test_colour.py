"""The job page colours a log line by what it says, not by the stream it came on, and the
catalog page offers Install only where the service would take it. In Chromium, against the
real service and real makepkg builds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from .conftest import screenshot
from .log_lines import LINE_MEANINGS

pytestmark = [pytest.mark.docker, pytest.mark.browser]

BUILD_S = 120_000  # ms: a real build, its image start and makepkg included
RED, AMBER, PLAIN = "rgb(255, 123, 114)", "rgb(240, 183, 47)", "rgb(230, 237, 243)"

# What cargo and CMake print while all is well goes to stderr, among one error and one warning.
NOISY = """pkgname=noisy
pkgver=1.0
pkgrel=1
arch=('any')

build() {
    echo "-- Configuring done (0.4s)" >&2
    echo "[ 50%] Building CXX object CMakeFiles/llama.dir/llama.cpp.o" >&2
    echo "   Compiling noisy v1.0.0 (/build/src)" >&2
    echo 'warning: unused variable: `x`' >&2
    echo "error[E0308]: mismatched types" >&2
    echo "    Finished release profile [optimized] target(s) in 2.31s" >&2
    echo "plain stdout line"
    @END@
}

package() {
    true
}
"""


def pkgbuild_dir(tmp_path: Path, name: str, end: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "PKGBUILD").write_text(NOISY.replace("@END@", end))
    return folder


async def styles(page: Page, selector: str) -> list[dict[str, str]]:
    """Each match's text and computed colour (and left border, which marks stderr)."""
    return list(
        await page.locator(selector).evaluate_all(
            """els => els.map(e => ({
                text: e.textContent.trim(),
                color: getComputedStyle(e).color,
                border: getComputedStyle(e).borderLeftWidth,
            }))"""
        )
    )


async def test_a_log_line_is_coloured_by_what_it_says_not_by_its_stream(
    page: Page, serve: Callable[..., Any], tmp_path: Path
) -> None:
    async with serve() as service:
        passed = await service.submit(pkgbuild_dir(tmp_path, "passes", "true"))
        failed = await service.submit(pkgbuild_dir(tmp_path, "fails", "false"))

        await page.goto(f"{service.url}/jobs/{passed}")
        await expect(page.locator("#ending")).to_contain_text("succeeded", timeout=BUILD_S)
        log = page.locator("#log")
        await expect(log).to_contain_text("plain stdout line")
        # Exactly the one error line is an error, the one warning a warning.
        errors = await styles(page, "#log .is-error")
        assert [e["text"] for e in errors] == ["error[E0308]: mismatched types"]
        assert errors[0]["color"] == RED
        warnings = await styles(page, "#log .is-warning")
        # (makepkg's own "==> WARNING: Skipping dependency checks." is one too.)
        ours = [w["text"] for w in warnings if not w["text"].startswith("==> WARNING: ")]
        assert ours == ["warning: unused variable: `x`"]
        assert {w["color"] for w in warnings} == {AMBER}
        # The stderr progress is plain text, beside a thin rule that says which stream it was.
        stderr = await styles(page, "#log .stderr")
        said = "\n".join(s["text"] for s in stderr)
        for line in ("-- Configuring done", "[ 50%] Building CXX", "Compiling noisy", "Finished"):
            assert line in said
        assert {(s["color"], s["border"]) for s in stderr} == {(PLAIN, "2px")}
        await expect(log.locator(".stderr .is-error")).to_have_count(1)
        stdout = await log.evaluate(
            "e => [...e.childNodes].filter(n => n.nodeType === Node.TEXT_NODE)"
            ".map(n => n.textContent).join('')"
        )
        assert "plain stdout line" in stdout
        # makepkg's steps are marked as progress, whichever stream carried them.
        steps = await styles(page, "#log .is-progress")
        assert any(s["text"].startswith("==> Starting build()") for s in steps)
        assert {s["color"] for s in steps} == {"rgb(121, 192, 255)"}
        await screenshot(page, "job-log-meanings")

        # A build that fails: makepkg's ERROR, the non-zero exit and the service's verdict.
        await page.goto(f"{service.url}/jobs/{failed}")
        await expect(page.locator("#ending")).to_contain_text("failed", timeout=BUILD_S)
        await expect(log.locator(".is-error").last).to_contain_text("failed")
        errors = await styles(page, "#log .is-error")
        texts = [e["text"] for e in errors]
        assert texts[0] == "error[E0308]: mismatched types"
        assert any(t.startswith("==> ERROR: A failure occurred in build()") for t in texts)
        assert any("exited with code" in t for t in texts)
        assert {e["color"] for e in errors} == {RED}
        await screenshot(page, "job-log-failed")


async def test_the_table_of_meanings_in_the_browser(
    page: Page, serve: Callable[..., Any], tmp_path: Path
) -> None:
    async with serve(catalog=str(tmp_path)) as service:
        await page.goto(service.url)
        meanings = await page.evaluate(
            """async lines => {
                const { meaningOf } = await import("/assets/log.js");
                return lines.map((line) => meaningOf(line));
            }""",
            [line for line, _ in LINE_MEANINGS],
        )
        wrong = [
            (line, want, got)
            for (line, want), got in zip(LINE_MEANINGS, meanings, strict=True)
            if got != want
        ]
        assert wrong == []


async def test_the_catalog_shows_why_metal_is_refused_instead_of_install(
    page: Page, serve: Callable[..., Any]
) -> None:
    async with serve() as service:
        await page.goto(f"{service.url}/catalog")
        catalog = page.locator("section[aria-labelledby=catalog-title]")
        metal = catalog.locator("tr", has_text="metal-hello")
        await expect(metal).to_contain_text("macOS")
        await expect(metal.get_by_role("button")).to_have_count(0)
        await expect(page.get_by_role("button", name="Install metal-hello")).to_have_count(0)
        await expect(page.get_by_role("button", name="Install hello-c")).to_be_visible()
        await expect(
            page.get_by_role("button", name="Install rust-hello", exact=True)
        ).to_be_visible()
        await metal.scroll_into_view_if_needed()
        await screenshot(page, "catalog-refused")
