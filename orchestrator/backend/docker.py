"""Docker behind the ``Backend`` interface, with docker-py: a step is one container.

``setup`` is create + ``put_archive`` of the inputs; ``start`` attaches, then starts, so the
attach sees every byte: on Docker 20.10, ``logs(follow=True)`` stops early when a container exits
in a burst, and attach does not (``_attach.py`` reads it). The sandbox's Docker terms (init,
dropped capabilities, no-new-privileges, the json-file log, a storage quota, tmpfs and scratch
volumes) are derived here from the engine-neutral ``Step``, in ``create_kwargs``.

docker-py blocks, so every call runs in this backend's own thread pool (a build holds a thread for
its output and one for its wait; the loop's default pool is too small for that). Only transient
daemon errors are retried; docker errors leave this module as ours.

Over ~400 lines on purpose: one engine, one module (as Woodpecker's backends are); every call
shares the thread pool, the retry rules and the translation of docker-py's errors, which would
have to be exported to split it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar, cast

import docker
import docker.errors
import requests
from docker.types import DeviceRequest, LogConfig, Mount
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import (
    ArchiveTooLarge,
    BackendError,
    BackendUnavailable,
    ContainerGone,
    ImageNotFound,
    OrchestratorError,
    VolumeInUse,
)
from ..settings import Settings
from ..storage.archive import spooled
from . import ExitStatus, FoundStep, PathUsage, Ran, Step, Stream
from ._adopt import LogOutput, found_step, open_logs
from ._attach import AttachOutput
from ._exec import CPU_COMMAND, cpu_seconds, run_exec

T = TypeVar("T")


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, requests.exceptions.ConnectionError):
        return True
    return isinstance(exc, docker.errors.APIError) and (exc.status_code or 0) >= 500


def _is_unsent(exc: BaseException) -> bool:
    """True when the daemon cannot have acted on the request: safe to retry anything."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError | FileNotFoundError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _retrying(idempotent: bool) -> Retrying:
    return Retrying(
        retry=retry_if_exception(_is_transient if idempotent else _is_unsent),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        reraise=True,
    )


def daemon_call(
    settings: Settings, engine: str, fn: Callable[..., T], *args: Any, idempotent: bool
) -> T:
    """``fn(*args)`` against the daemon, retried while that is safe, with docker-py's errors
    turned into this service's: one translation for every engine that talks to a daemon."""
    try:
        return _retrying(idempotent)(fn, *args)
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(str(exc.explanation or exc)) from exc
    except docker.errors.NotFound as exc:
        raise ContainerGone(str(exc.explanation or exc)) from exc
    except requests.exceptions.ConnectionError as exc:
        raise BackendUnavailable(_unreachable(settings, exc)) from exc
    except requests.exceptions.RequestException as exc:
        raise BackendError(f"{engine} did not answer in time: {exc}") from exc
    except docker.errors.DockerException as exc:
        raise BackendError(f"{engine}: {exc}") from exc


def _status(exc: docker.errors.APIError) -> int:
    return exc.status_code or 0


# What a watch's command (du, find) may print: a filesystem's writable places, one per line.
_WATCH_KEEP_BYTES = 16 * 1024 * 1024


class DockerBackend:
    name = "docker"
    sandbox = "Container"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        try:
            self._client = _client(settings, settings.docker_timeout_s)
            # Output streams and waits last as long as a build: they get a client without timeout.
            self._long = _client(settings, None).api
        except docker.errors.DockerException as exc:
            raise BackendUnavailable(_unreachable(settings, exc)) from exc
        self._pool = ThreadPoolExecutor(
            max_workers=3 * settings.max_concurrent_builds + 8, thread_name_prefix="docker"
        )
        # Tied steps: the socket whose end is their end (its stdin: see create_kwargs).
        self._ties: dict[str, Any] = {}
        self._tied: set[str] = set()
        self._gpu_runtime: bool | None = None
        # Whether the storage driver takes a per-container size (`--storage-opt size`): asked
        # of the daemon once, and dropped for good if it refuses one anyway (overlay2 on xfs
        # takes it only when mounted with pquota, which the daemon does not report).
        self._quota: bool | None = None

    async def _run(self, fn: Callable[..., T], *args: Any, idempotent: bool = True) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._call, fn, *args, idempotent=idempotent)
        return await loop.run_in_executor(self._pool, call)

    def _call(self, fn: Callable[..., T], *args: Any, idempotent: bool) -> T:
        return daemon_call(self._settings, "docker", fn, *args, idempotent=idempotent)

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
            if "storage_opt" not in kwargs or not _quota_refused(exc):
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
        ran = await self._run(self._exec, container_id, ["du", "-sxb", "--", *paths])
        if ran is None:
            return None
        out, code = ran
        sizes: dict[str, int] = {}
        for line in out.splitlines():
            size, _, path = line.partition(b"\t")
            if size.strip().isdigit():
                sizes[path.decode(errors="replace")] = int(size)
        # du names each path as given, once: a path missing from its answer was not measured.
        if not all(path in sizes for path in paths):
            return None
        return PathUsage(sizes, complete=code == 0)

    async def writable_places(self, container_id: str) -> tuple[str, ...] | None:
        # What the user owns it could make writable at any time, so that counts as writable.
        find = ["find", "/", "-xdev", "(", "-writable", "-o", "-user", "builder", ")"]
        ran = await self._run(self._exec, container_id, [*find, "-prune", "-print0"])
        # find fails for every folder it may not enter, and still lists all the others.
        if ran is None:
            return None
        return tuple(p.decode(errors="replace") for p in ran[0].split(b"\0") if p)

    def _exec(self, container_id: str, argv: list[str]) -> tuple[bytes, int] | None:
        """``argv``'s output and exit code, run in the step's container as its user (~5 ms
        plus its own work; no host access); None when the container has stopped."""
        try:
            ran = run_exec(
                self._client.api, container_id, tuple(argv), "builder", "/", _WATCH_KEEP_BYTES
            )
        except docker.errors.APIError:
            return None  # stopped meanwhile
        return None if ran.code < 0 else (ran.stdout, ran.code)

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
            if _status(exc) != 409:  # 409: not running, which is what we want
                raise
        try:
            self._long.wait(container_id, timeout=60)
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
            if _status(exc) != 409:  # 409: a removal is already under way; wait for it below
                raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
            time.sleep(0.05)
        raise BackendError(f"container {container_id[:12]} was not removed within 30 s")

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
            if _status(exc) == 409:
                raise VolumeInUse(f"volume {name} is in use by a container") from exc
            raise

    async def volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        return await self._run(self._volume_usage, name, image, labels, idempotent=False)

    def _volume_usage(self, name: str, image: str, labels: Mapping[str, str]) -> int | None:
        # A throwaway container (~0.7 s here) with the volume read-only: root with only the
        # right to read any folder, no network. The build's own `du` would miss what its user
        # cannot read, and Docker's own measure (/system/df) walks every container (~5 s).
        # Created, run and removed by hand: docker-py's run(remove=True) leaves the container
        # when its start fails.
        container = self._client.containers.create(
            image,
            ["du", "-sxb", "/volume"],
            user="root",
            cap_drop=["ALL"],
            cap_add=["DAC_READ_SEARCH"],
            security_opt=["no-new-privileges"],
            network_mode="none",
            labels=dict(labels),
            mounts=[Mount("/volume", name, type="volume", read_only=True)],
        )
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

    async def reattach(self, handle: str, skip: Mapping[Stream, int], *, follow: bool) -> LogOutput:
        async def running() -> bool:
            info = await self._run(self._client.api.inspect_container, handle)
            return found_step(info).state != "exited"

        # The long client: a follow read lasts as long as the build.
        reads = functools.partial(open_logs, self._long, handle)
        return LogOutput(reads, running, self._pool, skip, follow=follow)

    async def close(self) -> None:
        for tie in self._ties.values():
            tie.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._long.close()
        self._client.close()


# Storage drivers that can cap a container's writable layer; overlay2 only on xfs (with pquota).
_QUOTA_DRIVERS = frozenset({"btrfs", "zfs", "devicemapper", "windowsfilter"})


def quota_capable(info: Mapping[str, Any]) -> bool:
    """Whether the daemon's storage driver may take ``storage_opt={"size": ...}``."""
    driver = str(info.get("Driver") or "")
    if driver in _QUOTA_DRIVERS:
        return True
    status = {str(k): str(v) for k, v in info.get("DriverStatus") or []}
    return driver == "overlay2" and status.get("Backing Filesystem") == "xfs"


def _quota_refused(exc: docker.errors.APIError) -> bool:
    text = str(exc.explanation or exc).lower()
    return "storage-opt" in text or "storage opt" in text or "quota" in text


def create_kwargs(step: Step, *, quota: bool = False, network: str = "bridge") -> dict[str, Any]:
    """The ``containers.create`` arguments for a step: the sandbox every build runs in.

    ``network`` is the Docker network a step with network gets (``build_network``); ``quota``
    says whether the storage driver takes a size for the container's writable layer."""
    kwargs: dict[str, Any] = {
        "image": step.image,
        "command": list(step.command),
        "labels": dict(step.labels),
        "user": step.user,
        "working_dir": step.workdir,
        "environment": dict(step.env),
        "network_mode": network if step.network else "none",
        # docker-init as PID 1 reaps zombies and forwards signals; a SIGKILL of the container
        # then takes every process in its PID namespace with it.
        "init": True,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "tty": False,
        # A tied step's command reads its stdin to the end, and the stdin is this process's
        # attach socket: when this process goes, so does the step, and Docker removes it.
        # (docker-py sets StdinOnce, which closes the stdin with that socket, only for a
        # container that is not "detached", a flag that changes nothing else here.)
        "detach": not step.tied,
        "stdin_open": step.tied,
        "auto_remove": step.tied,
        "log_config": LogConfig(
            type=LogConfig.types.JSON,
            config={"max-size": str(step.log_max_bytes)} if step.log_max_bytes else {},
        ),
    }
    if step.memory_bytes:
        kwargs["mem_limit"] = step.memory_bytes
    if step.cpus:
        kwargs["nano_cpus"] = int(step.cpus * 1e9)
    if step.pids_limit:
        kwargs["pids_limit"] = step.pids_limit
    if step.gpus:
        kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if quota and step.disk_bytes:
        kwargs["storage_opt"] = {"size": str(step.disk_bytes)}
    if step.read_only:
        kwargs["read_only"] = True
        kwargs["tmpfs"] = {"/tmp": f"size={step.tmp_bytes}"}
        # An anonymous volume at the workdir: writable (and reachable by put_archive) under
        # the read-only root, and removed with the container (remove(v=True)).
        kwargs["volumes"] = [step.workdir]
    if step.volumes:
        kwargs["mounts"] = [
            Mount(target, name, type="volume", no_copy=False)
            for name, target in step.volumes.items()
        ]
    return kwargs


def _client(settings: Settings, timeout_s: float | None) -> docker.DockerClient:
    # docker-py hands the timeout to requests, where None means "wait for as long as it takes";
    # its stubs only admit int.
    timeout = cast(int, timeout_s)
    if settings.docker_url:
        return docker.DockerClient(base_url=settings.docker_url, timeout=timeout)
    return docker.from_env(timeout=timeout)


def _unreachable(settings: Settings, exc: BaseException) -> str:
    where = settings.docker_url or "DOCKER_HOST or /var/run/docker.sock"
    return (
        f"cannot reach the Docker daemon at {where}: {exc}. The service needs the host's "
        "Docker socket (in a container: mount /var/run/docker.sock)"
    )
