"""``orchestrator worker …`` and ``orchestrator model …``: the catalog, installs, downloads."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ..api.routes import url
from ._common import NO_CACHE_HELP, client_for, exit_for, follow, say, table
from .client import EXIT_OK, Client


async def _wait(client: Client, created: dict[str, Any], args: argparse.Namespace) -> int:
    """Like `build`: print the job id with --detach, otherwise wait (Ctrl-C cancels)."""
    job_id = created["job_id"]
    if args.detach:
        print(json.dumps(created) if args.json else job_id)
        return EXIT_OK
    say(f"job {job_id}", args)
    status = await follow(client, job_id, args, show=args.follow, cancel_on_ctrl_c=True)
    if args.json:
        print(json.dumps({"job_id": job_id, "status": status}))
    else:
        say(f"job {job_id} {status}", args)
    return exit_for(status)


def _print(args: argparse.Namespace, data: Any, rows: Sequence[Sequence[str]]) -> int:
    if args.json:
        print(json.dumps(data))
    else:
        table(rows)
    return EXIT_OK


async def worker_available(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        data = await client.get_json(url("list_catalog"))
    rows = [("ID", "VERSION", "TYPE", "NAME")]
    rows += [(w["id"], w["version"], w["worker_type"], w["name"]) for w in data["workers"]]
    return _print(args, data, rows)


async def worker_get(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        if args.pkgbuild:
            print(await client.text(url("get_catalog_pkgbuild", worker_id=args.worker_id)), end="")
            return EXIT_OK
        data = await client.get_json(url("get_catalog_worker", worker_id=args.worker_id))
    fields = (
        "id",
        "name",
        "version",
        "worker_type",
        "license",
        "platforms",
        "architectures",
        "binary_name",
        "description",
    )
    rows = [
        (key, ", ".join(data[key]) if isinstance(data[key], list) else str(data[key]))
        for key in fields
    ]
    return _print(args, data, rows)


async def worker_install(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        body: dict[str, Any] = {"operation": "worker_install", "worker_id": args.worker_id}
        if args.publish:
            body["publish"] = True
        if args.timeout_s is not None:
            body["timeout_s"] = args.timeout_s
        created = await client.start_job(body, cache=not args.no_cache)
        return await _wait(client, created, args)


async def worker_list(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        data = await client.get_json(url("list_workers"))
    rows = [("ID", "VERSION", "INSTALLED", "PATH")]
    rows += [(w["id"], w["version"], w["installed_at"], w["path"]) for w in data["workers"]]
    return _print(args, data, rows)


async def worker_remove(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        data = await client.delete(url("uninstall_worker", worker_id=args.worker_id))
    print(json.dumps(data) if args.json else f"removed {args.worker_id}")
    return EXIT_OK


async def model_download(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        body: dict[str, Any] = {
            "operation": "model_download",
            "url": args.source,
            "name": args.name,
        }
        if args.sha256:
            body["sha256"] = args.sha256
        if args.timeout_s is not None:
            body["timeout_s"] = args.timeout_s
        return await _wait(client, await client.start_job(body), args)


async def model_list(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        data = await client.get_json(url("list_models"))
    rows = [("NAME", "SIZE", "SHA256", "DOWNLOADED")]
    rows += [
        (m["name"], str(m["size_bytes"]), m["sha256"][:12], m["downloaded_at"])
        for m in data["models"]
    ]
    return _print(args, data, rows)


async def model_remove(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        data = await client.delete(url("delete_model", name=args.name))
    print(json.dumps(data) if args.json else f"removed {args.name}")
    return EXIT_OK


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("-f", "--follow", action="store_true", help="print the narration live")
    waiting.add_argument("-d", "--detach", action="store_true", help="print the job id, return")
    waiting.add_argument("--timeout-s", type=float, help="stop the job after this many seconds")

    worker = commands.add_parser("worker", help="the worker catalog and installed workers")
    verbs = worker.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("available", parents=[common], help="list the catalog").set_defaults(
        handler=worker_available
    )
    get = verbs.add_parser("get", parents=[common], help="show one catalog entry")
    get.add_argument("worker_id", metavar="ID")
    get.add_argument("--pkgbuild", action="store_true", help="print its PKGBUILD")
    get.set_defaults(handler=worker_get)
    install = verbs.add_parser(
        "install",
        parents=[common, waiting],
        help="build and install a worker",
        description="Build the worker's PKGBUILD in a container of its variant and install its "
        "binary; a failed or cancelled install keeps the previous version. Ctrl-C cancels.",
    )
    install.add_argument("worker_id", metavar="ID")
    install.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    install.add_argument(
        "--publish",
        action="store_true",
        help="also add its package to the variant's signed pacman repository",
    )
    install.set_defaults(handler=worker_install)
    verbs.add_parser("list", parents=[common], help="list installed workers").set_defaults(
        handler=worker_list
    )
    remove = verbs.add_parser("remove", parents=[common], help="uninstall a worker")
    remove.add_argument("worker_id", metavar="ID")
    remove.set_defaults(handler=worker_remove)

    model = commands.add_parser("model", help="downloaded models")
    verbs = model.add_subparsers(dest="verb", required=True, metavar="VERB")
    download = verbs.add_parser(
        "download",
        parents=[common, waiting],
        help="download a model file",
        description="Download URL (http(s)://… or hf://REPO/FILE[@REVISION]) into the model "
        "store as NAME, resuming a partial download; Ctrl-C cancels and removes the partial file.",
    )
    # Not `url`: that is the service's address (--url).
    download.add_argument("source", metavar="URL")
    download.add_argument("--name", required=True, help="file name in the model store")
    download.add_argument("--sha256", help="expected checksum; a mismatch fails the job")
    download.set_defaults(handler=model_download)
    verbs.add_parser("list", parents=[common], help="list models").set_defaults(handler=model_list)
    remove = verbs.add_parser("remove", parents=[common], help="delete a model")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=model_remove)
