"""Docker behind the ``Backend`` interface, with docker-py: a step is one container.

``setup`` is create + ``put_archive`` of the inputs; ``start`` attaches, then starts, so the
attach sees every byte: on Docker 20.10, ``logs(follow=True)`` stops early when a container exits
in a burst, and attach does not (``_attach.py`` reads it). The sandbox's Docker terms are derived
from the engine-neutral ``Step`` in ``_dockerspec.py``; every call goes through the daemon's
thread pool, retry rules and error translation in ``_daemon.py``, which Swarm shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, TypeVar

import docker.errors
import requests

from ..errors import (
    ArchiveTooLarge,
    BackendError,
    ContainerGone,
    ImageNotFound,
    OrchestratorError,
    VolumeInUse,
)
from ..settings import Settings
from ..storage.archive import spooled
from ..timeouts import (
    CONTAINER_REMOVAL_POLL_S,
    CONTAINER_REMOVAL_TIMEOUT_S,
    CONTAINER_STOP_TIMEOUT_S,
)
from . import ExitStatus, FoundStep, PathUsage, Ran, Step, Stream
from ._adopt import LogOutput, found_step, open_logs
from ._attach import AttachOutput
from ._daemon import Daemon, status
from ._dockerspec import create_kwargs, quota_capable, quota_refused, volume_usage_kwargs
from ._exec import CPU_COMMAND, cpu_seconds, path_usage, run_exec, writable_places
from ._usage import Usage, busiest, usage_from_stats

T = TypeVar("T")


class DockerBackend:
    name = "docker"
    sandbox = "Container"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._daemon = Daemon(settings, "docker")
        self._client = self._daemon.client
        self._long = self._daemon.long  # output streams and waits last as long as a build
        self._pool = self._daemon.pool
        # Tied steps: the socket whose end is their end (its stdin: see create_kwargs).
        self._ties: dict[str, Any] = {}
        self._tied: set[str] = set()
        self._gpu_runtime: bool | None = None
        # Whether the storage driver takes a per-container size (`--storage-opt size`): asked
        # of the daemon once, and dropped for good if it refuses one anyway (overlay2 on xfs
        # takes it only when mounted with pquota, which the daemon does not report).
        self._quota: bool | None = None

    async def _run(self, fn: Callable[..., T], *args: Any, idempotent: bool = True) -> T:
        return await self._daemon.run(fn, *args, idempotent=idempotent)

    @property
    def supports_usage(self) -> bool:
        return True

    async def usage(self, handle: str) -> Usage | None:
        # one-shot (API 1.41): the figures now, not a second's wait for a second look.
        stats = await self._run(self._client.api.stats, handle, False, False, True)
        return usage_from_stats(stats)

    async def busiest(self, handle: str) -> tuple[str, ...]:
        return busiest(await self._run(self._client.api.top, handle, "-eo pid,pcpu,comm"))

    async def ping(self) -> None:
        await self._run(self._client.ping)

    async def gpu_runtime(self) -> bool:
        if self._gpu_runtime is None:
            info = await self._run(self._client.info)
            self._gpu_runtime = "nvidia" in (info.get("Runtimes") or {})
        return self._gpu_runtime

    async def image_present(self, image: str) -> bool:
        try:
            await self._run(self._client.images.get, image)
        except ImageNotFound:
            return False
        return True

    async def image_labels(self, image: str) -> Mapping[str, str]:
        found = await self._run(self._client.images.get, image)
        return dict(found.labels or {})

    async def setup(self, step: Step) -> str:
        creating = asyncio.ensure_future(self._run(self._create, step, idempotent=False))
        try:
            cid = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # The daemon makes it all the same, and the caller will have no handle to it; a
            # reap by label now could come before it exists. So wait for it, and remove it.
            with contextlib.suppress(OrchestratorError):
                await self.destroy(await creating)
            raise
        try:
            if step.inputs is not None:
                await self._copy_in(cid, step.workdir, step.inputs)
        except BaseException:
            # Not left for reaping: the caller has no handle to destroy it by.
            removal = asyncio.ensure_future(self.destroy(cid))
            with contextlib.suppress(OrchestratorError):
                await asyncio.shield(removal)
            raise
        return cid

    def _create(self, step: Step) -> str:
        try:
            self._client.images.get(step.image)
        except docker.errors.ImageNotFound:
            hint = " --cuda" if "cuda" in step.image else ""
            raise ImageNotFound(
                f"build image {step.image!r} is not on this Docker host "
                f"(images are never pulled; make it with 'images/bootstrap{hint}')"
            ) from None
        if self._quota is None:
            self._quota = quota_capable(self._client.info())
        network = self._settings.build_network
        kwargs = create_kwargs(step, quota=self._quota, network=network)
        try:
            container = self._client.containers.create(**kwargs)
        except docker.errors.APIError as exc:
            if "storage_opt" not in kwargs or not quota_refused(exc):
                raise
            self._quota = False
            container = self._client.containers.create(
                **create_kwargs(step, quota=False, network=network)
            )
        if step.tied:
            self._tied.add(str(container.id))
        return str(container.id)

    @property
    def enforces_disk_limit(self) -> bool:
        return bool(self._quota)

    async def disk_usage(self, container_id: str) -> int | None:
        found = await self._run(
            functools.partial(
                self._client.api.containers, all=True, filters={"id": container_id}, size=True
            )
        )
        size = found[0].get("SizeRw") if found else None
        return None if size is None else int(size)

    async def path_usage(self, container_id: str, paths: Sequence[str]) -> PathUsage | None:
        return await self._run(path_usage, self._client.api, container_id, paths)

    async def writable_places(self, container_id: str) -> tuple[str, ...] | None:
        return await self._run(writable_places, self._client.api, container_id)

    @property
    def supports_exec(self) -> bool:
        return True

    async def put(self, handle: str, path: str, tar: IO[bytes]) -> None:
        await self._copy_in(handle, path, tar)

    async def exec(
        self, handle: str, command: tuple[str, ...], *, user: str, workdir: str, keep_bytes: int
    ) -> Ran:
        # Not retried: the command may have run.
        call = functools.partial(run_exec, self._long, handle, command, user, workdir, keep_bytes)
        return await self._run(call, idempotent=False)

    async def cpu_seconds(self, handle: str) -> float | None:
        ran = await self.exec(handle, CPU_COMMAND, user="0:0", workdir="/", keep_bytes=256)
        return cpu_seconds(ran.stdout) if ran.code == 0 else None

    async def _copy_in(self, container_id: str, path: str, tar: IO[bytes]) -> None:
        def put() -> None:
            tar.seek(0)  # a retry must send the whole archive again
            if not self._client.api.put_archive(container_id, path, tar):
                raise BackendError(f"docker refused the archive for {path}")

        await self._run(put)

    async def start(self, handle: str) -> AttachOutput:
        # Attached before it starts: a container that prints and exits at once loses nothing.
        sock = await self._run(self._attach, handle)
        output = AttachOutput(sock, self._pool, asyncio.get_running_loop())
        try:
            if handle in self._tied:
                params = {"stdin": 1, "stream": 1}
                self._ties[handle] = await self._run(
                    functools.partial(self._long.attach_socket, handle, params=params)
                )
            await self._run(self._client.api.start, handle)
        except BaseException:
            await output.aclose()
            raise
        return output

    def _attach(self, container_id: str) -> Any:
        # The socket, not docker-py's frame iterator: see _attach.py for why.
        params = {"stdout": 1, "stderr": 1, "stream": 1, "logs": 1}
        return self._long.attach_socket(container_id, params=params)

    async def wait(self, container_id: str) -> ExitStatus:
        result = await self._run(self._long.wait, container_id)
        # The wait answer has only the code; the OOM flag is in the container's state, and is
        # set when any process in it was OOM-killed, not only the first one.
        state = (await self._run(self._client.api.inspect_container, container_id))["State"]
        return ExitStatus(int(result.get("StatusCode", -1)), bool(state.get("OOMKilled")))

    async def kill(self, container_id: str, grace_s: float = 0.0) -> None:
        await self._run(self._kill, container_id, grace_s)

    def _kill(self, container_id: str, grace_s: float) -> None:
        api = self._client.api
        try:
            if grace_s > 0:
                api.kill(container_id, "SIGTERM")
                try:
                    self._long.wait(container_id, timeout=math.ceil(grace_s))
                    return
                except requests.exceptions.RequestException:
                    pass  # still running after the grace period
            api.kill(container_id, "SIGKILL")
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if status(exc) != 409:  # 409: not running, which is what we want
                raise
        try:
            self._long.wait(container_id, timeout=CONTAINER_STOP_TIMEOUT_S)
        except docker.errors.NotFound:
            return

    async def collect(self, handle: str, path: str, max_bytes: int | None = None) -> IO[bytes]:
        return await self._run(self._copy_out, handle, path, max_bytes)

    def _copy_out(self, container_id: str, path: str, max_bytes: int | None) -> IO[bytes]:
        # get_archive's own, but keeping the response: stopping half-way must close it, or
        # the daemon keeps the container busy sending (and its removal waits) for a minute.
        api = self._client.api  # a requests.Session on the daemon's socket
        response = api.get(
            f"{api.base_url}/containers/{container_id}/archive",
            params={"path": path},
            stream=True,
            timeout=self._settings.docker_timeout_s,
        )
        out = spooled()
        # A build decides how much it leaves there: stop at the cap (plus tar's own overhead)
        # rather than spool it all onto the data disk first.
        cap = self._settings.max_artifact_bytes if max_bytes is None else max_bytes
        limit = cap + (1 << 20)
        try:
            if response.status_code == 404:
                raise ContainerGone(f"no {path} in container {container_id[:12]}")
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                if out.tell() + len(chunk) > limit:
                    raise ArchiveTooLarge(
                        f"the packages are larger than {cap} bytes "
                        "(ORCHESTRATOR_MAX_ARTIFACT_BYTES)",
                        limit_bytes=cap,
                    )
                out.write(chunk)
        except BaseException:
            out.close()
            raise
        finally:
            response.close()
        out.seek(0)
        return out

    async def destroy(self, handle: str) -> None:
        await self._run(self._remove, handle)
        self._tied.discard(handle)
        tie = self._ties.pop(handle, None)
        if tie is not None:
            tie.close()

    def _remove(self, container_id: str) -> None:
        api = self._client.api
        try:
            api.remove_container(container_id, v=True, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if status(exc) != 409:  # 409: a removal is already under way; wait for it below
                raise
        deadline = time.monotonic() + CONTAINER_REMOVAL_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
            time.sleep(CONTAINER_REMOVAL_POLL_S)
        raise BackendError(
            f"container {container_id[:12]} was not removed within {CONTAINER_REMOVAL_TIMEOUT_S} s"
        )

    @property
    def supports_volumes(self) -> bool:
        return True

    async def create_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        return await self._run(self._create_volume, name, labels)

    def _create_volume(self, name: str, labels: Mapping[str, str]) -> bool:
        try:
            self._client.api.inspect_volume(name)
            return False
        except docker.errors.NotFound:
            pass
        # Creating one that exists is a no-op for the daemon: a race with another is harmless.
        self._client.api.create_volume(name, labels=dict(labels))
        return True

    async def remove_volume(self, name: str) -> None:
        await self._run(self._remove_volume, name)

    def _remove_volume(self, name: str) -> None:
        try:
            self._client.api.remove_volume(name)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if status(exc) == 409:
                raise VolumeInUse(f"volume {name} is in use by a container") from exc
            raise

    async def volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        return await self._run(self._volume_usage, name, image, labels, idempotent=False)

    def _volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        # Created, run and removed by hand: docker-py's run(remove=True) leaves the container
        # when its start fails.
        container = self._client.containers.create(**volume_usage_kwargs(name, image, labels))
        try:
            container.start()
            container.wait()
            out = container.logs(stdout=True, stderr=False)
        finally:
            self._remove(str(container.id))
        first = bytes(out).split(b"\t", 1)[0].strip()
        return int(first) if first.isdigit() else None

    async def list_volumes(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        found = await self._run(functools.partial(self._client.api.volumes, filters=filters))
        return {str(v["Name"]): dict(v.get("Labels") or {}) for v in found.get("Volumes") or []}

    async def reap(self, labels: Mapping[str, str]) -> list[str]:
        ids = list(await self.list_steps(labels))
        await asyncio.gather(*(self.destroy(cid) for cid in ids))
        return ids

    async def list_steps(self, labels: Mapping[str, str]) -> dict[str, Mapping[str, str]]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        found = await self._run(
            functools.partial(self._client.api.containers, all=True, filters=filters)
        )
        return {str(c["Id"]): dict(c.get("Labels") or {}) for c in found}

    supports_adopt = True

    async def find(self, labels: Mapping[str, str]) -> list[FoundStep]:
        found: list[FoundStep] = []
        for handle in await self.list_steps(labels):
            try:
                info = await self._run(self._client.api.inspect_container, handle)
            except ContainerGone:
                continue  # removed meanwhile
            found.append(found_step(info))
        return found

    async def reattach(
        self,
        handle: str,
        skip: Mapping[Stream, int],
        *,
        follow: bool,
        ends: Mapping[Stream, tuple[str, str]] | None = None,
    ) -> LogOutput:
        async def running() -> bool:
            info = await self._run(self._client.api.inspect_container, handle)
            return found_step(info).state != "exited"

        # The long client: a follow read lasts as long as the build.
        reads = functools.partial(open_logs, self._long, handle)
        return LogOutput(reads, running, self._pool, skip, follow=follow, ends=ends)

    async def close(self) -> None:
        for tie in self._ties.values():
            tie.close()
        self._daemon.close()
