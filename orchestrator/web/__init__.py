"""The dashboard: plain HTML, CSS and JS served by the service itself (no build step)."""

from ._routes import CSP, PAGE_PATHS, add_routes, is_dashboard_route

__all__ = ["CSP", "PAGE_PATHS", "add_routes", "is_dashboard_route"]
