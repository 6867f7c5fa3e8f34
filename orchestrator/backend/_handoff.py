"""How a swarm task gets its inputs and sends its files back, with no shared filesystem and no
call into its container: a small HTTP listener of this service, one exchange per step.

A task may land on any node, and a manager offers no copy into or out of a task's container. So
the task's wrapper (``_wrapper.py``) fetches its inputs from here at its start, pushes its output
here as it comes (``_pushed.py``, a step with network) and PUTs a tar of each output path here
before it exits. Each step has its own token, never the API token; the
listener is separate from the API so the API can stay on loopback while this one listens where
tasks reach it (the docker0 gateway by default: tasks on this node only).

A task outlives the process that started it (adoption), so its token must be one the next
process can know again without having been told: HMAC-SHA256 of the step's handle under a secret
kept in the data directory (``step_secret``). The next process ``reopen``s the exchange of a step
it adopts: its inputs were fetched already, its outputs are still to come.

It also carries ``kill``'s stop (``stop``): a task's wrapper waits for it on a request held open,
then ends the step itself, a second sooner than the node's agent would (``_swarmstop.py``).

Treated as hostile input, like an upload: the token is compared in constant time, inputs are
served once, each output is accepted once and cut at the artifact cap, unknown steps are 404.

A step that mounts cache volumes (``_swarmvolumes.py``) also fetches each one's archive here at
its start and sends it back at its end: only its own volumes, by their place in its list.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiohttp import web

from ..errors import ArchiveTooLarge, BackendError, ContainerGone
from ..storage.archive import spooled
from ..timeouts import HANDOFF_BODY_TIMEOUT_S, HANDOFF_STOP_TICK_S
from ._pushed import Narration, get_offsets, put_output, put_report
from ._swarmvolumes import VolumeStore, receive_archive, serve_archive
from ._wrapper import wrapper_command, wrapper_env

__all__ = ["SECRET_FILE", "Handoff", "step_secret", "step_token", "wrapper_command", "wrapper_env"]

_READ_BYTES = 1 << 20
_TAR_SLACK_BYTES = 1 << 20  # tar's own headers and padding beyond the files' bytes
_DROPPED_KEPT = 10_000
SECRET_FILE = "swarm-handoff.key"
_SECRET_BYTES = 32


def step_secret(data_dir: Path) -> bytes:
    """The secret every step's token derives from: made once (mode 0600) in ``data_dir`` and
    read again by every later process on it, so that one can take over a step's exchange.
    Never logged; whoever reads it can act as any of this instance's tasks towards the listener."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: never seen half written, and of two processes
        # making it at once, one wins and both use its secret.
        spare = data_dir / f".{SECRET_FILE}.{secrets.token_hex(8)}"
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(_SECRET_BYTES))
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(spare, path)
        finally:
            spare.unlink()
    secret = path.read_bytes()
    if len(secret) < _SECRET_BYTES:
        raise BackendError(f"{path} is too short to be this instance's secret: remove it")
    return secret


def step_token(secret: bytes, handle: str) -> str:
    return hmac.new(secret, handle.encode(), hashlib.sha256).hexdigest()


@dataclass
class _Exchange:
    token: str
    inputs: IO[bytes] | None
    outputs: tuple[str, ...]
    fetched: bool = False
    received: dict[int, IO[bytes]] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)  # an output we turned away, and why
    missed: str | None = None  # why outputs that did not come never will
    narration: Narration | None = None  # its pushed output (None: it does not push here)
    stop_ticks: int | None = None  # asked to stop: the grace, in the wrapper's ticks
    watchers: int = 0  # the wrapper's requests waiting for a stop now
    latest: asyncio.Event | None = None  # set when a later stop request replaces the waiting one
    woken: asyncio.Event = field(default_factory=asyncio.Event)  # stopped, dropped or closing
    volumes: tuple[str, ...] = ()  # the cache volumes it mounts, by name
    volumes_sent: set[int] = field(default_factory=set)


class Handoff:
    def __init__(
        self,
        host: str,
        port: int,
        callback_url: str | None,
        max_bytes: int,
        secret: bytes,
        volumes: VolumeStore | None = None,
    ) -> None:
        self.volumes = volumes
        self._host, self._port = host, port
        self._secret = secret
        self._callback_url = callback_url
        self._max_bytes = max_bytes
        self._steps: dict[str, _Exchange] = {}
        # Steps this process dropped (destroyed), the latest first out: a late request of
        # theirs is a 404, not a "try again" (see ``_authorized``).
        self._dropped: dict[str, None] = {}
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._starting = asyncio.Lock()
        self.url = ""

    async def start(self) -> None:
        async with self._starting:
            if self._runner is not None:
                return
            app = web.Application()
            app.router.add_get("/steps/{handle}/inputs", self._get_inputs)
            app.router.add_put("/steps/{handle}/outputs/{index:[0-9]{1,2}}", self._put_output)
            app.router.add_get("/steps/{handle}/output", self._get_offsets)
            app.router.add_put("/steps/{handle}/output/{stream}", self._put_pushed)
            app.router.add_put("/steps/{handle}/report", self._put_report)
            app.router.add_get("/steps/{handle}/stop", self._get_stop)
            app.router.add_get("/steps/{handle}/volumes/{index:[0-9]{1,2}}", self._get_volume)
            app.router.add_put("/steps/{handle}/volumes/{index:[0-9]{1,2}}", self._put_volume)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            self._runner = runner
            port = runner.addresses[0][1]
            host = f"[{self._host}]" if ":" in self._host else self._host
            self.url = (self._callback_url or f"http://{host}:{port}").rstrip("/")

    def open(
        self,
        handle: str,
        inputs: IO[bytes] | None,
        outputs: tuple[str, ...],
        push: bool = False,
        volumes: tuple[str, ...] = (),
    ) -> str:
        """Expect ``handle``'s task: serve ``inputs`` (ours now) once, take ``outputs`` back;
        with ``push``, take its output as it pushes it (``narration``); serve and take back the
        archives of ``volumes`` (names in the volume store)."""
        token = step_token(self._secret, handle)
        narration = Narration() if push else None
        self._mount(volumes)
        self._steps[handle] = _Exchange(
            token, inputs, outputs, narration=narration, volumes=volumes
        )
        return token

    def narration(self, handle: str) -> Narration | None:
        """The output ``handle``'s task pushes here; None when it does not (no network, or an
        exchange ``reopen``ed: see ``_swarmadopt.py``)."""
        step = self._steps.get(handle)
        return step.narration if step is not None else None

    def reopen(
        self,
        handle: str,
        outputs: tuple[str, ...],
        missed: str | None = None,
        volumes: tuple[str, ...] = (),
    ) -> None:
        """Take over the exchange of a step an earlier process started (its inputs were fetched
        then): expect its ``outputs`` (and its ``volumes`` back). ``missed``: the task has ended
        already, so outputs that have not come never will (the reason ``output`` gives). Kept
        if already open here."""
        if handle not in self._steps:
            self._mount(volumes)
            self._steps[handle] = _Exchange(
                step_token(self._secret, handle),
                None,
                outputs,
                fetched=True,
                missed=missed,
                volumes=volumes,
            )

    def _mount(self, volumes: tuple[str, ...]) -> None:
        if volumes and self.volumes is None:
            raise BackendError("this listener keeps no volumes")
        if self.volumes is not None:
            self.volumes.mount(volumes)

    def output(self, handle: str, path: str, max_bytes: int | None) -> IO[bytes]:
        """The tar the task sent for ``path``; ``ContainerGone`` if none came."""
        step = self._steps.get(handle)
        wanted = path.removesuffix("/.").rstrip("/") or "/"
        if step is None or wanted not in step.outputs:
            raise ContainerGone(f"step {handle} sends back no {path} (not asked for at setup)")
        index = step.outputs.index(wanted)
        if index in step.refused:
            raise ArchiveTooLarge(step.refused[index], limit_bytes=self._max_bytes)
        tar = step.received.get(index)
        if tar is None:
            raise ContainerGone(step.missed or f"the task of step {handle} sent no {wanted} back")
        cap = self._max_bytes if max_bytes is None else max_bytes
        size = tar.seek(0, 2)
        if size > cap + _TAR_SLACK_BYTES:
            raise ArchiveTooLarge(f"{wanted} is larger than {cap} bytes", limit_bytes=cap)
        tar.seek(0)
        # Handed over once: the caller closes it.
        del step.received[index]
        return tar

    def stop(self, handle: str, grace_s: float) -> bool:
        """Tell ``handle``'s wrapper to end the step: SIGTERM to its command, SIGKILL to every
        process after ``grace_s``. True if the wrapper is listening for it now; else it is
        told when it next asks (the caller must stop the step another way meanwhile)."""
        step = self._steps.get(handle)
        if step is None:
            return False
        if step.stop_ticks is None:
            step.stop_ticks = math.ceil(grace_s / HANDOFF_STOP_TICK_S)
        step.woken.set()
        return self.watching(handle)

    def watching(self, handle: str) -> bool:
        """Whether ``handle``'s wrapper is waiting for a stop now."""
        step = self._steps.get(handle)
        return step is not None and step.watchers > 0

    def drop(self, handle: str) -> None:
        step = self._steps.pop(handle, None)
        if step is None:
            return
        step.woken.set()  # its wrapper's waiting request ends (404)
        self._dropped[handle] = None
        if len(self._dropped) > _DROPPED_KEPT:
            del self._dropped[next(iter(self._dropped))]
        if self.volumes is not None:
            self.volumes.unmount(step.volumes)
        for f in (step.inputs, *step.received.values()):
            if f is not None:
                f.close()
        if step.narration is not None:
            step.narration.refuse("the step was destroyed")

    async def close(self) -> None:
        # A task that sends its packages while this process stops is told to try again (the
        # next process takes it over), never given a 404 or a 201 for what is about to go.
        self._closing = True
        for handle in list(self._steps):  # waiting stop requests end: 503, asked again later
            self.drop(handle)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> tuple[str, _Exchange]:
        handle = request.match_info["handle"]
        step = self._steps.get(handle)
        # Bytes that are no UTF-8 come as surrogates: a wrong token like any other.
        given = request.headers.get("Authorization", "").encode(errors="surrogateescape")
        token = step.token if step is not None else step_token(self._secret, handle)
        if not hmac.compare_digest(given, f"Bearer {token}".encode()):
            if step is None:
                raise web.HTTPNotFound(text="no such step\n")
            raise web.HTTPForbidden(text="wrong token\n")
        if self._closing:
            raise web.HTTPServiceUnavailable(text="the service is stopping\n")
        if step is None and handle in self._dropped:
            raise web.HTTPNotFound(text="no such step\n")
        if step is None:
            # A step of ours an earlier process started, not taken over yet (the process has
            # just started): the wrapper's curl tries again on a 503.
            raise web.HTTPServiceUnavailable(text="not taken over yet\n")
        return handle, step

    def _pushing(self, request: web.Request) -> Narration:
        _handle, step = self._authorized(request)
        if step.narration is None:
            # The task goes on printing to its own streams only: the service logs tell it.
            raise web.HTTPGone(text="this step's output is read from the service logs\n")
        return step.narration

    async def _get_offsets(self, request: web.Request) -> web.Response:
        return get_offsets(self._pushing(request))

    async def _put_pushed(self, request: web.Request) -> web.Response:
        return await put_output(request, self._pushing(request))

    async def _put_report(self, request: web.Request) -> web.Response:
        return put_report(request, self._pushing(request))

    async def _get_inputs(self, request: web.Request) -> web.StreamResponse:
        _handle, step = self._authorized(request)
        if step.fetched or step.inputs is None:
            raise web.HTTPGone(text="inputs already fetched\n")
        step.fetched = True  # once, even if this answer breaks off: the task starts over
        inputs = step.inputs
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        response.content_length = inputs.seek(0, 2)
        inputs.seek(0)
        await response.prepare(request)
        while block := await asyncio.to_thread(inputs.read, _READ_BYTES):
            await response.write(block)
        await response.write_eof()
        step.inputs = None
        inputs.close()
        return response

    async def _get_stop(self, request: web.Request) -> web.Response:
        """Answered once the step is to stop (the grace in ticks), 404 once it is dropped, 409
        once a later request waits instead (the wrapper asks again)."""
        _handle, step = self._authorized(request)
        # One waits per step, the latest: the wrapper has one at a time, and each held request
        # is a descriptor of ours, so a build that found the token must not hold thousands.
        replaced = asyncio.Event()
        if step.latest is not None:
            step.latest.set()
        step.latest = replaced
        step.watchers += 1
        waits = [asyncio.ensure_future(e.wait()) for e in (step.woken, replaced)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            step.watchers -= 1
            if step.latest is replaced:
                step.latest = None
        if step.stop_ticks is not None:
            return web.Response(text=str(step.stop_ticks))
        if replaced.is_set():
            raise web.HTTPConflict(text="a later request waits for this step's stop\n")
        if self._closing:
            raise web.HTTPServiceUnavailable(text="the service is stopping\n")
        raise web.HTTPNotFound(text="no such step\n")

    async def _put_output(self, request: web.Request) -> web.Response:
        _handle, step = self._authorized(request)
        index = int(request.match_info["index"])
        if index >= len(step.outputs):
            raise web.HTTPNotFound(text="no such output\n")
        if index in step.received or index in step.refused:
            raise web.HTTPConflict(text="already sent\n")
        limit = self._max_bytes + _TAR_SLACK_BYTES
        too_large = (
            f"the packages are larger than {self._max_bytes} bytes "
            "(ORCHESTRATOR_MAX_ARTIFACT_BYTES)"
        )
        if (request.content_length or 0) > limit:
            step.refused[index] = too_large
            raise web.HTTPRequestEntityTooLarge(
                max_size=limit, actual_size=request.content_length or 0
            )
        out = spooled()
        try:
            async with asyncio.timeout(HANDOFF_BODY_TIMEOUT_S):
                while block := await request.content.read(_READ_BYTES):
                    if out.tell() + len(block) > limit:
                        step.refused[index] = too_large
                        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1)
                    await asyncio.to_thread(out.write, block)
        except BaseException:
            out.close()
            raise
        if self._steps.get(request.match_info["handle"]) is not step:
            out.close()  # destroyed meanwhile
            raise web.HTTPNotFound(text="no such step\n")
        step.received[index] = out
        return web.Response(status=201, text="ok\n")

    def _volume(self, request: web.Request) -> tuple[_Exchange, int, str, VolumeStore]:
        _handle, step = self._authorized(request)
        index = int(request.match_info["index"])
        if self.volumes is None or index >= len(step.volumes):
            raise web.HTTPNotFound(text="no such volume\n")
        return step, index, step.volumes[index], self.volumes

    async def _get_volume(self, request: web.Request) -> web.StreamResponse:
        _step, _index, name, store = self._volume(request)
        return await serve_archive(store, name)

    async def _put_volume(self, request: web.Request) -> web.Response:
        step, index, name, store = self._volume(request)
        if index in step.volumes_sent:
            raise web.HTTPConflict(text="already sent\n")
        step.volumes_sent.add(index)
        handle = request.match_info["handle"]
        return await receive_archive(request, store, name, lambda: self._steps.get(handle) is step)
