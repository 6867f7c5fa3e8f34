"""What each build and job command does (build, check, logs, jobs, cancel, artifacts); what
they share with the other command groups is in ``_common``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path

from ._common import PREFIX, client_for, exit_for, follow, print_event, say, table
from .client import EXIT_BY_STATUS, EXIT_CANCELLED, EXIT_OK, EXIT_USAGE, Client, CliError, End


async def _download_all(
    client: Client, job_id: str, output: Path, args: argparse.Namespace
) -> list[Path]:
    await asyncio.to_thread(output.mkdir, parents=True, exist_ok=True)
    paths = []
    for artifact in await client.artifacts(job_id):
        dest = output / Path(artifact["name"]).name
        await client.download(artifact["url"], dest)
        say(f"saved {dest} ({artifact['size_bytes']} bytes)", args)
        paths.append(dest)
    return paths


async def cmd_build(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not await asyncio.to_thread(directory.is_dir):
        raise CliError(f"{directory} is not a directory", EXIT_USAGE)
    async with client_for(args) as client:
        created = await client.submit(
            directory, args.variant, args.timeout_s, cache=not args.no_cache, publish=args.publish
        )
        job_id = created["job_id"]
        if args.detach:
            print(json.dumps(created) if args.json else job_id)
            return EXIT_OK
        say(
            f"job {job_id}: {created.get('pkgname')} {created.get('pkgver')} ({args.variant})", args
        )
        status = await follow(client, job_id, args, show=args.follow, cancel_on_ctrl_c=True)
        saved: list[Path] = []
        if status == "succeeded" and args.output:
            saved = await _download_all(client, job_id, Path(args.output), args)
        if args.json:
            print(
                json.dumps(
                    {"job_id": job_id, "status": status, "artifacts": [str(p) for p in saved]}
                )
            )
        else:
            say(f"job {job_id} {status}", args)
        return exit_for(status)


async def cmd_check(args: argparse.Namespace) -> int:
    """What makepkg reads from DIR's PKGBUILD, and what would stop its build; builds nothing."""
    directory = Path(args.directory)
    if not (directory / "PKGBUILD").is_file():
        raise CliError(f"{directory} has no PKGBUILD", EXIT_USAGE)
    async with client_for(args) as client:
        found = await client.submit(directory, args.variant, None, dry_run=True)
    if args.json:
        print(json.dumps(found, ensure_ascii=False), flush=True)
    else:
        print(found["srcinfo"], end="" if found["srcinfo"].endswith("\n") else "\n")
        for warning in found["warnings"]:
            say(f"warning: {warning}", args)
        for problem in found["problems"]:
            print(f"{PREFIX} problem: {problem}", file=sys.stderr, flush=True)
    return EXIT_USAGE if found["problems"] else EXIT_OK


async def cmd_logs(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        job = await client.job(args.job_id)
        if args.follow:
            status = await follow(client, args.job_id, args, show=True, cancel_on_ctrl_c=False)
            return exit_for(status)
        # What is there now: read up to the seq the job had when we asked.
        last = int(job.get("last_seq") or 0)
        if last:
            async for item in client.stream(args.job_id):
                if isinstance(item, End):
                    break
                print_event(item, args)
                if item["seq"] >= last:
                    break
        return exit_for(job["status"]) if job["status"] in EXIT_BY_STATUS else EXIT_OK


async def cmd_jobs(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        page = await client.jobs(args.status, args.limit, args.offset)
    if args.json:
        print(json.dumps(page))
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("JOB", "STATUS", "PACKAGE", "VARIANT", "CREATED")]
    for job in page["jobs"]:
        created = datetime.fromisoformat(job["created_at"].replace("Z", "+00:00"))
        package = f"{job.get('pkgname') or '-'} {job.get('pkgver') or ''}".strip()
        rows.append(
            (
                job["job_id"],
                job["status"],
                package,
                job.get("variant") or "-",
                created.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
    table(rows)
    shown = len(page["jobs"])
    if page["total"] > args.offset + shown:
        print(f"({shown} of {page['total']}; --offset {args.offset + shown} for more)")
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        job = await client.cancel(args.job_id)
    if args.json:
        print(json.dumps(job))
    else:
        print(f"job {args.job_id} {job['status']}")
    return EXIT_OK if job["status"] == "cancelled" else exit_for(job["status"])


async def cmd_artifacts(args: argparse.Namespace) -> int:
    async with client_for(args) as client:
        if args.output:
            saved = await _download_all(client, args.job_id, Path(args.output), args)
            if args.json:
                print(json.dumps([str(p) for p in saved]))
            return EXIT_OK
        items = await client.artifacts(args.job_id)
    if args.json:
        print(json.dumps(items))
    else:
        for item in items:
            print(f"{item['name']}  {item['size_bytes']} bytes")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    try:
        result: int = asyncio.run(args.handler(args))
        return result
    except CliError as exc:
        print(f"orchestrator: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except asyncio.CancelledError:
        print("orchestrator: stopped waiting", file=sys.stderr)
        return EXIT_CANCELLED if args.command == "build" else 130
    except KeyboardInterrupt:
        return 130
