"""The package repositories: their files (what pacman fetches), their key, what they hold, and
taking a package out."""

from __future__ import annotations

from aiohttp import web

from .keys import REPOS
from .wire import Removed, RepoPackage, RepoPackages, respond


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


async def list_repo(request: web.Request) -> web.Response:
    repos = request.app[REPOS]
    variant = request.match_info["variant"]
    repo = repos.get(variant)
    return respond(
        RepoPackages(
            repository=repo.name,
            arch=repos.arch,
            server=f"/repo/{variant}/{repos.arch}",
            packages=[
                RepoPackage(name=name, filename=filename)
                for name, filename in sorted(repo.packages().items())
            ],
        )
    )


async def delete_repo_package(request: web.Request) -> web.Response:
    info = request.match_info
    removed = await request.app[REPOS].remove(info["variant"], info["pkgname"])
    return respond(Removed(removed=removed))
