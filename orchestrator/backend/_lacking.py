"""An engine's answers for a capability it lacks: each says so (``supports_*`` false, None for
what it cannot tell), so callers ask the flag and never need to know which engine it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import IO

from ..errors import BackendError
from . import PathUsage, Ran, Usage


class NoDiskWatch:
    """``DiskWatch`` for an engine that cannot look inside a step's filesystem."""

    @property
    def enforces_disk_limit(self) -> bool:
        return False

    async def disk_usage(self, handle: str) -> int | None:
        return None

    async def path_usage(self, handle: str, paths: Sequence[str]) -> PathUsage | None:
        return None

    async def writable_places(self, handle: str) -> tuple[str, ...] | None:
        return None


class NoExec:
    """``Exec`` for an engine that cannot reach into a running step: every reading is a step."""

    name: str

    @property
    def supports_exec(self) -> bool:
        return False

    async def put(self, handle: str, path: str, tar: IO[bytes]) -> None:
        raise BackendError(f"{self.name} cannot copy into a running step")

    async def exec(
        self, handle: str, command: tuple[str, ...], *, user: str, workdir: str, keep_bytes: int
    ) -> Ran:
        raise BackendError(f"{self.name} cannot run a command in a running step")

    async def cpu_seconds(self, handle: str) -> float | None:
        return None


class NoVolumes:
    """``Volumes`` for an engine that keeps no build caches: there are none to list or remove."""

    name: str

    @property
    def supports_volumes(self) -> bool:
        return False

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        raise BackendError(f"build caches are not kept on {self.name}")

    async def remove_volume(self, name: str) -> None:
        return None

    async def volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        return None

    async def list_volumes(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        return {}


class NoSampling:
    """``Sampling`` for an engine whose API tells nothing of a running step's use."""

    @property
    def supports_usage(self) -> bool:
        return False

    async def usage(self, handle: str) -> Usage | None:
        return None

    async def busiest(self, handle: str) -> tuple[str, ...]:
        return ()
