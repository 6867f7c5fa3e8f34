"""The dashboard against odd addresses and an impatient user, in Chromium (no builds: the
service answers from its empty store, so these take a few seconds). An empty catalog: the
shipped one's PKGBUILDs are read by makepkg at start-up, and these tests end before that would."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

pytestmark = [pytest.mark.docker, pytest.mark.browser]


async def test_a_job_address_that_is_not_valid_percent_encoding_shows_not_found(
    page: Page, serve: Callable[..., Any], tmp_path: Path
) -> None:
    # decodeURIComponent throws on these; the page must say so, not stay blank (the page
    # fixture fails the test on any uncaught script error).
    async with serve(catalog=str(tmp_path)) as service:
        for tail in ("%", "%E0%A4%A", "%ZZ"):
            await page.goto(f"{service.url}/jobs/{tail}")
            await expect(page.locator("h1")).to_have_text("Not found")


async def test_escape_on_the_token_prompt_never_leaves_the_page_without_it(
    page: Page, serve: Callable[..., Any], tmp_path: Path
) -> None:
    async with serve(api_token="browser-s3cret", catalog=str(tmp_path)) as service:
        await page.goto(service.url)
        dialog = page.locator("#token-dialog")
        await expect(dialog).to_be_visible()
        for _ in range(3):
            await page.keyboard.press("Escape")
            await expect(dialog).to_be_visible()
        await page.fill("#token-input", "browser-s3cret")
        await page.keyboard.press("Enter")
        await expect(dialog).to_be_hidden()
        await expect(page.locator("main")).to_contain_text("No jobs yet.")


async def test_markup_cannot_be_put_into_the_page_as_a_string(
    page: Page, serve: Callable[..., Any], tmp_path: Path
) -> None:
    """Trusted Types: if a future change wrote data with innerHTML, the browser refuses it."""
    async with serve(catalog=str(tmp_path)) as service:
        await page.goto(service.url)
        await expect(page.locator("main")).to_contain_text("No jobs yet.")
        refused = await page.evaluate(
            """() => {
              const box = document.createElement("div");
              try { box.innerHTML = "<img src=x>"; } catch (e) { return e.name; }
              return box.childElementCount ? "assigned" : "empty";
            }"""
        )
        assert refused == "TypeError"


MARKUP = '<img src=x onerror="document.body.dataset.pwned=1">'
HOSTILE_PKGBUILD = f"""\
pkgname=markup
pkgver=1.0
pkgrel=1
pkgdesc='{MARKUP} </pre><script>document.body.dataset.pwned=1</script>'
arch=('any')

build() {{
    echo '<script>document.body.dataset.pwned=1</script>{MARKUP}'
    head -c 65536 /dev/zero | tr '\\0' L; echo
    echo '</span></pre>{MARKUP}' >&2
}}

package() {{
    true
}}
"""


async def test_markup_from_a_build_is_shown_as_text_and_never_runs(
    page: Page, serve: Callable[..., Any], tmp_path: Path
) -> None:
    """What the build controls (its log, one 64 KiB line among it, its .SRCINFO) arrives as
    text: no element is made from it and nothing in it runs. A real build (~10 s)."""
    src = tmp_path / "markup"
    src.mkdir()
    (src / "PKGBUILD").write_text(HOSTILE_PKGBUILD)
    empty = tmp_path / "catalog"
    empty.mkdir()
    async with serve(catalog=str(empty)) as service:
        job_id = await service.submit(src)
        await page.goto(f"{service.url}/jobs/{job_id}")
        await expect(page.locator("#ending")).to_contain_text("succeeded", timeout=120_000)
        log = page.locator("#log")
        await expect(log).to_contain_text("<script>document.body.dataset.pwned=1</script>")
        # Not `.last`: fakeroot may print its own line on stderr after the build's.
        hostile_stderr = log.locator(".stderr").filter(has_text=f"</span></pre>{MARKUP}")
        await expect(hostile_stderr).to_have_count(1)
        await expect(page.locator("pre.srcinfo")).to_contain_text(MARKUP)
        text = await log.evaluate("e => e.textContent")
        assert "\n" + "L" * 65536 + "\n" in text
        assert await page.locator("main img, main script").count() == 0
        assert await page.evaluate("document.body.dataset.pwned") is None


TAR_JS = """async () => {
  const { tar } = await import('/assets/tar.js');
  const entries = [
    // A file dated before 1970 (an odd filesystem, an old archive unpacked as it was).
    { path: 'PKGBUILD', file: new File(['pkgname=x'], 'PKGBUILD', { lastModified: -5000 }) },
    // Past ustar's 100-byte name, in two-byte characters, split into prefix and name.
    { path: 'é'.repeat(60) + '/' + 'ü'.repeat(45), file: new File(['deep'], 'u') },
    { path: 'after', file: new File(['last'], 'after') },
  ];
  return Array.from(new Uint8Array(await (await tar(entries)).arrayBuffer()));
}"""


async def test_the_pages_tar_writer_loses_no_file_to_an_odd_date_or_a_long_name(
    page: Page, serve: Callable[..., Any], tmp_path: Path
) -> None:
    """A header a reader cannot parse ends a tar archive there, silently for Python's tarfile:
    every file after it would be gone. The page's writer must not make one."""
    async with serve(catalog=str(tmp_path)) as service:
        await page.goto(f"{service.url}/submit")
        data = bytes(await page.evaluate(TAR_JS))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}  # type: ignore[union-attr]
        assert all(m.mtime >= 0 for m in archive.getmembers())
    assert files == {
        "PKGBUILD": b"pkgname=x",
        "é" * 60 + "/" + "ü" * 45: b"deep",
        "after": b"last",
    }
