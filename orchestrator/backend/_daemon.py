"""One Docker daemon as both engines talk to it: its clients, the thread pool every call runs in,
the retry rules, and docker-py's errors turned into this service's.

docker-py blocks, so every call runs in the engine's own thread pool (a build holds a thread for
its output and one for its wait; the loop's default pool is too small for that). Only transient
daemon errors are retried; docker errors leave here as ours. The Docker engine (``docker.py``)
and the Swarm engine (``swarm.py``, which talks to a manager's daemon) each hold one ``Daemon``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import docker
import docker.errors
import requests
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ..errors import BackendError, BackendUnavailable, ContainerGone, ImageNotFound
from ..settings import Settings
from ..timeouts import DAEMON_ATTEMPTS, DAEMON_RETRY_FIRST_S, DAEMON_RETRY_MAX_S

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """A failure that asking again may cure: no connection, or the daemon's own 5xx."""
    if isinstance(exc, requests.exceptions.ConnectionError):
        return True
    return isinstance(exc, docker.errors.APIError) and (exc.status_code or 0) >= 500


def is_unsent(exc: BaseException) -> bool:
    """True when the daemon cannot have acted on the request: safe to retry anything."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError | FileNotFoundError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def status(exc: docker.errors.APIError) -> int:
    return exc.status_code or 0


def _retrying(idempotent: bool) -> Retrying:
    return Retrying(
        retry=retry_if_exception(is_transient if idempotent else is_unsent),
        stop=stop_after_attempt(DAEMON_ATTEMPTS),
        wait=wait_exponential(multiplier=DAEMON_RETRY_FIRST_S, max=DAEMON_RETRY_MAX_S),
        reraise=True,
    )


def unreachable(settings: Settings, exc: BaseException) -> str:
    where = settings.docker_url or "DOCKER_HOST or /var/run/docker.sock"
    return (
        f"cannot reach the Docker daemon at {where}: {exc}. The service needs the host's "
        "Docker socket (in a container: mount /var/run/docker.sock)"
    )


def _client(settings: Settings, timeout_s: float | None) -> docker.DockerClient:
    # docker-py hands the timeout to requests, where None means "wait for as long as it takes";
    # its stubs only admit int.
    timeout = cast(int, timeout_s)
    if settings.docker_url:
        return docker.DockerClient(base_url=settings.docker_url, timeout=timeout)
    return docker.from_env(timeout=timeout)


class Daemon:
    """The clients of one daemon and the pool their calls run in.

    ``client`` (and its ``api``) time out after ``docker_timeout_s``; ``long`` never does:
    output streams and waits last as long as a build."""

    def __init__(self, settings: Settings, engine: str) -> None:
        self.settings = settings
        self.engine = engine  # how errors name it
        try:
            self.client = _client(settings, settings.docker_timeout_s)
            self.long = _client(settings, None).api
        except docker.errors.DockerException as exc:
            raise BackendUnavailable(unreachable(settings, exc)) from exc
        self.api = self.client.api
        self.pool = ThreadPoolExecutor(
            max_workers=3 * settings.max_concurrent_builds + 8, thread_name_prefix=engine
        )

    async def run(self, fn: Callable[..., T], *args: Any, idempotent: bool = True) -> T:
        """``fn(*args)`` in the pool, as ``call`` makes it."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self.call, fn, *args, idempotent=idempotent)
        return await loop.run_in_executor(self.pool, call)

    def call(self, fn: Callable[..., T], *args: Any, idempotent: bool = True) -> T:
        """``fn(*args)`` against the daemon, retried while that is safe, with docker-py's
        errors turned into this service's."""
        try:
            return _retrying(idempotent)(fn, *args)
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(str(exc.explanation or exc)) from exc
        except docker.errors.NotFound as exc:
            raise ContainerGone(str(exc.explanation or exc)) from exc
        except requests.exceptions.ConnectionError as exc:
            raise BackendUnavailable(unreachable(self.settings, exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise BackendError(f"{self.engine} did not answer in time: {exc}") from exc
        except docker.errors.DockerException as exc:
            raise BackendError(f"{self.engine}: {exc}") from exc

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.long.close()
        self.client.close()


def shutdown_socket(sock: Any) -> None:
    """Shut a socket down, so that a read blocked on it in another thread returns at once."""
    # shutdown() acts on the socket, not on the descriptor, so a duplicate reaches it; the
    # object docker-py returns does not always expose the socket itself.
    try:
        fd = os.dup(sock.fileno())
    except (OSError, ValueError):
        return
    try:
        dup = socket.socket(fileno=fd)
    except OSError:  # not a socket (docker-py's ssh transport): nothing to shut down here
        os.close(fd)
        return
    with dup, contextlib.suppress(OSError):
        dup.shutdown(socket.SHUT_RDWR)


def close_response(response: Any) -> None:
    """Close a streaming ``requests`` response, a read blocked on it included."""
    if response is None:
        return
    try:
        raw = response.raw
        sock = raw._fp.fp.raw._sock  # the connection's socket: a blocked read returns at once
        shutdown_socket(sock)
    except (AttributeError, OSError):
        pass
    # Closing from another thread may race the reader; it ends either way.
    with contextlib.suppress(Exception):
        response.close()
