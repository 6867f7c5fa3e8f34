"""Routes for the dashboard's pages and assets.

Every page is the same shell (``index.html``); its script reads the path and draws the page, so
``/jobs/{id}`` is an address a user can share. The shell is served without a token: it holds
nothing, and every call it makes goes to ``/v1`` with the token the user gives it.

Assets are read once, when the routes are added, into a table keyed by file name: a request
names an entry of that table, never a path, so nothing outside ``static/`` can be reached.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from ..errors import NotFound

_CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# No inline script or style anywhere: a value the API returns that slipped into the page as
# markup could not run. connect-src 'self' keeps fetch() (and the token it carries) on this
# service. Trusted Types with no policy: the page builds everything from text nodes, so the
# browser refuses any string given to innerHTML and the like, should a change ever try.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files, and a new version of the service must show its new page at once.
    "Cache-Control": "no-cache",
}
PAGE_PATHS = ("/", "/submit", "/catalog", "/jobs/{job_id}")
ASSET_PREFIX = "/assets/"


def is_dashboard_route(path: str) -> bool:
    """Whether a route's path is the dashboard's (a page or an asset), not the API's."""
    return path in PAGE_PATHS or path.startswith(ASSET_PREFIX)


def _load_assets() -> dict[str, tuple[bytes, str]]:
    assets: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            assets[entry.name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])
    return assets


def _response(body: bytes, content_type: str) -> web.Response:
    return web.Response(
        body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS
    )


def add_routes(app: web.Application) -> None:
    """``/``, ``/submit``, ``/catalog``, ``/jobs/{id}`` and ``/assets/{name}``."""
    assets = _load_assets()
    shell, _ = assets["index.html"]

    async def page(request: web.Request) -> web.Response:
        return _response(shell, "text/html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = assets.get(name)
        if found is None:
            raise NotFound(f"no asset named {name!r}")
        return _response(*found)

    for path in PAGE_PATHS:
        app.router.add_get(path, page)
    app.router.add_get(ASSET_PREFIX + "{name}", asset)
