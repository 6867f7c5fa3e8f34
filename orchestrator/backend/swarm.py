"""Docker Swarm behind the ``Backend`` interface: a step is one service with one task.

Only what a manager offers is used (services, tasks, nodes, configs, networks, service logs, and
the manager's own image list for what the health check and the runner ask of an image), never a
call to a node-local container, so a task may land on any node; ``tests/unit/test_swarm.py``
enforces it. Inputs and packages travel over this service's own listener (``_handoff.py``), and
so does the output of a step with network, pushed by its task (``_pushed.py``) and completed,
where the push missed some, from the service logs API (``_servicelogs.py``), which alone tells
a sealed step's; the service's spec and the reading of tasks and nodes are in ``_swarmspec.py``.

The service is ``replicated`` with one replica and restart condition ``none`` (or ``on-failure``
for ``swarm_restart_attempts``), not ``replicated-job``: on 20.10 removing a job service leaves
its running task's container running, which would make cancel a lie. ``kill`` has the task's
wrapper end it through the handoff listener, or else removes the service (SIGTERM, SIGKILL after
the stop grace), and knows no process is left on any node once the node reports the task ended
(``_swarmstop.py``, which also tells where the time goes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import docker.errors

from ..errors import (
    BackendError,
    BackendUnavailable,
    ContainerGone,
    ImageNotFound,
    NoPlacement,
    StepLost,
)
from ..settings import Settings
from ..timeouts import SWARM_NODE_CHECK_S, SWARM_POLL_S
from . import ExitStatus, OutputStream, Step, Stream
from . import _swarmspec as spec
from ._daemon import Daemon
from ._handoff import Handoff, step_secret, wrapper_env
from ._lacking import NoDiskWatch, NoExec, NoSampling
from ._pushed import PushedOutput
from ._servicelogs import ServiceOutput
from ._swarmadopt import SwarmAdoption
from ._swarmspec import INPUTS_FILE, SEALED_NETWORK
from ._swarmstop import stop_and_remove
from ._swarmvolumes import ArchivedVolumes, VolumeStore

T = TypeVar("T")

MAX_CONFIG_BYTES = 500 * 1000  # Swarm's limit for a config
_ENDED = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})


@dataclass
class _Planned:
    """A step set up but not started: the service to create, and what to remove with it."""

    create: dict[str, Any]
    config_id: str | None = None


class SwarmBackend(SwarmAdoption, ArchivedVolumes, NoDiskWatch, NoExec, NoSampling):
    """What Swarm cannot do (docs/backends.md): tell a step's disk use or run a command in it
    (only the node's daemon knows its containers). Its cache volumes are archives the handoff
    carries (``_swarmvolumes.py``): a named volume would be the node's."""

    name = "swarm"
    sandbox = "Service"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._daemon = Daemon(settings, "swarm")
        self._client = self._daemon.client
        self._long = self._daemon.long  # log reads last as long as a build
        self._api = self._daemon.api
        self._pool = self._daemon.pool
        self._handoff: Handoff | None = None
        self._handoff_made = asyncio.Lock()
        self._volumes = VolumeStore(settings.data_dir / "swarm-volumes", settings.cache_max_bytes)
        self._planned: dict[str, _Planned] = {}
        self._ends: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._running: dict[str, threading.Event] = {}  # set once the task has run
        self._killed: set[str] = set()
        self._removed: set[str] = set()  # killed to the end: a kill again has nothing to do
        self._lost: dict[str, str] = {}  # handle → why we stopped it ourselves (its node)

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, idempotent: bool = True) -> T:
        try:
            return await self._daemon.run(fn, *args, idempotent=idempotent)
        except BackendError as exc:
            if "not a swarm manager" in str(exc) or "swarm mode" in str(exc):
                raise BackendUnavailable(
                    f"the Docker engine is not a swarm manager ({exc}): run the service on a "
                    "manager node ('docker swarm init' makes this one a one-node swarm)"
                ) from exc
            raise

    async def _ensure_handoff(self) -> Handoff:
        async with self._handoff_made:  # one listener: the first callers come at once
            if self._handoff is None:
                self._handoff = await self._new_handoff()
        await self._handoff.start()
        return self._handoff

    async def _new_handoff(self) -> Handoff:
        listen = self._settings.swarm_listen
        if listen:
            host, _, port = listen.rpartition(":")
            host = host.strip("[]")
        else:
            host, port = await self._run(self._bridge_gateway), "0"
        secret = await asyncio.to_thread(step_secret, self._settings.data_dir)
        return Handoff(
            host,
            int(port),
            self._settings.swarm_callback_url,
            self._settings.max_artifact_bytes,
            secret,
            self._volumes,
        )

    def _bridge_gateway(self) -> str:
        return spec.gateway(self._api.inspect_network("bridge"))

    # -- what the runner asks of the engine -------------------------------------------------

    async def ping(self) -> None:
        info = await self._run(self._client.info)
        swarm = info.get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            raise BackendUnavailable(
                "the Docker engine is not a swarm manager (ORCHESTRATOR_BACKEND=swarm): run "
                "the service on a manager node ('docker swarm init' makes this one a "
                "one-node swarm)"
            )

    async def image_present(self, image: str) -> bool:
        try:
            await self._run(self._client.images.get, image)
        except BackendError:  # absent, or the daemon cannot say: not usable either way
            return False
        return True

    async def image_labels(self, image: str) -> Mapping[str, str]:
        try:
            found = await self._run(self._client.images.get, image)
        except ImageNotFound:
            raise ImageNotFound(spec.no_image(image)) from None
        return dict(found.labels or {})

    async def gpu_runtime(self) -> bool:
        label = self._settings.swarm_gpu_label
        return any(spec.has_gpu(n, label) for n in await self._nodes())

    async def _nodes(self) -> list[dict[str, Any]]:
        nodes = await self._run(self._api.nodes)
        return [n for n in nodes if spec.usable(n)]

    # -- one step ---------------------------------------------------------------------------

    async def setup(self, step: Step) -> str:
        nodes = await self._nodes()
        if not nodes:
            raise NoPlacement("no swarm node is ready and active to take the build")
        gpu_nodes = [n for n in nodes if spec.has_gpu(n, self._settings.swarm_gpu_label)]
        if step.gpus and not gpu_nodes:
            raise NoPlacement(
                "the build needs a GPU and no active swarm node has one: label a GPU node "
                f"with 'docker node update --label-add {self._settings.swarm_gpu_label}=true "
                "NODE' (or advertise a generic GPU resource)"
            )
        try:
            image = await self._run(self._client.images.get, step.image)
        except ImageNotFound:
            raise ImageNotFound(spec.no_image(step.image)) from None
        if not step.network and (step.outputs or step.volumes):
            raise BackendError("on swarm a step without network cannot send files back")
        handle = f"orch-{secrets.token_hex(10)}"
        inputs = await asyncio.to_thread(spec.spooled_copy, step.inputs) if step.inputs else None
        planned = _Planned({})
        try:
            source: str | None = None
            if inputs is not None and step.network:
                source = "fetch"
            elif inputs is not None:
                planned.config_id = await self._sealed_inputs(handle, step, inputs)
                inputs.close()
                inputs, source = None, INPUTS_FILE
            handoff = await self._ensure_handoff()
            # A task that can reach the listener pushes its output there.
            token = handoff.open(
                handle, inputs, step.outputs, push=step.network, volumes=tuple(step.volumes)
            )
            if not step.network:
                await self._run(self._sealed_network)
            env = wrapper_env(
                handoff.url,
                handle,
                token,
                source,
                step.outputs,
                step.network,
                stop=step.network,
                volumes=step.volumes,
            )
            if step.read_only:
                env["ORCHESTRATOR_STEP_DIR"] = "/tmp/" + step.workdir.strip("/").replace("/", "-")
            planned.create = spec.service_kwargs(
                handle, step, str(image.id), env, planned.config_id, gpu_nodes, self._settings
            )
        except BaseException:
            if inputs is not None:
                inputs.close()
            await self._forget(handle, planned)
            raise
        self._planned[handle] = planned
        return handle

    async def _sealed_inputs(self, handle: str, step: Step, inputs: IO[bytes]) -> str:
        data = inputs.read()
        if len(data) > MAX_CONFIG_BYTES:
            raise BackendError(
                f"on swarm a step without network takes its inputs as a config, at most "
                f"{MAX_CONFIG_BYTES} bytes ({len(data)} here)"
            )
        created = await self._run(
            functools.partial(
                self._api.create_config, f"{handle}-inputs", data, labels=dict(step.labels)
            ),
            idempotent=False,
        )
        return str(created["ID"])

    def _sealed_network(self) -> None:
        if self._api.networks(names=[SEALED_NETWORK]):
            return
        with contextlib.suppress(docker.errors.APIError):  # made meanwhile by another
            self._api.create_network(
                SEALED_NETWORK, driver="overlay", internal=True, check_duplicate=True
            )

    async def start(self, handle: str) -> OutputStream:
        planned = self._planned.get(handle)
        if planned is None:
            raise ContainerGone(f"step {handle} is not set up (or was destroyed)")
        await self._run(
            functools.partial(self._api.create_service, **planned.create), idempotent=False
        )
        running = self._running.setdefault(handle, threading.Event())
        end = asyncio.ensure_future(self._watch(handle))
        self._ends[handle] = end
        narration = self._handoff.narration(handle) if self._handoff is not None else None
        if narration is not None:
            return PushedOutput(
                narration, asyncio.shield(end), functools.partial(self._completion, handle), handle
            )
        return ServiceOutput(
            functools.partial(self._open_logs, handle), self._pool, asyncio.shield(end), running
        )

    async def _completion(self, handle: str, skip: dict[Stream, int]) -> OutputStream:
        # What the push missed: one read of the ended task's service logs, less what it told.
        return await self.reattach(handle, skip, follow=False)

    def _open_logs(self, handle: str, follow: bool) -> Any:
        params = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": int(follow)}
        api = self._long  # a requests.Session on the manager's socket
        response = api.get(f"{api.base_url}/services/{handle}/logs", params=params, stream=True)
        if response.status_code == 404:
            response.close()
            raise ContainerGone(f"service {handle} is gone")
        response.raise_for_status()
        return response

    async def _watch(self, handle: str) -> dict[str, Any]:
        """Poll the service's tasks until the step has ended; its last task."""
        attempts = self._settings.swarm_restart_attempts
        checked = 0.0
        while True:
            try:
                tasks: list[dict[str, Any]] = await self._run(
                    functools.partial(self._api.tasks, filters={"service": handle})
                )
            except ContainerGone:  # the service was removed: killed, or by someone else
                return {"Status": {"State": "remove", "Err": "the service was removed"}}
            task = spec.followed(tasks, attempts)
            if task is not None:
                index = sorted(tasks, key=lambda t: str(t.get("CreatedAt") or "")).index(task)
                state = spec.task_state(task)
                if state == "running" or state in _ENDED:
                    self._running[handle].set()
                if state == "complete":
                    return task
                if state in _ENDED and not (spec.failed(task) and index < attempts):
                    return task
                node_id = task.get("NodeID")
                now = time.monotonic()
                if node_id and state not in _ENDED and now - checked >= SWARM_NODE_CHECK_S:
                    checked = now
                    if why := await self._node_trouble(str(node_id)):
                        self._lost[handle] = why
                        await self.kill(handle)
                        return task
            await asyncio.sleep(SWARM_POLL_S)

    async def _node_trouble(self, node_id: str) -> str | None:
        try:
            node = await self._run(self._api.inspect_node, node_id)
        except ContainerGone:
            node = None
        return spec.node_trouble(node, node_id)

    async def wait(self, handle: str) -> ExitStatus:
        end = self._ends.get(handle)
        if end is None:
            raise ContainerGone(f"step {handle} was not started")
        task = await asyncio.shield(end)
        if why := self._lost.get(handle):
            raise StepLost(why)
        status = task.get("Status") or {}
        state, err = str(status.get("State")), str(status.get("Err") or status.get("Message"))
        code = spec.exit_code(task)
        narration = self._handoff.narration(handle) if self._handoff is not None else None
        report = narration.report if narration is not None else None
        if state in ("complete", "failed") and code is not None:
            # Swarm's task status has no OOM flag: the wrapper's report (its cgroup's count).
            return ExitStatus(code, report is not None and report.oom_killed)
        if handle in self._killed:
            return ExitStatus(137)
        if "No such image" in err:
            raise ImageNotFound(f"a swarm node lacks the build image: {err}")
        node = task.get("NodeID")
        if state == "shutdown" and node and (why := await self._node_trouble(str(node))):
            raise StepLost(why)
        raise StepLost(f"swarm ended the build's task ({state}): {err}")

    async def collect(self, handle: str, path: str, max_bytes: int | None = None) -> IO[bytes]:
        if self._handoff is None:
            raise ContainerGone(f"step {handle} sent nothing back")
        return self._handoff.output(handle, path, max_bytes)

    async def kill(self, handle: str, grace_s: float = 0.0) -> None:
        """The task's wrapper ends it (SIGTERM to the command, SIGKILL to every process after
        ``grace_s``) when it listens for that, else ``service rm`` (the same, with the stop
        grace set at creation, ``kill_grace_s``); returns once its node has reported it
        stopped and the service is removed (``_swarmstop.py``)."""
        self._killed.add(handle)
        if handle in self._removed:
            return
        asked = self._handoff is not None and self._handoff.stop(handle, grace_s)
        await self._run(stop_and_remove, self._api, handle, grace_s, asked)
        self._removed.add(handle)

    async def destroy(self, handle: str) -> None:
        await self.kill(handle)
        self._running.pop(handle, None)
        end = self._ends.pop(handle, None)
        if end is not None:
            end.cancel()
        await self._forget(handle, self._planned.pop(handle, None))

    async def _forget(self, handle: str, planned: _Planned | None) -> None:
        if self._handoff is not None:
            self._handoff.drop(handle)
        self._killed.discard(handle)
        self._removed.discard(handle)
        self._lost.pop(handle, None)
        if planned is not None and planned.config_id:
            with contextlib.suppress(ContainerGone):
                await self._run(self._api.remove_config, planned.config_id)

    async def reap(self, labels: Mapping[str, str]) -> list[str]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        services = await self._run(functools.partial(self._api.services, filters=filters))
        names = [str(s["Spec"]["Name"]) for s in services]
        await asyncio.gather(*(self.destroy(name) for name in names))
        configs = await self._run(functools.partial(self._api.configs, filters=filters))
        for config in configs:
            with contextlib.suppress(ContainerGone):
                await self._run(self._api.remove_config, config["ID"])
        return names

    async def list_steps(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        services = await self._run(functools.partial(self._api.services, filters=filters))
        return {str(s["Spec"]["Name"]): dict(s["Spec"].get("Labels") or {}) for s in services}

    async def close(self) -> None:
        for end in self._ends.values():
            end.cancel()
        if self._handoff is not None:
            await self._handoff.close()
        self._daemon.close()
