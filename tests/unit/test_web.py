"""The dashboard's routes over real HTTP (the whole app on the fake backend): pages and assets
with their content types and security headers, refusals for anything that is not an asset, and
the page's own requests passing the cross-origin guard while another origin's still fail."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import resources

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend
from orchestrator.web import CSP

from ..browser.log_lines import LINE_MEANINGS

STATIC = resources.files("orchestrator.web").joinpath("static")
ASSETS = sorted(p.name for p in STATIC.iterdir() if p.is_file())
TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[TestClient]:
    app = create_app(settings, backend=FakeBackend())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def assert_hardened(headers: Mapping[str, str]) -> None:
    csp = headers["Content-Security-Policy"]
    assert csp == CSP
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/submit", "/catalog", "/jobs/0123abcd"])
async def test_every_page_is_the_shell_as_html_with_a_strict_csp(
    settings: Settings, path: str
) -> None:
    async with serve(settings) as client:
        response = await client.get(path)
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.charset == "utf-8"
        assert_hardened(response.headers)
        text = await response.text()
        assert '<script type="module" src="/assets/app.js"></script>' in text
        # No inline script or style: the CSP would block them, so none may be needed.
        assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", text))
        assert "<style" not in text and " style=" not in text
        assert not re.search(r"<[^>]*\son[a-z]+=", text, re.IGNORECASE)


@pytest.mark.parametrize("name", ASSETS)
async def test_every_asset_is_served_with_its_type(settings: Settings, name: str) -> None:
    async with serve(settings) as client:
        response = await client.get(f"/assets/{name}")
        assert response.status == 200
        assert response.content_type == TYPES[name.rpartition(".")[2]]
        assert_hardened(response.headers)
        assert await response.read() == STATIC.joinpath(name).read_bytes()


def test_the_shipped_files_are_self_contained() -> None:
    """Every module the page imports is shipped, and nothing loads from another host."""
    for name in ASSETS:
        text = STATIC.joinpath(name).read_text()
        for module in re.findall(r'from "\./([^"]+)"', text):
            assert module in ASSETS, f"{name} imports {module}, which is not shipped"
        assert not re.search(r'(src|href)="(https?:)?//|url\(\s*["\']?(https?:)?//|@import', text)


def test_the_scripts_write_no_markup_and_no_inline_style() -> None:
    """The page is built from elements and text nodes (SVG pictures too, with createElementNS):
    no string becomes markup, and no style is written inline, which the CSP would refuse."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
        r"|\.style\b|[\"']style[\"']"
    )
    for name in ASSETS:
        if name.endswith(".js"):
            found = sinks.findall(STATIC.joinpath(name).read_text())
            assert found == [], f"{name}: {found}"


@pytest.mark.parametrize(
    "raw",
    [
        "/assets/nope.js",
        "/assets/_routes.py",
        "/assets/__init__.py",
        "/assets/..%2F_routes.py",
        "/assets/%2e%2e%2f%2e%2e%2fsettings.py",
        "/assets/..%5C_routes.py",
        "/assets/static%2Fapp.js",
        "/assets/%2Fetc%2Fpasswd",
        "/assets/../_routes.py",
        "/assets/",
        "/jobs/a/b",
    ],
)
async def test_anything_but_a_shipped_asset_is_not_found(settings: Settings, raw: str) -> None:
    async with serve(settings) as client:
        response = await client.get(URL(raw, encoded=True), allow_redirects=False)
        assert response.status == 404
        body = await response.json()
        assert body["error"] == "not_found"
        assert "import" not in await response.text()  # no Python source came back


async def test_with_a_token_the_shell_is_served_but_the_api_is_not(settings: Settings) -> None:
    settings = Settings(
        data_dir=settings.data_dir, instance_id=settings.instance_id, api_token="t0ken"
    )
    async with serve(settings) as client:
        assert (await client.get("/")).status == 200
        assert (await client.get("/assets/app.js")).status == 200
        assert (await client.get("/v1/jobs")).status == 401
        ok = await client.get("/v1/jobs", headers={"Authorization": "Bearer t0ken"})
        assert ok.status == 200


async def test_the_pages_own_requests_pass_the_guard_and_another_origins_do_not(
    settings: Settings,
) -> None:
    async with serve(settings) as client:
        own = f"http://127.0.0.1:{client.port}"
        # What Chromium sends for the page's fetch(): Sec-Fetch-Site, or at least Origin.
        for headers in (
            {"Origin": own, "Sec-Fetch-Site": "same-origin"},
            {"Origin": own},
        ):
            response = await client.post("/v1/jobs/nope/cancel", headers=headers)
            assert response.status == 404, headers  # past the guard, to the handler
        for headers in (
            {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
            {"Origin": "http://evil.example"},
            {"Origin": f"http://localhost:{client.port}"},
        ):
            response = await client.post("/v1/jobs/nope/cancel", headers=headers)
            assert response.status == 403, headers
            assert (await response.json())["error"] == "cross_origin"


async def test_another_sites_page_cannot_make_us_answer_a_read_but_a_link_to_us_works(
    settings: Settings,
) -> None:
    """``<script src=/v1/jobs>`` or a no-cors fetch from another site would put our answer in
    that page's process; only the user following a link (a top-level navigation) is served."""
    async with serve(settings) as client:
        for dest, mode in (("script", "no-cors"), ("image", "no-cors"), ("empty", "cors")):
            for site in ("cross-site", "same-site"):
                headers = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode, "Sec-Fetch-Dest": dest}
                for path in ("/v1/jobs", "/v1/catalog/workers", "/v1/jobs/nope/stream"):
                    response = await client.get(path, headers=headers)
                    assert response.status == 403, (path, headers)
                    assert (await response.json())["error"] == "cross_origin"
        # Following a link from elsewhere, and the page's own calls, still work.
        link = {
            "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document",
        }
        own = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
        for headers in (link, own, {}):
            for path in ("/jobs/0123abcd", "/v1/jobs"):
                assert (await client.get(path, headers=headers)).status == 200, (path, headers)
        framed = {**link, "Sec-Fetch-Dest": "iframe"}
        assert (await client.get("/v1/jobs", headers=framed)).status == 403


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/nope", "/health", "/nope"])
async def test_every_answer_is_nosniff_and_same_origin_only(settings: Settings, path: str) -> None:
    async with serve(settings) as client:
        response = await client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cross-Origin-Resource-Policy"] == "same-origin"


async def test_the_catalog_says_which_entries_an_install_would_refuse_and_why(
    settings: Settings,
) -> None:
    """The page offers Install only where the service would take it: the listing carries the
    refusal an install would answer with (metal needs macOS), and null for the rest."""
    async with serve(settings) as client:
        listed = await (await client.get("/v1/catalog/workers")).json()
        refused = {w["id"]: w["refused"] for w in listed["workers"]}
        assert "macOS" in refused.pop("metal-hello")
        assert refused and set(refused.values()) == {None}
        install = await client.post(
            "/v1/jobs", json={"operation": "worker_install", "worker_id": "metal-hello"}
        )
        assert install.status == 422
        one = await (await client.get("/v1/catalog/workers/metal-hello")).json()
        assert one["refused"] == (await install.json())["message"]


def test_the_logs_table_of_meanings_reads_each_sample_line_as_meant() -> None:
    """The table's patterns are plain regular expressions, the same in Python: each sample line
    gets its meaning from the first row that matches (the browser test runs the page's own
    code over the same lines)."""
    source = STATIC.joinpath("log.js").read_text()
    table = source[source.index("export const MEANINGS = [") : source.index("\n];")]
    rows = [(re.compile(p), m) for p, m in re.findall(r'^\s*\[/(.+?)/, "(\w+)"\],', table, re.M)]
    assert len(rows) == table.count('"],')  # every row was read
    assert {m for _, m in rows} == {"error", "warning", "progress"}

    def meaning(line: str) -> str | None:
        return next((m for pattern, m in rows if pattern.search(line)), None)

    wrong = [(line, want, meaning(line)) for line, want in LINE_MEANINGS if meaning(line) != want]
    assert wrong == []
