"""Swarm services found again after a restart (``find``) and their output read back (``reattach``).

What a new process needs to take a build's service over, it can know again without having been
told: the service and its followed task (state, exit code, start) from the manager; the output
from the service logs, every read from the first line (``_servicelogs.py``), less the lines the
store already holds, counted per stream as ``LineSplitter`` cut them the first time; and the
exchange of its packages (``_handoff.py``), whose token derives from the handle under the data
directory's secret, at the same listener: so only a fixed ``swarm_listen`` (a port, not 0) can
adopt, since the task holds the listener's URL in its environment. A re-opened exchange takes
no pushed output (``_pushed.py``): the task's pushers stop pushing on its 410 and go on writing
the task's streams, which the service logs read back here, as for a step that never pushed.

The limit: a task sends its packages back as it ends, once (curl tries a few times over a few
seconds). One that ended while no service listened could not, and the build fails saying so.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import docker

from ..errors import ContainerGone
from ..settings import Settings
from . import ExitStatus, FoundStep, StepState, Stream
from . import _swarmspec as spec
from ._adopt import Skipper, parse_time
from ._handoff import Handoff
from ._servicelogs import ServiceOutput

T = TypeVar("T")

MISSED = (
    "its packages could not be sent back while no service ran (its task ended before the "
    "service was back)"
)
_ENDED = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})


def fixed_listen(listen: str | None) -> bool:
    """Whether ``swarm_listen`` names a port a later process listens on again."""
    if not listen:
        return False
    _, _, port = listen.rpartition(":")
    return port.isdigit() and int(port) != 0


def found_service(
    service: Mapping[str, Any], tasks: list[dict[str, Any]], attempts: int
) -> FoundStep:
    """A service and its tasks → what adopting it needs. A task not running yet counts as
    running: the service was created (``start``), so Swarm is starting it."""
    task = spec.followed(tasks, attempts)
    state: StepState = "running"
    ended: ExitStatus | None = None
    if task is not None and spec.task_state(task) in _ENDED:
        state = "exited"
        code = spec.exit_code(task)
        ended = ExitStatus(code) if code is not None else None
    service_spec = service.get("Spec") or {}
    container = (service_spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    started = parse_time(str(task.get("CreatedAt") or "")) if task is not None else None
    return FoundStep(
        handle=str(service_spec["Name"]),
        labels=dict(service_spec.get("Labels") or {}),
        image=str(container.get("Image") or ""),
        state=state,
        started_at=started,
        exit=ended,
    )


def outputs_of(
    service: Mapping[str, Any], variable: str = "ORCHESTRATOR_STEP_OUTPUTS"
) -> tuple[str, ...]:
    """The paths the service's task sends back, as its wrapper was told (``wrapper_env``);
    or another of its lists (the names of its cache volumes)."""
    template = (service.get("Spec") or {}).get("TaskTemplate") or {}
    for entry in (template.get("ContainerSpec") or {}).get("Env") or []:
        name, _, value = str(entry).partition("=")
        if name == variable:
            return tuple(value.split())
    return ()


class SwarmAdoption:
    """``find`` and ``reattach`` of ``SwarmBackend`` (a mixin: the engine's calls stay there)."""

    if TYPE_CHECKING:
        _settings: Settings
        _api: docker.APIClient
        _pool: ThreadPoolExecutor
        _ends: dict[str, asyncio.Future[dict[str, Any]]]
        _running: dict[str, threading.Event]

        async def _run(self, fn: Callable[..., T], *args: Any, idempotent: bool = True) -> T: ...

        async def _ensure_handoff(self) -> Handoff: ...

        async def _watch(self, handle: str) -> dict[str, Any]: ...

        def _open_logs(self, handle: str, follow: bool) -> Any: ...

    @property
    def supports_adopt(self) -> bool:
        # The task reaches its exchange at the URL it was given: only a fixed port is there
        # again for the next process.
        return fixed_listen(self._settings.swarm_listen)

    async def find(self, labels: Mapping[str, str]) -> list[FoundStep]:
        """Every service carrying ``labels``; each one's exchange is taken over here, so that
        its packages find this process when the task sends them."""
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        services = await self._run(functools.partial(self._api.services, filters=filters))
        found = []
        for service in services:
            name = str(service["Spec"]["Name"])
            try:
                tasks = await self._run(
                    functools.partial(self._api.tasks, filters={"service": name})
                )
            except ContainerGone:  # removed meanwhile
                continue
            step = found_service(service, tasks, self._settings.swarm_restart_attempts)
            handoff = await self._ensure_handoff()
            handoff.reopen(
                name,
                outputs_of(service),
                MISSED if step.state == "exited" else None,
                outputs_of(service, "ORCHESTRATOR_STEP_VOLUME_NAMES"),
            )
            found.append(step)
        return found

    async def reattach(
        self,
        handle: str,
        skip: Mapping[Stream, int],
        *,
        follow: bool,
        ends: Mapping[Stream, tuple[str, str]] | None = None,
    ) -> ServiceOutput:
        # ``ends`` goes unused: a service log rotated past its head is not told apart yet.
        opener = functools.partial(self._open_logs, handle)
        take = Skipper(skip).take
        if not follow:
            # What the manager holds now: one read without follow (the live read never runs,
            # as the task is never "running" for it).
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return ServiceOutput(opener, self._pool, done, threading.Event(), take)
        running = self._running.setdefault(handle, threading.Event())
        end = self._ends.get(handle)
        if end is None:  # watched from here on as if ``start`` had been called here
            end = self._ends[handle] = asyncio.ensure_future(self._watch(handle))
        return ServiceOutput(opener, self._pool, asyncio.shield(end), running, take)
