"""The worker catalog: which workers can be installed, each with its PKGBUILD and local sources.

A catalog is a directory (one folder per worker: ``worker.json``, ``PKGBUILD``, sources), a JSON
file, or the same JSON at an HTTP(S) URL (``{"workers": [{...metadata, "pkgbuild": "...",
"sources": {"name": "text"}}]}``). Without a setting, the catalog shipped in the package is used.
An entry that does not validate is reported (which entry, which field) and skipped: one bad entry
never takes the service down.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import platform
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..build.inspector import Inspector
from ..build.variants import plan
from ..errors import (
    InvalidInput,
    OrchestratorError,
    PkgbuildError,
    VariantRefused,
    WorkerNotFound,
)
from ..settings import Settings
from ..timeouts import CATALOG_FETCH_TIMEOUT_S

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "shipped"
_SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
_MAX_SOURCE_BYTES = 4 * 1024 * 1024


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    license: str = Field(min_length=1)
    worker_type: Literal["cpu", "cuda", "metal"]
    platforms: tuple[str, ...] = Field(min_length=1)
    architectures: tuple[str, ...] = Field(min_length=1)
    binary_name: str = Field(pattern=_SAFE_NAME)
    depends: tuple[str, ...] = ()
    makedepends: tuple[str, ...] = ()
    pkgbuild: str = Field(min_length=1, repr=False)
    sources: dict[str, str] = Field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        return self.model_dump(exclude={"pkgbuild", "sources"})

    def write_build_dir(self, dest: Path) -> Path:
        """The PKGBUILD and its sources as a build directory (names were vetted on load)."""
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "PKGBUILD").write_text(self.pkgbuild)
        for name, text in self.sources.items():
            (dest / name).write_text(text)
        return dest

    def check_runs_here(self, settings: Settings, *, gpu_runtime: bool) -> tuple[str, ...]:
        """Refuse a worker this host cannot build or run; return warnings for the rest."""
        plan_ = plan(self.worker_type, settings, gpu_runtime=gpu_runtime)  # refuses metal
        machine = platform.machine()
        if "linux" not in self.platforms or machine not in self.architectures:
            raise VariantRefused(
                self.worker_type,
                f"worker {self.id!r} is for {'/'.join(self.platforms)} on "
                f"{'/'.join(self.architectures)}; this host is linux on {machine}",
            )
        return plan_.warnings


@dataclass(frozen=True, slots=True)
class Problem:
    entry: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"catalog entry {self.entry!r}: {self.field}: {self.message}"


@dataclass
class Catalog:
    source: str
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    checked: bool = False  # makepkg has read every PKGBUILD it could (see ``verify``)

    def get(self, worker_id: str) -> CatalogEntry:
        try:
            return self.entries[worker_id]
        except KeyError:
            raise WorkerNotFound(worker_id) from None

    def add(self, raw: Any, where: str) -> None:
        label = str(raw.get("id", where)) if isinstance(raw, dict) else where
        try:
            entry = CatalogEntry.model_validate(raw)
            _check_consistent(entry)
        except ValidationError as exc:
            for error in exc.errors():
                loc = ".".join(str(p) for p in error["loc"]) or "entry"
                self.problems.append(Problem(label, loc, error["msg"]))
            return
        except (InvalidInput, ValueError, OSError) as exc:
            self.problems.append(Problem(label, "pkgbuild", str(exc)))
            return
        if entry.id in self.entries:
            self.problems.append(Problem(label, "id", "duplicate id; the first one is kept"))
            return
        self.entries[entry.id] = entry


def _check_consistent(entry: CatalogEntry) -> None:
    """Source names must be plain file names; the PKGBUILD itself is makepkg's to read
    (``verify``)."""
    for name in entry.sources:
        if not re.fullmatch(_SAFE_NAME, name) or name == "PKGBUILD":
            raise InvalidInput(f"source name {name!r} is not a plain file name")


# makepkg's verdict per (image, PKGBUILD and source names): one process reads each entry once.
_VERIFIED: dict[str, str | None] = {}


async def verify(catalog: Catalog, inspector: Inspector, settings: Settings) -> None:
    """Have makepkg read each entry's PKGBUILD (in the inspector's sandbox); an entry it refuses,
    or whose version is not the metadata's, becomes a problem. Entries that cannot be checked
    here (metal, an image not made yet, no daemon) stay, and are checked again at install."""

    async def check(entry: CatalogEntry) -> str | None:
        try:
            image = plan(entry.worker_type, settings, gpu_runtime=False).image
        except VariantRefused:
            return None
        key = hashlib.sha256(
            "\0".join([image, entry.pkgbuild, *sorted(entry.sources)]).encode()
        ).hexdigest()
        if key in _VERIFIED:
            return _VERIFIED[key]
        with tempfile.TemporaryDirectory(prefix="catalog-") as tmp:
            build_dir = await asyncio.to_thread(entry.write_build_dir, Path(tmp))
            labels = {"orchestrator.instance": settings.instance_id}
            try:
                info = await inspector.read(build_dir, image, labels)
            except PkgbuildError as exc:
                verdict: str | None = str(exc)
            except OrchestratorError as exc:
                log.info("catalog entry %s not checked now: %s", entry.id, exc)
                return None
            else:
                verdict = None
                if entry.version not in (info.first("pkgver"), info.version):
                    verdict = (
                        f"version {entry.version!r} does not match the PKGBUILD's {info.version!r}"
                    )
        _VERIFIED[key] = verdict
        return verdict

    entries = list(catalog.entries.values())
    verdicts = await asyncio.gather(*(check(entry) for entry in entries))
    for entry, verdict in zip(entries, verdicts, strict=True):
        if verdict is not None:
            catalog.entries.pop(entry.id, None)
            problem = Problem(entry.id, "pkgbuild", verdict)
            catalog.problems.append(problem)
            log.warning("%s (skipped)", problem)
    catalog.checked = True


def _read_dir(root: Path, catalog: Catalog) -> None:
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta_path = folder / "worker.json"
        try:
            raw = json.loads(meta_path.read_text())
            if not isinstance(raw, dict):
                raise ValueError("worker.json must hold an object")
            raw["pkgbuild"] = (folder / "PKGBUILD").read_text()
            raw["sources"] = {
                p.name: p.read_text()
                for p in sorted(folder.iterdir())
                if p.is_file()
                and p.name not in ("worker.json", "PKGBUILD")
                and p.stat().st_size <= _MAX_SOURCE_BYTES
            }
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            catalog.problems.append(Problem(folder.name, "files", str(exc)))
            continue
        catalog.add(raw, folder.name)


def _read_document(text: str, catalog: Catalog) -> None:
    try:
        document = json.loads(text)
        workers = document["workers"]
        if not isinstance(workers, list):
            raise ValueError("'workers' must be a list")
    except (ValueError, KeyError, TypeError) as exc:
        catalog.problems.append(Problem("*", "document", f"not a catalog: {exc}"))
        return
    for index, raw in enumerate(workers):
        catalog.add(raw, f"#{index}")


def _read_local(path: Path, catalog: Catalog) -> None:
    if path.is_dir():
        _read_dir(path, catalog)
        return
    try:
        text = path.read_text()
    except OSError as exc:
        catalog.problems.append(Problem("*", "source", f"cannot read {path}: {exc}"))
        return
    _read_document(text, catalog)


async def load(source: str | None) -> Catalog:
    """Load the catalog at ``source`` (a folder, a JSON file, an http(s) URL, or None)."""
    where = source or str(SHIPPED)
    catalog = Catalog(where)
    if where.startswith(("http://", "https://")):
        try:
            timeout = aiohttp.ClientTimeout(total=CATALOG_FETCH_TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(where) as response,
            ):
                response.raise_for_status()
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError) as exc:
            catalog.problems.append(Problem("*", "source", f"cannot fetch {where}: {exc}"))
        else:
            await asyncio.to_thread(_read_document, text, catalog)
    else:
        await asyncio.to_thread(_read_local, Path(where), catalog)
    for problem in catalog.problems:
        log.warning("%s (skipped)", problem)
    return catalog
