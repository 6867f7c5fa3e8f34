"""The signed pacman repositories the service publishes built packages to, one per variant."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from ..build.variants import Variant
from ..errors import NotFound
from ..settings import Settings
from .repository import Repository, package_name
from .signing import Signer

log = logging.getLogger(__name__)

PUBLISHED = (Variant.CPU, Variant.CUDA)  # metal never builds here


def repo_name(variant: str) -> str:
    return f"orchestrator-{variant}"


class Repositories:
    """Every variant's repository for the service's one architecture, and their key."""

    def __init__(self, root: Path, arch: str, signer: Signer) -> None:
        self.arch = arch
        self.signer = signer
        self._repos = {
            v.value: Repository(root / v.value / arch, repo_name(v.value), signer)
            for v in PUBLISHED
        }
        # One change at a time per repository inside this process (the file lock holds
        # between processes): waiting publishes wait here, not in a thread each.
        self._locks = {name: asyncio.Lock() for name in self._repos}

    @classmethod
    async def open(cls, settings: Settings) -> Repositories:
        signer = await asyncio.to_thread(
            Signer.open, settings.data_dir / "gnupg", settings.repo_key_file
        )
        try:
            repos = cls(settings.repo_dir, settings.repo_arch, signer)
            for repo in repos._repos.values():
                # A new key (rotated): what was served is signed again before anything is.
                if await asyncio.to_thread(repo.resign):
                    log.warning("%s signed again with the key %s", repo.name, signer.fingerprint)
        except BaseException:
            # The agent gpg started for the key would outlive a start that fails here.
            await asyncio.to_thread(signer.close)
            raise
        return repos

    async def close(self) -> None:
        await asyncio.to_thread(self.signer.close)

    def get(self, variant: str, arch: str | None = None) -> Repository:
        repo = self._repos.get(variant)
        if repo is None or (arch is not None and arch != self.arch):
            raise NotFound(f"no repository {variant}/{arch or self.arch}")
        return repo

    async def publish(self, variant: str, packages: Sequence[Path]) -> list[str]:
        repo = self.get(variant)
        async with self._locks[variant]:
            return await asyncio.to_thread(repo.publish, packages)

    async def remove(self, variant: str, pkgname: str) -> str:
        repo = self.get(variant)
        async with self._locks[variant]:
            return await asyncio.to_thread(repo.remove, pkgname)

    async def public_key(self) -> str:
        return await asyncio.to_thread(self.signer.public_key)


__all__ = ["Repositories", "Repository", "Signer", "package_name", "repo_name"]
