"""The package repositories: their files (what pacman fetches), their key, what they hold, and
taking a package out."""

from __future__ import annotations

from aiohttp import web

from ..errors import InvalidInput
from ..repo import PUBLISHED
from .guard import host_name
from .keys import REPOS
from .routes import url
from .wire import Removed, RepoList, RepoPackage, RepoPackages, RepoSummary, respond


async def get_repo_file(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    repo = request.app[REPOS].get(info["variant"], info["arch"])
    # Only a plain name of a file the repository holds: no path from the request reaches the
    # disk beyond its own folder.
    path = repo.file(info["name"])
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def get_repo_key(request: web.Request) -> web.Response:
    armored = await request.app[REPOS].public_key()
    return web.Response(text=armored, content_type="application/pgp-keys")


async def list_repos(request: web.Request) -> web.Response:
    repos = request.app[REPOS]
    # Absolute, as this request reached the service (without a token its Host is one the
    # service allows; with one, the caller holds the token): what pacman.conf and curl take.
    origin = _origin(request)
    summaries = []
    for variant in PUBLISHED:
        name = variant.value
        summaries.append(
            RepoSummary(
                variant=name,
                repository=repos.get(name).name,
                arch=repos.arch,
                server=f"{origin}/repo/{name}/{repos.arch}",
                packages_url=url("list_repo", variant=name),
            )
        )
    return respond(
        RepoList(
            fingerprint=repos.signer.fingerprint,
            key_url=origin + url("get_repo_key"),
            repositories=summaries,
        )
    )


def _origin(request: web.Request) -> str:
    """``scheme://host[:port]`` as the client addressed this service, or ``InvalidInput`` for a
    Host header no URL can hold (a port past 65535, spaces, a shell's metacharacters: it is
    written into the commands the dashboard offers to copy)."""
    try:
        origin = str(request.url.origin())
    except ValueError as exc:
        raise InvalidInput(f"the Host header {request.host!r} is no host: {exc}") from None
    if not host_name(request.host):
        raise InvalidInput(f"the Host header {request.host!r} is no host name[:port]")
    return origin


async def list_repo(request: web.Request) -> web.Response:
    repos = request.app[REPOS]
    variant = request.match_info["variant"]
    repo = repos.get(variant)
    sums = repo.sha256sums()
    return respond(
        RepoPackages(
            repository=repo.name,
            arch=repos.arch,
            server=f"/repo/{variant}/{repos.arch}",
            packages=[
                RepoPackage(name=name, filename=filename, sha256=sums.get(filename, ""))
                for name, filename in sorted(repo.packages().items())
            ],
        )
    )


async def delete_repo_package(request: web.Request) -> web.Response:
    info = request.match_info
    removed = await request.app[REPOS].remove(info["variant"], info["pkgname"])
    return respond(Removed(removed=removed))
