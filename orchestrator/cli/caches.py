"""``orchestrator cache …``: the service's build caches."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..api.routes import url
from ._common import client_for, say, table
from .client import EXIT_OK


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    if value < 1024:
        return f"{value} B"
    size = float(value)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def _path(key: str) -> str:
    return url("get_cache", key=key)


async def cache_list(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        data = await client.get_json(url("list_caches"))
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    rows = [("KEY", "SIZE", "LAST USED", "BUILDS", "HITS", "IN USE")]
    for cache in data["caches"]:
        rows.append(
            (
                cache["key"],
                _size(cache["size_bytes"]),
                cache["last_used_at"],
                str(cache["builds"]),
                str(cache["hits"]),
                "yes" if cache["in_use"] else "no",
            )
        )
    table(rows)
    state = "" if data["enabled"] else " (caches are off on this service)"
    print(f"{_size(data['total_bytes'])} of {_size(data['max_bytes'])}{state}")
    return EXIT_OK


async def cache_show(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        data = await client.get_json(_path(args.key))
    if args.json:
        print(json.dumps(data))
        return EXIT_OK
    rows = [
        (name, json.dumps(value) if isinstance(value, dict) else str(value))
        for name, value in data.items()
    ]
    table(rows)
    return EXIT_OK


async def cache_remove(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        await client.delete(_path(args.key))
    say(f"cache {args.key} removed", args)
    return EXIT_OK


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    cache = commands.add_parser("cache", help="the service's build caches")
    verbs = cache.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser(
        "list", parents=[common], help="list caches, most recently used first"
    ).set_defaults(handler=cache_list)
    show = verbs.add_parser("show", parents=[common], help="show one cache and its last build")
    show.add_argument("key", metavar="KEY", help="pkgbase:variant, as `cache list` shows")
    show.set_defaults(handler=cache_show)
    remove = verbs.add_parser(
        "remove", parents=[common], help="remove a cache (its next build starts cold)"
    )
    remove.add_argument("key", metavar="KEY", help="pkgbase:variant, as `cache list` shows")
    remove.set_defaults(handler=cache_remove)
