"""The aiohttp application: ``create_app(settings)``: its guards, its routes, and its resources
(``resources.py``), each one cleanup context.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web
from aiohttp.typedefs import Handler

from ..backend import Backend
from ..errors import InsecureBind
from ..metrics import Metrics
from ..settings import Settings
from ..web import add_routes as add_dashboard
from . import resources
from .errors import error_response, errors_middleware
from .guard import (
    API_PREFIX,
    REPO_PREFIX,
    AccessLogger,
    cross_origin_middleware,
    harden_response,
    holds_token,
    host_middleware,
    host_name,
)
from .keys import METRICS, SETTINGS
from .routes import add_routes


def check_bind(settings: Settings) -> None:
    if settings.api_token is not None or settings.allow_unauthenticated:
        return
    host = settings.host
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InsecureBind(
            f"refusing to listen on {host} without ORCHESTRATOR_API_TOKEN: this service holds "
            "the Docker socket, so anyone who can reach it controls the host. Set a token, or "
            "bind to 127.0.0.1 (in a container published only on 127.0.0.1, "
            "ORCHESTRATOR_ALLOW_UNAUTHENTICATED=true says so)."
        )


def _auth_middleware(token: str) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        guarded = request.path.startswith((API_PREFIX, REPO_PREFIX))
        if guarded and not holds_token(request, token):
            response = error_response(401, "unauthorized", "a valid bearer token is required")
            response.headers["WWW-Authenticate"] = "Bearer"
            if request.path.startswith(REPO_PREFIX):
                # pacman (libcurl) sends the URL's credentials only once challenged for them.
                response.headers.add("WWW-Authenticate", 'Basic realm="orchestrator"')
            return response
        return await handler(request)

    return auth


def create_app(settings: Settings, *, backend: Backend | None = None) -> web.Application:
    # Outermost first: refusals are JSON, and a cross-origin request is refused whatever its
    # token.
    middlewares = [errors_middleware, cross_origin_middleware]
    if settings.api_token is not None:
        middlewares.append(_auth_middleware(settings.api_token.get_secret_value()))
    else:
        allowed = frozenset(host_name(h) for h in settings.allowed_hosts)
        middlewares.append(host_middleware(allowed))
    # The access logger is set here, not by whoever runs the app, so no runner logs tokens.
    app = web.Application(middlewares=middlewares, handler_args={"access_log_class": AccessLogger})
    app.on_response_prepare.append(harden_response)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()

    app.cleanup_ctx.extend(resources.contexts(backend))
    app.on_shutdown.append(resources.on_shutdown)

    add_routes(app)
    add_dashboard(app)  # /, /jobs/{id}, /submit, /catalog and /assets/: the browser's view
    return app
