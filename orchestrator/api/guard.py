"""What the API refuses before a handler acts, and what it never writes down.

Cross-origin: with no token on loopback (the compose default) any web page a developer visits
could otherwise POST here, since a form or a bodiless ``fetch`` needs no CORS preflight. So a
state-changing request that a browser marks as coming from another origin is refused, whatever
its token. Non-browser clients (curl, the CLI, CI) send neither header and pass. Reads: we send
no CORS headers, so a page's fetch() never sees what we answered; but a ``<script>``, ``<img>``
or no-cors fetch still makes us answer, into the other page's process (side channels, and
whatever the browser's own blocking misses). So a read that the browser says another site's page
asked for is refused too, unless it is the user opening a link (a top-level navigation), and
every answer carries ``nosniff`` and ``Cross-Origin-Resource-Policy: same-origin``.

Access log: aiohttp's default line holds the request's whole query, and the stream takes its
token as ``?access_token=`` (EventSource cannot set headers), so ours redacts it.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import re
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest

from .errors import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIX = "/v1/"  # what a token guards; health, metrics and the OpenAPI document stay open
REPO_PREFIX = "/repo/"  # guarded too; pacman sends the token as a URL's password (Basic)
STREAM_SUFFIX = "/stream"  # the stream also takes its token as ?access_token=
# "none": the user typed the URL or followed a bookmark; no page sent it.
_TRUSTED_FETCH_SITES = frozenset({"same-origin", "none"})
TOKEN_PARAM = "access_token"
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?")
REDACTED = "[redacted]"


def presented_token(request: web.Request) -> str:
    """The ``Authorization`` header; a stream may carry its token as ``?access_token=``
    instead, since EventSource cannot set headers."""
    given = request.headers.get("Authorization", "")
    if given.startswith("Basic ") and request.path.startswith(REPO_PREFIX):
        given = f"Bearer {_basic_password(given)}"
    if not given and request.path.endswith(STREAM_SUFFIX) and TOKEN_PARAM in request.query:
        given = f"Bearer {request.query[TOKEN_PARAM]}"
    return given


def _basic_password(header: str) -> str:
    try:
        user_pass = base64.b64decode(header.removeprefix("Basic "), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ""
    return user_pass.partition(":")[2]


def holds_token(request: web.Request, token: str | None) -> bool:
    """Whether the caller may see what the token guards: it sent the token, or the service
    has none (then every caller can reach the whole API anyway)."""
    if token is None:
        return True
    # Header bytes that are no UTF-8 come as surrogates: a wrong token like any other.
    given = presented_token(request).encode(errors="surrogateescape")
    return hmac.compare_digest(given, f"Bearer {token}".encode())


def cross_origin_refusal(request: web.Request) -> str | None:
    """Why a browser's request from another origin must not be answered here, or None.

    ``Sec-Fetch-Site`` (every browser since 2023; a page's script cannot set it) decides when
    present: the browser compared the origins itself, which stays right behind a proxy that
    terminates TLS or rewrites Host. Without it (older browsers; plain http to a host other than
    localhost) ``Origin`` must name this host as the client reached it: its Host header. The
    scheme is not compared, since behind a TLS proxy we cannot see it; X-Forwarded-* headers are
    not trusted. The same rule as Go's ``net/http.CrossOriginProtection``.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if request.method in SAFE_METHODS:
        if fetch_site is None or fetch_site.lower() in _TRUSTED_FETCH_SITES:
            return None
        mode = request.headers.get("Sec-Fetch-Mode", "").lower()
        dest = request.headers.get("Sec-Fetch-Dest", "").lower()
        if mode == "navigate" and dest in ("document", ""):
            return None  # a link the user followed: the answer goes to the user, not the page
        return f"Sec-Fetch-Site is {fetch_site!r} and this is no top-level navigation"
    if fetch_site is not None:
        if fetch_site.lower() in _TRUSTED_FETCH_SITES:
            return None
        return f"Sec-Fetch-Site is {fetch_site!r}"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    scheme, sep, authority = origin.partition("://")
    host = request.headers.get("Host")
    if sep and scheme.lower() in ("http", "https") and host and authority.lower() == host.lower():
        return None
    return f"Origin {origin!r} is not this service ({host or 'no Host header'})"


RESPONSE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
}


async def harden_response(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer, the API's JSON, errors and streams included."""
    for name, value in RESPONSE_HEADERS.items():
        response.headers.setdefault(name, value)


@web.middleware
async def cross_origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    reason = cross_origin_refusal(request)
    if reason is not None:
        return error_response(
            403,
            "cross_origin",
            f"cross-origin {request.method} refused: {reason}. A page from another site may "
            "not read or change anything here; call the API from its own origin, or without a "
            "browser.",
        )
    return await handler(request)


def host_name(host: str) -> str:
    """The name in a Host header, without its port or an IPv6 address's brackets."""
    host = host.strip().lower()
    if not _HOST.fullmatch(host):  # userinfo, spaces, anything a browser never sends
        return ""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_middleware(allowed: frozenset[str]) -> web.middleware:  # type: ignore[valid-type]
    """Without a token, serve only requests addressed to this machine by a loopback name.

    DNS rebinding: a page on evil.example can make its own name resolve to 127.0.0.1; the
    browser then counts the service as the page's own origin, so the cross-origin rule cannot
    see it, and the page could read every answer. Its Host header still says evil.example.
    """

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = host_name(request.headers.get("Host", ""))
        if is_loopback_name(name) or name in allowed:
            return await handler(request)
        return error_response(
            403,
            "host_not_allowed",
            f"this service has no token, so it answers only to loopback names (localhost, "
            f"127.0.0.1), not {name or 'a request without a Host header'!r}; add the name to "
            "ORCHESTRATOR_ALLOWED_HOSTS, or set ORCHESTRATOR_API_TOKEN",
        )

    return check_host


def _redact_query(query: str) -> str:
    # Compare the decoded, case-folded name: the server decodes %-escapes in names too, so
    # ?access%5Ftoken= is a token as well.
    pieces = query.split("&")
    for i, piece in enumerate(pieces):
        name, sep, _ = piece.partition("=")
        if sep and unquote_plus(name).strip().lower() == TOKEN_PARAM:
            pieces[i] = f"{name}={REDACTED}"
    return "&".join(pieces)


def redact_target(target: str) -> str:
    """A request target or URL with every ``access_token`` value replaced (up to the next
    ``&``, so a fragment after it goes too)."""
    path, question, query = target.partition("?")
    return f"{path}?{_redact_query(query)}" if question else target


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, request line (tokens redacted), status, bytes, seconds,
    Referer (redacted too) and User-Agent. The time comes from the logging formatter. Set on
    the app itself (``handler_args``) so every runner uses it; ``access_log_format`` is
    ignored."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        self.logger.info(
            '%s "%s %s %s" %d %d %.3fs "%s" "%s"',
            request.remote or "-",
            request.method,
            redact_target(request.raw_path),
            version,
            response.status,
            response.body_length,
            time,
            redact_target(request.headers.get("Referer", "-")),
            request.headers.get("User-Agent", "-"),
        )

    @property
    def enabled(self) -> bool:
        # Skip building the line when it would be dropped.
        return self.logger.isEnabledFor(logging.INFO)
