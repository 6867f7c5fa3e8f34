"""``orchestrator verify PACKAGE``: a package against its signature and its build's provenance,
with the service's public key in a throwaway GnuPG home."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..api.routes import url
from ..errors import ProvenanceError
from ..provenance import Keyring, opened, sha256_file, subjects
from ._common import client_for, say
from .client import EXIT_OK, EXIT_USAGE, Client, CliError

EXIT_BAD_SIGNATURE = 7  # the package's detached signature is missing or not the key's
EXIT_BAD_PROVENANCE = 8  # the provenance is no envelope the key signed
EXIT_NOT_SUBJECT = 9  # the provenance does not name these bytes

DESCRIPTION = f"""\
Check PACKAGE three ways with the service's public key (--key FILE, else /repo/key): its
detached signature (PACKAGE.sig, --sig, or the repository's copy with --job), the provenance's
DSSE signature (--provenance FILE, or the job's from the service with --job), and that the
package's sha256 is one of the provenance's subjects. Exit codes: 0 all hold,
{EXIT_BAD_SIGNATURE} bad package signature, {EXIT_BAD_PROVENANCE} bad provenance,
{EXIT_NOT_SUBJECT} the package is not what the provenance names; {EXIT_USAGE} usage."""


def add_command(commands: Any, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "verify",
        parents=[common],
        help="check a package against its signature and its build's provenance",
        description=DESCRIPTION,
    )
    parser.add_argument("package", metavar="PACKAGE")
    parser.add_argument("--sig", metavar="FILE", help="its detached signature (PACKAGE.sig)")
    parser.add_argument("--key", metavar="FILE", help="the service's public key, armored")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--provenance", metavar="FILE", help="the build's provenance envelope")
    source.add_argument("--job", metavar="JOB", help="the build's job on the service")
    parser.set_defaults(handler=cmd_verify)


async def cmd_verify(args: argparse.Namespace) -> int:
    package = Path(args.package)
    key, envelope, signature = await asyncio.to_thread(_local, args, package)
    with tempfile.TemporaryDirectory(prefix="orch-verify-") as folder:
        async with client_for(args) as client:
            if key is None:
                key = await client.text(url("get_repo_key"))
            if envelope is None:
                envelope = await client.get_json(url("get_provenance", job_id=args.job))
            if signature is None:
                signature = await _served_signature(client, args.job, package, Path(folder))
        return await asyncio.to_thread(_check, package, signature, key, envelope, args)


def _local(args: argparse.Namespace, package: Path) -> tuple[str | None, Any, Path | None]:
    """What the files given hold: the key, the envelope, the package's signature (None: ask
    the service)."""
    if not package.is_file():
        raise CliError(f"no package {package}", EXIT_USAGE)
    signature: Path | None = Path(args.sig or package.with_name(package.name + ".sig"))
    if signature is not None and not signature.is_file() and args.job and not args.sig:
        signature = None  # the repository's copy
    key = Path(args.key).read_text() if args.key else None
    envelope = _read_json(Path(args.provenance)) if args.provenance else None
    return key, envelope, signature


async def _served_signature(client: Client, job_id: str, package: Path, folder: Path) -> Path:
    """The package's signature as its job's repository serves it."""
    job = await client.job(job_id)
    arch = package.name.split(".pkg.tar", 1)[0].rsplit("-", 1)[-1]
    served = f"/repo/{job.get('variant') or 'cpu'}/{arch}/{quote(package.name)}.sig"
    signature = folder / f"{package.name}.sig"
    try:
        await client.download(served, signature)
    except CliError as exc:
        raise CliError(
            f"{package.name} has no signature here nor in the repository: {exc.message}",
            EXIT_BAD_SIGNATURE,
        ) from exc
    return signature


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the provenance {path}: {exc}", EXIT_BAD_PROVENANCE) from exc


def _check(
    package: Path, signature: Path, key: str, envelope: Any, args: argparse.Namespace
) -> int:
    with Keyring.of(key) as ring:
        if not signature.is_file():
            raise CliError(f"{package.name} is not signed: no {signature}", EXIT_BAD_SIGNATURE)
        try:
            signer = ring.verify_file(package, signature)
        except ProvenanceError as exc:
            raise CliError(f"bad package signature: {exc}", EXIT_BAD_SIGNATURE) from exc
        try:
            if not isinstance(envelope, dict):
                raise ProvenanceError("not a DSSE envelope")
            stmt = opened(envelope, ring.verify)
        except ProvenanceError as exc:
            raise CliError(f"bad provenance: {exc}", EXIT_BAD_PROVENANCE) from exc
    digest = sha256_file(package)
    named = subjects(stmt)
    if named.get(package.name) != digest:
        raise CliError(
            f"{package.name} (sha256 {digest}) is not a subject of the provenance "
            f"(it names {', '.join(sorted(named)) or 'nothing'})",
            EXIT_NOT_SUBJECT,
        )
    job = stmt["predicate"]["runDetails"]["metadata"].get("invocationId")
    if args.json:
        print(json.dumps({"package": package.name, "sha256": digest, "signer": signer, "job": job}))
    else:
        say(f"{package.name}: signed by {signer}, built by job {job} (sha256 {digest})", args)
    return EXIT_OK
