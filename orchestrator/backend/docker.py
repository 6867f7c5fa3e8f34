"""Docker behind the ``Backend`` interface, with docker-py.

docker-py blocks, so every call runs in this backend's own thread pool (a build holds a thread for
its output and one for its wait; the loop's default pool is too small for that). Output is read
from an ``attach`` made before ``start``: on Docker 20.10, ``logs(follow=True)`` stops early when a
container exits in a burst, and attach does not. Lines cross to the event loop in batches through a
bounded queue, which also pushes back on a container that prints faster than we consume.
Only transient daemon errors are retried; docker errors leave this module as ours.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, TypeVar, cast

import docker
import docker.errors
import requests
from docker.types import DeviceRequest, LogConfig
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..archive import spooled
from ..errors import BackendError, BackendUnavailable, ContainerGone, ImageNotFound
from ..settings import Settings
from . import ContainerSpec, OutputLine, Stream

T = TypeVar("T")

_MAX_LINE_BYTES = 64 * 1024  # a longer run without a newline is cut, so memory stays bounded
_MAX_BUFFERED_LINES = 50_000  # then the reader waits, and so does the container


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


def _status(exc: docker.errors.APIError) -> int:
    return exc.status_code or 0


class DockerBackend:
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
        self._gpu_runtime: bool | None = None

    async def _run(self, fn: Callable[..., T], *args: Any, idempotent: bool = True) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._call, fn, *args, idempotent=idempotent)
        return await loop.run_in_executor(self._pool, call)

    def _call(self, fn: Callable[..., T], *args: Any, idempotent: bool) -> T:
        try:
            return _retrying(idempotent)(fn, *args)
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(str(exc.explanation or exc)) from exc
        except docker.errors.NotFound as exc:
            raise ContainerGone(str(exc.explanation or exc)) from exc
        except requests.exceptions.ConnectionError as exc:
            raise BackendUnavailable(_unreachable(self._settings, exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise BackendError(f"docker did not answer in time: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise BackendError(f"docker: {exc}") from exc

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

    async def create(self, spec: ContainerSpec) -> str:
        return await self._run(self._create, spec, idempotent=False)

    def _create(self, spec: ContainerSpec) -> str:
        try:
            self._client.images.get(spec.image)
        except docker.errors.ImageNotFound:
            hint = " --cuda" if "cuda" in spec.image else ""
            raise ImageNotFound(
                f"build image {spec.image!r} is not on this Docker host "
                f"(images are never pulled; make it with 'images/bootstrap{hint}')"
            ) from None
        container = self._client.containers.create(**create_kwargs(spec))
        return str(container.id)

    async def copy_in(self, container_id: str, path: str, tar: IO[bytes]) -> None:
        def put() -> None:
            tar.seek(0)  # a retry must send the whole archive again
            if not self._client.api.put_archive(container_id, path, tar):
                raise BackendError(f"docker refused the archive for {path}")

        await self._run(put)

    async def attach(self, container_id: str) -> DockerOutput:
        raw = await self._run(self._attach, container_id)
        return DockerOutput(raw, self._pool, asyncio.get_running_loop())

    def _attach(self, container_id: str) -> Any:
        return self._long.attach(
            container_id, stdout=True, stderr=True, stream=True, logs=True, demux=True
        )

    async def start(self, container_id: str) -> None:
        await self._run(self._client.api.start, container_id)

    async def wait(self, container_id: str) -> int:
        result = await self._run(self._long.wait, container_id)
        return int(result.get("StatusCode", -1))

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

    async def copy_out(self, container_id: str, path: str) -> IO[bytes]:
        return await self._run(self._copy_out, container_id, path)

    def _copy_out(self, container_id: str, path: str) -> IO[bytes]:
        chunks, _stat = self._client.api.get_archive(container_id, path, chunk_size=1 << 20)
        out = spooled()
        try:
            for chunk in chunks:
                out.write(chunk)
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return out

    async def remove(self, container_id: str) -> None:
        await self._run(self._remove, container_id)

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

    async def reap(self, labels: Mapping[str, str]) -> list[str]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        found = await self._run(
            functools.partial(self._client.api.containers, all=True, filters=filters)
        )
        ids = [str(c["Id"]) for c in found]
        await asyncio.gather(*(self.remove(cid) for cid in ids))
        return ids

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._long.close()
        self._client.close()


def create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """The ``containers.create`` arguments for a spec: the sandbox every build runs in."""
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "labels": dict(spec.labels),
        "user": spec.user,
        "working_dir": spec.workdir,
        "environment": dict(spec.env),
        "network_mode": spec.network,
        # docker-init as PID 1 reaps zombies and forwards signals; a SIGKILL of the container
        # then takes every process in its PID namespace with it.
        "init": True,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "detach": True,
        "tty": False,
        "stdin_open": False,
        "log_config": LogConfig(
            type=LogConfig.types.JSON,
            config={"max-size": str(spec.log_max_bytes)} if spec.log_max_bytes else {},
        ),
    }
    if spec.memory_bytes:
        kwargs["mem_limit"] = spec.memory_bytes
    if spec.cpus:
        kwargs["nano_cpus"] = int(spec.cpus * 1e9)
    if spec.pids_limit:
        kwargs["pids_limit"] = spec.pids_limit
    if spec.gpus:
        kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
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


class DockerOutput:
    """The attach stream as batches of lines; see the module docstring for why attach.

    The reader thread appends lines to a buffer and wakes the loop only when the buffer goes
    from empty to not empty, so when the loop is busy the lines pile up into one big batch
    instead of costing a cross-thread call each (a build that flushes every line sends one
    frame per line). The buffer is bounded: a full one makes the reader wait, which in turn
    makes the container wait on its pipe.
    """

    def __init__(self, raw: Any, pool: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop):
        self._raw = raw
        self._loop = loop
        self._lines: list[OutputLine] = []
        self._done = False  # the stream ended (after _lines is drained: the end)
        self._error: BaseException | None = None
        self._lock = threading.Condition()
        self._wakeup = asyncio.Event()
        self._closed = threading.Event()
        self._reader = loop.run_in_executor(pool, self._read)

    def _signal(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._closed.set()

    def _read(self) -> None:
        try:
            for batch in split_lines(self._raw):
                with self._lock:
                    while len(self._lines) >= _MAX_BUFFERED_LINES and not self._closed.is_set():
                        self._lock.wait(timeout=1.0)
                    if self._closed.is_set():
                        return
                    was_empty = not self._lines
                    self._lines.extend(batch)
                if was_empty:
                    self._signal()
        except BaseException as exc:  # reported to the reader side, not lost in the pool
            self._error = BackendError(f"lost the build's output stream: {exc}")
        finally:
            self._raw.close()
            with self._lock:
                self._done = True
            self._signal()

    async def __aiter__(self) -> AsyncIterator[list[OutputLine]]:
        while True:
            with self._lock:
                batch, self._lines = self._lines, []
                done = self._done
                self._lock.notify_all()
            if batch:
                yield batch
                continue
            if done:
                if self._error is not None:
                    raise self._error
                return
            self._wakeup.clear()
            with self._lock:
                pending = bool(self._lines) or self._done
            if not pending:
                await self._wakeup.wait()

    async def aclose(self) -> None:
        self._closed.set()
        self._raw.close()
        with self._lock:
            self._lock.notify_all()  # a reader waiting for room sees the flag and stops
        await asyncio.wait({self._reader}, timeout=5)


def split_lines(frames: Iterator[tuple[bytes | None, bytes | None]]) -> Iterator[list[OutputLine]]:
    """Demuxed attach frames → batches of whole lines, each tagged with its stream.

    A partial line waits for the rest of it from the same stream; at the end every partial
    line is flushed, so nothing written is lost.
    """
    partial: dict[Stream, bytes] = {"stdout": b"", "stderr": b""}
    for out, err in frames:
        now = time.time()
        batch: list[OutputLine] = []
        for stream, data in (("stdout", out), ("stderr", err)):
            if not data:
                continue
            buf = partial[stream] + data  # type: ignore[index]
            *complete, rest = buf.split(b"\n")
            batch.extend(OutputLine(stream, _decode(line), now) for line in complete)  # type: ignore[arg-type]
            while len(rest) > _MAX_LINE_BYTES:
                batch.append(OutputLine(stream, _decode(rest[:_MAX_LINE_BYTES]), now))  # type: ignore[arg-type]
                rest = rest[_MAX_LINE_BYTES:]
            partial[stream] = rest  # type: ignore[index]
        if batch:
            yield batch
    tail = [OutputLine(s, _decode(b), time.time()) for s, b in partial.items() if b]
    if tail:
        yield tail


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").removesuffix("\r")
