"""What the API refuses before a handler acts, and what it never writes down.

Over real HTTP on 127.0.0.1 (aiohttp's TestServer) with the whole app on the fake backend: the
Content-Type a browser cannot send without a CORS preflight, cross-origin browser requests that
change state, blank tokens, tokens in the access log, and the OpenAPI document's ``security``
against what the auth middleware really enforces.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.web import is_dashboard_route

from .. import waiting
from ..conftest import PKGBUILDS
from ..integration.service import tar_dir

TOKEN = "s3cret-token"


@asynccontextmanager
async def serve(
    settings: Settings, backend: FakeBackend | None = None
) -> AsyncIterator[TestClient]:
    app = create_app(settings, backend=backend or FakeBackend())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


def with_token(settings: Settings) -> Settings:
    return Settings(data_dir=settings.data_dir, instance_id=settings.instance_id, api_token=TOKEN)


def own_origin(client: TestClient) -> str:
    return f"http://127.0.0.1:{client.port}"


async def job_total(client: TestClient) -> int:
    return int((await (await client.get("/v1/jobs")).json())["total"])


# -- Content-Type ----------------------------------------------------------------------------

# Every type a page can POST cross-origin without a preflight, and no type at all.
SIMPLE_TYPES = [
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
]


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
async def test_build_upload_without_a_tar_type_is_415(
    settings: Settings, content_type: str | None
) -> None:
    body = tar_dir(PKGBUILDS / "hello-c")
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with serve(settings) as client:
        response = await client.post(
            "/v1/builds", data=body, headers=headers, skip_auto_headers={"Content-Type"}
        )
        answer = await response.json()
        assert response.status == 415, answer
        assert "application/gzip" in answer["message"]
        assert await job_total(client) == 0


@pytest.mark.parametrize(
    "content_type", ["application/gzip", "application/x-tar", "application/octet-stream"]
)
async def test_build_upload_with_a_tar_type_is_accepted(
    settings: Settings, content_type: str
) -> None:
    gz = content_type == "application/gzip"
    async with serve(settings) as client:
        response = await client.post(
            "/v1/builds",
            data=tar_dir(PKGBUILDS / "hello-c", gz=gz),
            headers={"Content-Type": content_type},
        )
        assert response.status == 201, await response.text()


INSTALL = b'{"operation": "worker_install", "worker_id": "hello-c"}'


@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
async def test_job_without_json_type_is_415(settings: Settings, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with serve(settings) as client:
        response = await client.post(
            "/v1/jobs", data=INSTALL, headers=headers, skip_auto_headers={"Content-Type"}
        )
        answer = await response.json()
        assert response.status == 415, answer
        assert answer["error"] == "unsupported_media_type"
        assert "Content-Type: application/json" in answer["message"]
        assert await job_total(client) == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
async def test_job_with_json_type_is_accepted(settings: Settings, content_type: str) -> None:
    async with serve(settings) as client:
        response = await client.post(
            "/v1/jobs", data=INSTALL, headers={"Content-Type": content_type}
        )
        assert response.status == 201, await response.text()


# -- cross-origin browser requests -----------------------------------------------------------

REFUSED: list[dict[str, str]] = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port on localhost is the same site
    {"Origin": "http://evil.example"},
    {"Origin": "null"},  # sandboxed frames, file:// pages, some redirects
    {"Origin": "http://127.0.0.1:1"},  # same host, another port: another origin
    {"Origin": "http://127.0.0.1"},
    {"Origin": "{own}/"},  # not an origin's serialisation
    {"Sec-Fetch-Site": "cross-site", "Origin": "{own}"},  # the browser knows better
]
ALLOWED: list[dict[str, str]] = [
    {},  # curl, the CLI, CI: no browser, nothing to forge
    {"Origin": "{own}"},
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "none"},  # typed into the address bar
    # Behind a TLS-terminating proxy the browser's origin is not the one the service sees.
    {"Sec-Fetch-Site": "same-origin", "Origin": "https://builds.example.com"},
]


def fill(headers: dict[str, str], client: TestClient) -> dict[str, str]:
    return {k: v.replace("{own}", own_origin(client)) for k, v in headers.items()}


# (method, path, body, content type, status when allowed)
STATE_CHANGING: list[tuple[str, str, bytes | None, str | None, int]] = [
    ("POST", "/v1/jobs/nope/cancel", None, None, 404),
    ("POST", "/v1/jobs", INSTALL, "application/json", 201),
    ("POST", "/v1/builds", tar_dir(PKGBUILDS / "hello-c"), "application/gzip", 201),
    ("DELETE", "/v1/models/nope.gguf", None, None, 404),
    ("DELETE", "/v1/workers/nope", None, None, 404),
    ("PUT", "/v1/jobs", None, None, 405),
    ("PATCH", "/v1/jobs/nope", None, None, 405),
]


@pytest.mark.parametrize("headers", REFUSED, ids=str)
@pytest.mark.parametrize("route", STATE_CHANGING, ids=lambda r: f"{r[0]} {r[1]}")
async def test_cross_origin_state_change_is_403(
    settings: Settings,
    route: tuple[str, str, bytes | None, str | None, int],
    headers: dict[str, str],
) -> None:
    method, path, body, content_type, _ = route
    async with serve(settings) as client:
        sent = fill(headers, client) | ({"Content-Type": content_type} if content_type else {})
        response = await client.request(method, path, data=body, headers=sent)
        answer = await response.json()
        assert response.status == 403, answer
        assert answer["error"] == "cross_origin"
        assert "Access-Control-Allow-Origin" not in response.headers
        assert await job_total(client) == 0


@pytest.mark.parametrize("headers", ALLOWED, ids=str)
@pytest.mark.parametrize("route", STATE_CHANGING, ids=lambda r: f"{r[0]} {r[1]}")
async def test_same_origin_and_non_browser_state_change_passes(
    settings: Settings,
    route: tuple[str, str, bytes | None, str | None, int],
    headers: dict[str, str],
) -> None:
    method, path, body, content_type, allowed = route
    async with serve(settings) as client:
        sent = fill(headers, client) | ({"Content-Type": content_type} if content_type else {})
        response = await client.request(method, path, data=body, headers=sent)
        assert response.status == allowed, await response.text()


async def test_cross_site_cancel_leaves_the_job_running(settings: Settings) -> None:
    # A bodiless POST is a "simple" request: any page can send it with no preflight.
    backend = FakeBackend(Script([("stdout", "started", 0), ("stdout", "done", 60)]))
    async with serve(settings, backend) as client:
        submitted = await client.post(
            "/v1/builds",
            data=tar_dir(PKGBUILDS / "hello-c"),
            headers={"Content-Type": "application/gzip"},
        )
        job = (await submitted.json())["job_id"]
        forged = await client.post(
            f"/v1/jobs/{job}/cancel",
            headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert forged.status == 403
        still = await (await client.get(f"/v1/jobs/{job}")).json()
        assert still["status"] in ("queued", "running"), still
        assert still["cancel_reason"] is None
        mine = await client.post(
            f"/v1/jobs/{job}/cancel",
            headers={"Origin": own_origin(client), "Sec-Fetch-Site": "same-origin"},
        )
        assert mine.status == 200
        assert (await mine.json())["status"] == "cancelled"


async def test_cross_origin_reads_are_refused_and_get_no_cors_headers(settings: Settings) -> None:
    """Another site's reads are refused (see test_web for links the user follows), never with
    Access-Control-Allow-Origin, and a preflight for anything beyond a simple request fails."""
    cross = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    async with serve(settings) as client:
        for path in ("/v1/jobs", "/v1/jobs/nope/stream", "/v1/jobs/nope/artifacts", "/health"):
            response = await client.get(path, headers=cross)
            assert response.status == 403, path
            assert not [h for h in response.headers if h.lower().startswith("access-control-")]
        preflight = await client.options(
            "/v1/jobs",
            headers={
                **cross,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert not 200 <= preflight.status < 300
        assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_cross_origin_refusal_holds_with_a_token(settings: Settings) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(with_token(settings)) as client:
        forged = await client.post(
            "/v1/jobs/nope/cancel", headers={**auth, "Sec-Fetch-Site": "cross-site"}
        )
        assert forged.status == 403
        mine = await client.post("/v1/jobs/nope/cancel", headers=auth)
        assert mine.status == 404


# -- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [" ", "   ", "\t", "\n", " \r\n "])
def test_blank_token_is_refused(tmp_path: Path, blank: str) -> None:
    with pytest.raises(ValidationError, match="blank"):
        Settings(data_dir=tmp_path, api_token=blank)


def test_empty_token_means_none(tmp_path: Path) -> None:
    # compose passes ${ORCHESTRATOR_API_TOKEN:-} through as "" when it is unset.
    assert Settings(data_dir=tmp_path, api_token="").api_token is None
    token = Settings(data_dir=tmp_path, api_token=TOKEN).api_token
    assert token is not None and token.get_secret_value() == TOKEN


def test_serve_refuses_to_start_with_a_blank_token(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ORCHESTRATOR_API_TOKEN": " ",
        "ORCHESTRATOR_DATA_DIR": str(tmp_path),
        "ORCHESTRATOR_PORT": "0",
        # Should the token get past the settings, the start fails here instead, never on
        # the real daemon.
        "ORCHESTRATOR_DOCKER_URL": f"unix://{tmp_path}/no-docker.sock",
    }
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "ORCHESTRATOR_API_TOKEN" in done.stderr
    assert "blank" in done.stderr
    assert "Traceback" not in done.stderr


async def access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    # The access log is written once the answer is out, so it may trail the client a little.
    return await waiting.until(
        lambda: [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"],
        lambda lines: len(lines) >= count,
        timeout_s=1,
        what=f"{count} access log lines",
    )


async def raw_get(client: TestClient, target: str, **headers: str) -> int:
    """GET with the request target sent byte for byte (the client would tidy its escapes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Connection: close\r\n\r\n".encode()
    )
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_access_log_redacts_access_token(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    secret = "tok-" + os.urandom(8).hex()
    referer = f"http://127.0.0.1/?access_token={secret}"
    async with serve(with_token(settings)) as client:
        sent = [
            (f"/v1/jobs/nope/stream?access_token={secret}&last_event_id=7", 401),
            # The right token under an escaped name is a token too: 404 means it got past auth.
            (
                f"/v1/jobs/nope/stream?last_event_id=7&ACCESS_TOKEN={secret}&access%5Ftoken={TOKEN}",
                404,
            ),
            (f"/v1/jobs/nope/stream?access_token={TOKEN}", 404),
        ]
        for target, status in sent:
            assert await raw_get(client, target, Referer=referer) == status
        lines = await access_lines(caplog, len(sent))
        records = [r for r in caplog.records if r.name == "aiohttp.access"]
    text = "\n".join(lines)
    for token in (secret, TOKEN):
        assert token not in text
        assert all(token not in repr(vars(r)) for r in records)  # nor in a record's extras
    # Still useful: the other parameters, the client, the status, the Referer.
    assert '"GET /v1/jobs/nope/stream?access_token=[redacted]&last_event_id=7 HTTP/1.1" 401' in text
    assert "?last_event_id=7&ACCESS_TOKEN=[redacted]&access%5Ftoken=[redacted] HTTP/1.1" in text
    assert '"http://127.0.0.1/?access_token=[redacted]"' in text
    assert re.search(r'^127\.0\.0\.1 "GET .*" 401 ', lines[0]), lines[0]


# -- the OpenAPI document's security ---------------------------------------------------------


def routes(app: web.Application) -> list[tuple[str, str]]:
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        # The dashboard's pages and assets are for browsers, not part of the API's document.
        if route.method != "HEAD" and path and not is_dashboard_route(str(path)):
            found.append((route.method, str(path)))
    return sorted(found)


async def test_openapi_security_matches_what_auth_enforces(settings: Settings) -> None:
    async with serve(with_token(settings)) as client:
        doc: dict[str, Any] = await (await client.get("/openapi.json")).json()
        assert client.app is not None
        served = routes(client.app)
        documented = sorted(
            (method.upper(), path) for path, item in doc["paths"].items() for method in item
        )
        assert documented == served
        wrong = []
        for method, path in served:
            operation = doc["paths"][path][method.lower()]
            needs_token = bool(operation.get("security", doc["security"]))
            url = re.sub(r"\{[^}]+\}", "x", path)
            response = await client.request(method, url)
            refused = response.status == 401
            if refused != needs_token or ("401" in operation["responses"]) != needs_token:
                wrong.append((method, path, response.status, "401"))
            # And the cross-origin refusal is documented exactly where it happens.
            cross = await client.request(method, url, headers={"Sec-Fetch-Site": "cross-site"})
            if (cross.status == 403) != ("403" in operation["responses"]):
                wrong.append((method, path, cross.status, "403"))
        assert wrong == []


# -- DNS rebinding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:7835", "10.0.0.5:7835", "", "127.0.0.1:80@evil.example"],
)
async def test_without_a_token_only_loopback_host_names_are_served(
    settings: Settings, host: str
) -> None:
    # A page whose own domain was made to resolve to 127.0.0.1 is "same origin" to the
    # browser: only the Host header it sends gives it away.
    async with serve(settings) as client:
        response = await client.get("/v1/jobs", headers={"Host": host})
        body = await response.json()
        assert response.status == 403, body
        assert body["error"] == "host_not_allowed"
        assert "ORCHESTRATOR_ALLOWED_HOSTS" in body["message"]


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:7835", "127.0.0.1:9", "127.8.9.10", "[::1]:7835", "a.localhost"],
)
async def test_loopback_host_names_are_served_without_a_token(
    settings: Settings, host: str
) -> None:
    async with serve(settings) as client:
        assert (await client.get("/v1/jobs", headers={"Host": host})).status == 200


async def test_allowed_hosts_and_a_token_lift_the_host_rule(settings: Settings) -> None:
    allowed = settings.model_copy(update={"allowed_hosts": ["builds.internal"]})
    async with serve(allowed) as client:
        ok = await client.get("/v1/jobs", headers={"Host": "builds.internal:7835"})
        assert ok.status == 200
    async with serve(with_token(settings)) as client:
        response = await client.get(
            "/v1/jobs",
            headers={"Host": "evil.example", "Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status == 200
