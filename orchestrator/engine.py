"""The build engine: a backend, a runner, the build caches, and the start-up sweep of an earlier
run's containers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import TracebackType

from .backend import Backend
from .backend.engines import open_backend
from .build.caches import Caches
from .build.runner import INSTANCE_LABEL, JOB_LABEL, NOUN, BuildRequest, BuildResult, Runner
from .build.srcinfo import SrcInfo
from .build.variants import VariantPlan
from .jobs import Sink, perform
from .jobs.cancel import CancelToken
from .metrics import Metrics
from .settings import Settings


class Engine:
    def __init__(
        self, settings: Settings, backend: Backend, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.caches = Caches(backend, settings)
        self.runner = Runner(backend, settings, self.caches, metrics)
        self.reaped: list[str] = []

    @classmethod
    async def open(
        cls,
        settings: Settings,
        backend: Backend | None = None,
        metrics: Metrics | None = None,
        *,
        keep_builds: bool = False,
    ) -> Engine:
        """Connect to ``backend``, or else to the engine the ``backend`` setting names, and
        remove the steps this instance left behind when it last stopped; with
        ``keep_builds``, all but its builds, which the service may adopt (``reap_builds``
        once it knows)."""
        backend = backend if backend is not None else open_backend(settings)
        engine = cls(settings, backend, metrics)
        try:
            if keep_builds:
                engine.reaped = await engine._reap(lambda labels: JOB_LABEL not in labels)
            else:
                engine.reaped = await backend.reap({INSTANCE_LABEL: settings.instance_id})
            await engine.caches.open()
        except BaseException:
            await backend.close()
            raise
        return engine

    async def reap_builds(self, keep: Callable[[str], bool]) -> list[str]:
        """Remove this instance's build steps whose job ``keep`` does not claim (a job that
        had ended, or that could not be adopted)."""
        return await self._reap(lambda labels: JOB_LABEL in labels and not keep(labels[JOB_LABEL]))

    async def _reap(self, which: Callable[[Mapping[str, str]], bool]) -> list[str]:
        found = await self.backend.list_steps({INSTANCE_LABEL: self.settings.instance_id})
        doomed = [handle for handle, labels in found.items() if which(labels)]
        await asyncio.gather(*(self.backend.destroy(handle) for handle in doomed))
        return doomed

    async def prepare(self, request: BuildRequest) -> tuple[SrcInfo, VariantPlan]:
        return await self.runner.prepare(request)

    async def build(
        self,
        request: BuildRequest,
        sink: Sink,
        cancel: CancelToken,
        *,
        timeout_s: float | None = None,
    ) -> BuildResult:
        """One build as a job runs it, outside the registry (tests, the bench): its time limit
        armed, and its last line said."""

        async def work(sink: Sink, cancel: CancelToken) -> BuildResult:
            return await self.runner.run(request, sink, cancel)

        return await perform(work, sink, cancel, noun=NOUN, timeout_s=timeout_s)

    async def close(self) -> None:
        await self.runner.inspector.close()
        await self.caches.close()
        await self.backend.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
