"""Warm PKGBUILD readers: sandboxes kept running, each reading one PKGBUILD at a time.

A container costs ~1 s to make and start on this engine; an exec in a running one ~30 ms. So
``makepkg --printsrcinfo`` runs as an exec in a reader, a container with the sandbox a reading
always had (no network, no capabilities, no-new-privileges, a read-only root, a small
in-memory ``/tmp``, memory, process and CPU limits). What keeps readings apart in it:

- each reading runs as a uid of its own, never used before in that reader, so it cannot signal
  another reading's processes or open its files; its PKGBUILD is the reading's alone to read
  (root's, with the reading's group, mode 0640 in a folder of mode 0750);
- when makepkg is done, the same exec kills every process of that uid (a daemon the top level
  forked); after the answer, a command of its own as that uid does it again (a top level can
  kill the reading's shell, never that) and deletes what the uid left in ``/tmp``,
  ``/dev/shm``, ``/dev/mqueue`` and System V IPC;
- then, before the reader takes another reading, root checks that only root's threads are
  left, those places are empty, and removes the PKGBUILD. A reader that fails that check, or
  whose reading overran its deadline, is destroyed and another made.

The deadline counts the CPU time of the reader (one reading at a time, so that is the
reading's), so a busy host slows an answer without changing it; a wall-clock bound far above it
stops a top level that waits for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from ..backend import Backend, Handle, Ran, Step
from ..errors import ContainerGone, InspectTimeout, OrchestratorError, ShuttingDown
from ..metrics import Metrics
from ..settings import MiB, Settings
from ..timeouts import READER_CPU_POLL_S
from .skeleton import Skeleton

log = logging.getLogger(__name__)

READER_LABEL = "orchestrator.reader"
READ_ROOT = "/src"
_FIRST_UID = 20000
_UIDS = 40000  # uids a reader hands out, one per reading, before it is replaced
_READER_CPUS = 1.0

# makepkg reads each variable a package function may override by piping ``declare -f`` into
# ``grep -E`` (libmakepkg's ``grep_function``): some 240 execs of grep per reading, two thirds
# of its CPU time here. Given to makepkg as an exported function, this answers exactly those
# calls (that argument list, a regex of that one shape, ASCII input) with the same lines and
# status in bash, and hands every other call, the top level's own included, to grep itself, as
# it does when the top level changed what bash's own matching means (``nocasematch``, a
# read-only ``LC_ALL``). It runs in the pipeline's subshell: nothing it sets outlives it.
_GREP = r"""() {
    local __shape='^\^\[\[:space:\]\]\*\ [[:alnum:]_]+\\\+\?=(\\\(|\[\^\(\])$'
    if (( $# == 2 )) && [[ $1 == -E && $2 =~ $__shape && ${LC_ALL@a} != *r* ]] &&
        ! builtin shopt -q nocasematch; then
        local __line __rc=1 __lines LC_ALL=C
        builtin mapfile -t __lines
        if [[ ${__lines[*]} == *[$'\x80'-$'\xff']* ]]; then
            builtin printf '%s\n' "${__lines[@]}" | command grep "$@"
            return
        fi
        for __line in "${__lines[@]}"; do
            [[ $__line =~ $2 ]] && { builtin printf '%s\n' "$__line"; __rc=0; }
        done
        return $__rc
    fi
    command grep "$@"
}"""
# $1: the reading's folder under /src and /tmp; $2: ``_GREP``. Everything makepkg insists on
# writing goes to its own folder in the in-memory /tmp.
_READ = """
d=/tmp/$1
mkdir -m 0700 "$d" || exit 125
export HOME="$d" BUILDDIR="$d" SRCDEST="$d" PKGDEST="$d" SRCPKGDEST="$d" LOGDEST="$d" TMPDIR="$d"
env "BASH_FUNC_grep%%=$2" makepkg --printsrcinfo
rc=$?
exec >/dev/null 2>&1
kill -KILL -1
find /tmp /dev/shm /dev/mqueue -xdev -mindepth 1 -user "$(id -u)" -delete
exit $rc
"""
# As the reading's uid, after the answer, whatever became of the reading's own shell (a top level
# can kill it before it gets to its `kill`): kill(-1) reaches every process of that uid at once
# (a process forking meanwhile takes its children with it), and so cannot be outrun.
_END = """
kill -KILL -1
find /tmp /dev/shm /dev/mqueue -xdev -mindepth 1 -user "$(id -u)" -delete
ipcrm --all 2>/dev/null
exit 0
"""
# As root, then: is the reader as it was before the reading? Threads, not processes: a process
# whose first thread has exited reads "Z" in /proc/<pid>/status while its other threads run.
_TIDY = """
rm -rf "/src/$1"
for t in /proc/[0-9]*/task/[0-9]*; do
    u=$(stat -c %u "$t" 2>/dev/null) || continue
    [ "$u" = 0 ] || grep -qs '^State:.Z' "$t/status" || { echo "uid $u still runs $t"; exit 3; }
done
for d in /tmp /dev/shm /dev/mqueue; do
    [ -z "$(ls -A "$d")" ] || { echo "$d is not empty"; exit 4; }
done
for f in /proc/sysvipc/shm /proc/sysvipc/msg /proc/sysvipc/sem; do
    [ "$(wc -l < $f)" -le 1 ] || { echo "a System V IPC object is left ($f)"; exit 5; }
done
"""


@dataclass(slots=True)
class _Reader:
    handle: Handle
    next_uid: int = _FIRST_UID
    uid: int = 0  # its current (or last) reading's
    cpu_s: float = 0.0  # the reader's CPU time when its current reading began

    def take_uid(self) -> int:
        self.uid, self.next_uid = self.next_uid, self.next_uid + 1
        return self.uid

    @property
    def spent(self) -> bool:
        return self.next_uid >= _FIRST_UID + _UIDS


class ReaderPool:
    """Up to ``settings.readers`` warm readers per build image."""

    def __init__(
        self, backend: Backend, settings: Settings, labels: Mapping[str, str], metrics: Metrics
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._labels = {**labels, READER_LABEL: "1"}
        self._metrics = metrics
        self._idle: dict[str, list[_Reader]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._tidying: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Future[Handle]] = set()  # readers the daemon is making
        # Every reader this pool made and has not destroyed, idle or reading: the janitor's
        # sweep leaves these alone and takes any other reader (one whose removal failed).
        self.held: set[Handle] = set()
        # Given a reader whose removal failed, to retry it (the janitor's ``adopt``).
        self.unremoved: Callable[[Handle], None] | None = None
        self._readings = itertools.count(1)
        self._closed = False

    async def warm(self, image: str) -> None:
        """Have one reader of ``image`` ready (at start-up, so the first submit is fast)."""
        slots = self._slots_for(image)
        async with slots:
            if not self._idle[image]:
                self._idle[image].append(await self._start(image))

    async def read(self, image: str, skeleton: Skeleton, keep_bytes: int) -> Ran:
        """``makepkg --printsrcinfo`` of the PKGBUILD in ``skeleton``, in a reader of
        ``image``; raises ``InspectTimeout`` past the deadline."""
        if self._closed:
            raise ShuttingDown("the service is stopping: no PKGBUILD is read now")
        slots = self._slots_for(image)
        await slots.acquire()
        self._metrics.readers_busy.inc()
        reader: _Reader | None = None
        try:
            idle = self._idle[image]
            name = f"r{next(self._readings)}"
            began = time.monotonic()
            if idle:
                reader = idle.pop()
                try:
                    ran = await self._reading(reader, name, skeleton, keep_bytes)
                except ContainerGone:  # it died idle (killed by hand, the daemon restarted)
                    self._later(self._discard(reader, None))
                    reader = None
            if reader is None:
                reader = await self._start(image)
                ran = await self._reading(reader, name, skeleton, keep_bytes)
            self._metrics.reading_seconds.observe(time.monotonic() - began)
        except BaseException:
            self._metrics.readers_busy.dec()
            self._later(self._discard(reader, slots))
            raise
        self._later(self._tidy(image, reader, name, slots))
        return ran

    async def _reading(self, reader: _Reader, name: str, skeleton: Skeleton, keep: int) -> Ran:
        uid = reader.take_uid()
        with skeleton.tar(prefix=name, gid=uid, private=True) as tar:
            await self._backend.put(reader.handle, READ_ROOT, tar)
        command = ("sh", "-c", _READ, "reader", name, _GREP)
        run = asyncio.ensure_future(
            self._backend.exec(
                reader.handle,
                command,
                user=f"{uid}:{uid}",
                workdir=f"{READ_ROOT}/{name}",
                keep_bytes=keep,
            )
        )
        try:
            await self._within_deadline(reader, run)
        finally:
            if not run.done():
                run.cancel()
        return run.result()

    async def _within_deadline(self, reader: _Reader, run: asyncio.Future[Ran]) -> None:
        cpu_limit_s = self._settings.inspect_timeout_s
        wall_limit_s = self._settings.inspect_wall_timeout_s
        began = time.monotonic()
        # With one CPU, a reading cannot have used its CPU time before that much wall time: a
        # reading of the usual second costs no look at all (each one is an exec).
        first_s = min(cpu_limit_s / _READER_CPUS, wall_limit_s)
        done, _ = await asyncio.wait({run}, timeout=first_s)
        while True:
            if done:
                return
            if time.monotonic() - began > wall_limit_s:
                raise InspectTimeout(
                    f"makepkg took more than {wall_limit_s:g} s to read the PKGBUILD (its top "
                    "level runs when it is read: does it wait for something?)"
                )
            # Asked beside the reading, so that an answer never waits for the question.
            asking = asyncio.ensure_future(self._backend.cpu_seconds(reader.handle))
            either: set[asyncio.Future[Any]] = {run, asking}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                asking.cancel()
                return
            used = asking.result()
            if used is not None and used - reader.cpu_s > cpu_limit_s:
                raise InspectTimeout(
                    f"makepkg used more than {cpu_limit_s:g} s of CPU time to read the "
                    "PKGBUILD (its top level runs when it is read: does it loop?)"
                )
            done, _ = await asyncio.wait({run}, timeout=READER_CPU_POLL_S)

    async def _tidy(self, image: str, reader: _Reader, name: str, slots: asyncio.Semaphore) -> None:
        try:
            await self._backend.exec(
                reader.handle,
                ("sh", "-c", _END, "end"),
                user=f"{reader.uid}:{reader.uid}",
                workdir="/",
                keep_bytes=4096,
            )
            tidy = await self._backend.exec(
                reader.handle,
                ("sh", "-c", _TIDY, "tidy", name),
                user="0:0",
                workdir="/",
                keep_bytes=4096,
            )
            if tidy.code != 0:
                raise OrchestratorError(tidy.stdout.decode(errors="replace").strip())
            if reader.spent:
                raise OrchestratorError("it has handed out all its uids")
            reader.cpu_s = await self._backend.cpu_seconds(reader.handle) or 0.0
        except (OrchestratorError, OSError) as exc:
            log.warning("a PKGBUILD reader is replaced: %s", exc)
            await self._discard(reader, None)
        else:
            if not self._closed:
                self._idle[image].append(reader)
        finally:
            self._metrics.readers_busy.dec()
            slots.release()

    async def _discard(self, reader: _Reader | None, slots: asyncio.Semaphore | None) -> None:
        try:
            if reader is not None:
                self.held.discard(reader.handle)
                try:
                    await self._backend.destroy(reader.handle)
                except OrchestratorError:
                    if self.unremoved is not None:
                        self.unremoved(reader.handle)
        finally:
            if slots is not None:
                slots.release()

    async def _start(self, image: str) -> _Reader:
        step = Step(
            image=image,
            # Waits for its stdin to end: tied to this process, it ends (and is removed) with
            # it, however it ends; a build never is.
            command=("sh", "-c", "exec cat >/dev/null"),
            tied=True,
            labels=self._labels,
            user="0:0",  # root without a capability: it owns the PKGBUILDs and cleans up
            workdir=READ_ROOT,
            network=False,
            memory_bytes=256 * MiB,
            cpus=_READER_CPUS,
            pids_limit=64,
            log_max_bytes=64 * 1024,
            read_only=True,
            tmp_bytes=16 * MiB,
        )
        # Awaited, not shielded: a cancel reaches the engine's setup, which removes what it made.
        starting = asyncio.ensure_future(self._backend.setup(step))
        self._starting.add(starting)
        starting.add_done_callback(self._starting.discard)
        handle = await starting
        self.held.add(handle)
        try:
            if self._closed:  # closed while the daemon made it: ``close`` has reaped already
                raise ShuttingDown("the service is stopping: no PKGBUILD is read now")
            stream = await self._backend.start(handle)
            await stream.aclose()  # it prints nothing: each reading's output is its exec's
        except BaseException:
            await asyncio.shield(self._discard(_Reader(handle), None))
            raise
        return _Reader(handle)

    def _slots_for(self, image: str) -> asyncio.Semaphore:
        if image not in self._slots:
            self._slots[image] = asyncio.Semaphore(self._settings.readers)
            self._idle[image] = []
        return self._slots[image]

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """Work that outlives the answer (tidying, replacing a reader), tracked until done."""
        task = asyncio.ensure_future(work)
        self._tidying.add(task)
        task.add_done_callback(self._tidying.discard)

    async def close(self) -> None:
        """Destroy every reader (the service is stopping)."""
        self._closed = True
        # A reader still being made is one more to remove: wait for the daemon to say which.
        made = await asyncio.gather(*self._starting, return_exceptions=True)
        for handle in made:
            if isinstance(handle, str):
                await self._discard(_Reader(handle), None)
        if self._tidying:
            await asyncio.gather(*self._tidying, return_exceptions=True)
        readers = [reader for idle in self._idle.values() for reader in idle]
        self._idle.clear()
        await asyncio.gather(*(self._discard(r, None) for r in readers), return_exceptions=True)
        # Any reader this process lost track of (a start cut short) still has its label.
        with contextlib.suppress(OrchestratorError):
            await self._backend.reap(self._labels)
