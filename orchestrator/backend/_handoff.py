"""How a swarm task gets its inputs and sends its files back, with no shared filesystem and no
call into its container: a small HTTP listener of this service, one exchange per step.

A task may land on any node, and a manager offers no copy into or out of a task's container. So
the task's wrapper (``wrapper_command``) fetches its inputs from here at its start and PUTs a tar
of each output path here before it exits. Each step has its own token, never the API token; the
listener is separate from the API so the API can stay on loopback while this one listens where
tasks reach it (the docker0 gateway by default: tasks on this node only).

A task outlives the process that started it (adoption), so its token must be one the next
process can know again without having been told: HMAC-SHA256 of the step's handle under a secret
kept in the data directory (``step_secret``). The next process ``reopen``s the exchange of a step
it adopts: its inputs were fetched already, its outputs are still to come.

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
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiohttp import web

from ..errors import ArchiveTooLarge, BackendError, ContainerGone
from ..storage.archive import spooled
from ..timeouts import (
    HANDOFF_BODY_TIMEOUT_S,
    HANDOFF_FETCH_ATTEMPTS,
    HANDOFF_SEND_ATTEMPTS,
    HANDOFF_SEND_MAX_S,
    HANDOFF_SEND_RETRY_S,
    HANDOFF_STREAM_SEND_ATTEMPTS,
)
from ._swarmvolumes import VolumeStore, receive_archive, serve_archive

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
        volumes: tuple[str, ...] = (),
    ) -> str:
        """Expect ``handle``'s task: serve ``inputs`` (ours now) once, take ``outputs`` back,
        and serve and take back the archives of ``volumes`` (names in the volume store)."""
        token = step_token(self._secret, handle)
        self._mount(volumes)
        self._steps[handle] = _Exchange(token, inputs, outputs, volumes=volumes)
        return token

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

    def drop(self, handle: str) -> None:
        step = self._steps.pop(handle, None)
        if step is None:
            return
        self._dropped[handle] = None
        if len(self._dropped) > _DROPPED_KEPT:
            del self._dropped[next(iter(self._dropped))]
        if self.volumes is not None:
            self.volumes.unmount(step.volumes)
        for f in (step.inputs, *step.received.values()):
            if f is not None:
                f.close()

    async def close(self) -> None:
        # A task that sends its packages while this process stops is told to try again (the
        # next process takes it over), never given a 404 or a 201 for what is about to go.
        self._closing = True
        for handle in list(self._steps):
            self.drop(handle)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> tuple[str, _Exchange]:
        handle = request.match_info["handle"]
        step = self._steps.get(handle)
        given = request.headers.get("Authorization", "").encode()
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


# The task's command: bash (every build image has it, with curl, tar and, for cache volumes,
# zstd) wraps the step's own.
# Inputs come first, from the URL or from a config file; the outputs go back after the command,
# whatever its exit code (the cache report matters most when a build failed). The token leaves
# the environment before the command runs; a build that digs it out of /proc can only spoil its
# own results. Sending back retries a refused connection too (a service restarting: the next
# one takes the exchange over), but only briefly: the tar is streamed, so a send that began
# cannot be made again.
_WRAPPER_TEMPLATE = r"""set -u -o pipefail
url=$ORCHESTRATOR_STEP_URL
auth="Authorization: Bearer $ORCHESTRATOR_STEP_TOKEN"
unset ORCHESTRATOR_STEP_URL ORCHESTRATOR_STEP_TOKEN
if [ -n "${ORCHESTRATOR_STEP_DIR:-}" ]; then
  mkdir -p "$ORCHESTRATOR_STEP_DIR" && cd "$ORCHESTRATOR_STEP_DIR" || exit 125
fi
unset ORCHESTRATOR_STEP_DIR
case "${ORCHESTRATOR_STEP_INPUTS:-}" in
  "") ;;
  fetch) curl -fsS --retry @FETCH@ --retry-connrefused -H "$auth" "$url/inputs" | tar -x -f - \
           || { echo "orchestrator: could not fetch the step's inputs from $url" >&2; exit 125; } ;;
  *) tar -x -f "$ORCHESTRATOR_STEP_INPUTS" \
           || { echo "orchestrator: could not unpack the step's inputs" >&2; exit 125; } ;;
esac
unset ORCHESTRATOR_STEP_INPUTS
# Cache volumes, made here from their archives (a volume with none starts empty). One that
# cannot be unpacked whole is emptied: the build runs without it rather than with half of it.
volumes=${ORCHESTRATOR_STEP_VOLUMES:-}
unset ORCHESTRATOR_STEP_VOLUMES ORCHESTRATOR_STEP_VOLUME_NAMES
v=0
for dir in $volumes; do
  got=$(curl -sS -I -o /dev/null -w '%{http_code}' --retry @FETCH@ --retry-connrefused \
        -H "$auth" "$url/volumes/$v")
  mkdir -p "$dir"
  if [ "$got" = 200 ]; then
    curl -fsS -H "$auth" "$url/volumes/$v" | zstd -dcq | tar -x -f - -C "$dir" \
      || { echo "orchestrator: could not unpack the cache at $dir: building without it" >&2
           find "$dir" -mindepth 1 -delete 2>/dev/null; }
  fi
  v=$((v + 1))
done
"$@"
code=$?
pack() {
  if [ -d "$out" ]; then tar -c -f "$1" -C "$out" .; else tar -c -f "$1" -T /dev/null; fi
}
send() {
  curl -fsS --retry-connrefused -T "$1" -H "$auth" -H "Content-Type: application/x-tar" \
    "${@:2}" "$url/outputs/$i" >/dev/null
}
i=0
for out in ${ORCHESTRATOR_STEP_OUTPUTS:-}; do
  # Spooled to a file, so that curl can send it again: while the service restarts (an upgrade,
  # a crash) nobody listens, and the next one takes the step over within the hour.
  tarball=$(mktemp 2>/dev/null) || tarball=
  if [ -n "$tarball" ] && pack "$tarball"; then
    send "$tarball" --retry @SEND@ --retry-delay @DELAY@ --retry-max-time @MAX@
  else
    pack - | send - --retry @STREAM@
  fi || echo "orchestrator: could not send $out back" >&2
  [ -z "$tarball" ] || rm -f "$tarball"
  i=$((i + 1))
done
v=0
for dir in $volumes; do
  # Streamed, so sent once: a volume not sent stays as the last build that ended left it.
  { tar -c -f - -C "$dir" . | zstd -q -1 -T0 | curl -fsS -T - -H "$auth" \
      -H "Content-Type: application/zstd" "$url/volumes/$v" >/dev/null; } \
    || echo "orchestrator: could not send the cache at $dir back" >&2
  v=$((v + 1))
done
exit $code
"""
_WRAPPER = (
    _WRAPPER_TEMPLATE.replace("@FETCH@", str(HANDOFF_FETCH_ATTEMPTS - 1))
    .replace("@SEND@", str(HANDOFF_SEND_ATTEMPTS - 1))
    .replace("@DELAY@", str(HANDOFF_SEND_RETRY_S))
    .replace("@MAX@", str(HANDOFF_SEND_MAX_S))
    .replace("@STREAM@", str(HANDOFF_STREAM_SEND_ATTEMPTS - 1))
)


def wrapper_command(command: tuple[str, ...]) -> list[str]:
    return ["bash", "-c", _WRAPPER, "orchestrator-step", *command]


def wrapper_env(
    url: str,
    handle: str,
    token: str,
    inputs: str | None,
    outputs: tuple[str, ...],
    volumes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``inputs``: "fetch" (from the URL), a file's path in the task, or None. ``volumes``:
    cache volume name → its mount path (the order is their index at the listener)."""
    paths = (*outputs, *(volumes or {}).values())
    if any(not p.startswith("/") or any(c.isspace() for c in p) for p in paths):
        raise ValueError(f"output and volume paths must be absolute, without blanks: {paths}")
    env = {
        "ORCHESTRATOR_STEP_URL": f"{url}/steps/{handle}",
        "ORCHESTRATOR_STEP_TOKEN": token,
        "ORCHESTRATOR_STEP_OUTPUTS": " ".join(outputs),
    }
    if inputs is not None:
        env["ORCHESTRATOR_STEP_INPUTS"] = inputs
    if volumes:
        env["ORCHESTRATOR_STEP_VOLUMES"] = " ".join(volumes.values())
        # Read back by a later process that takes the step over (``outputs_of``).
        env["ORCHESTRATOR_STEP_VOLUME_NAMES"] = " ".join(volumes)
    return env
