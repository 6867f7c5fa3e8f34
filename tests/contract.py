"""The ``Backend`` contract, as every engine must keep it: the step protocol (``Steps``) and each
capability an engine says it has. One set of tests, run against the real engines
(``tests/integration/test_backend_contract.py``: Docker and Swarm) and against the in-memory
fake the unit tests stand on (``tests/unit/test_backend_contract.py``), so the fake cannot drift
from what the engines do.

A test describes a step by what it prints and how it ends (``Subject.setup``); a real engine runs
that as a shell command, the fake plays it as a script. Output is compared by its own lines only
(a prefix), as an engine may add lines of its own (the Swarm wrapper's).
"""

from __future__ import annotations

import asyncio
import io
import shlex
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest

from orchestrator.backend import Backend, Handle, OutputStream, Step, Stream
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.errors import BackendError, ContainerGone, ImageNotFound

from .waiting import until

OUT_DIR = "/tmp/out"  # what a step leaves for ``collect``
HOLD_S = 300.0  # a holding step's wait: far longer than any test


@dataclass
class Subject:
    """An engine under the contract, and how to make a step of a given behaviour on it."""

    backend: Backend
    image: str
    labels: Mapping[str, str]
    fake: FakeBackend | None = None

    async def setup(
        self,
        prints: Sequence[tuple[Stream, str]] = (),
        code: int = 0,
        *,
        hold: bool = False,
        files: Mapping[str, bytes] | None = None,
        image: str | None = None,
        burst: int = 0,
    ) -> Handle:
        """A step that prints ``prints`` in order, then ``burst`` lines ``L1``… on stdout as
        fast as it can, leaves ``files`` in ``OUT_DIR``, then holds (until killed) or exits
        with ``code``."""
        outputs = (OUT_DIR,) if files is not None else ()
        if self.fake is not None:
            steps = [(stream, text, 0.0) for stream, text in prints]
            if burst:
                steps.append(("stdout", "\n".join(f"L{i}" for i in range(1, burst + 1)), 0.0))
            if hold:
                steps.append(("stdout", "never printed", HOLD_S))
            self.fake.script = Script(steps, exit_code=code, packages=dict(files or {}))
            command: tuple[str, ...] = ("true",)
        else:
            command = ("sh", "-c", _shell(prints, code, hold, files, burst))
        step = Step(image or self.image, command, self.labels, outputs=outputs)
        return await self.backend.setup(step)


def _shell(
    prints: Sequence[tuple[Stream, str]],
    code: int,
    hold: bool,
    files: Mapping[str, bytes] | None,
    burst: int,
) -> str:
    parts = []
    if files is not None:
        parts.append(f"mkdir -p {OUT_DIR}")
        for name, data in files.items():
            parts.append(f"printf %s {shlex.quote(data.decode())} > {OUT_DIR}/{name}")
    for stream, text in prints:
        parts.append(f"echo {shlex.quote(text)}" + (" >&2" if stream == "stderr" else ""))
    if burst:
        parts.append(f"seq -f L%.0f 1 {burst}")
    parts.append(f"exec sleep {int(HOLD_S)}" if hold else f"exit {code}")
    return "; ".join(parts)


async def read_lines(output: OutputStream, prefix: str = "L") -> dict[Stream, list[str]]:
    """Every line of the stream that starts with ``prefix``, per stream, until it ends."""
    lines: dict[Stream, list[str]] = {"stdout": [], "stderr": []}
    try:
        async for batch in output:
            for chunk in batch:
                lines[chunk.stream] += [x for x in chunk.text.split("\n") if x.startswith(prefix)]
    finally:
        await output.aclose()
    return lines


class Contract:
    """The tests; a module runs them on its engines by subclassing this as ``Test...`` next
    to a ``subject`` fixture."""

    # -- the step protocol ---------------------------------------------------------------------

    async def test_a_step_prints_from_its_first_line_in_order_then_says_how_it_ended(
        self, subject: Subject
    ) -> None:
        prints: list[tuple[Stream, str]] = [
            ("stdout", "L1 out"),
            ("stderr", "L2 err"),
            ("stdout", "L3 out"),
            ("stderr", "L4 err"),
        ]
        backend = subject.backend
        handle = await subject.setup(prints, code=3)
        output = await backend.start(handle)
        lines = await read_lines(output)
        status = await backend.wait(handle)

        assert lines == {"stdout": ["L1 out", "L3 out"], "stderr": ["L2 err", "L4 err"]}
        assert status.code == 3
        assert not status.oom_killed
        await backend.destroy(handle)
        await backend.destroy(handle)  # idempotent
        assert handle not in await backend.list_steps(subject.labels)

    async def test_no_line_is_lost_when_a_step_exits_in_a_burst(self, subject: Subject) -> None:
        backend = subject.backend
        count = 50_000
        handle = await subject.setup([("stderr", "L start")], burst=count)
        lines = await read_lines(await backend.start(handle))
        assert (await backend.wait(handle)).code == 0
        assert lines["stdout"] == [f"L{i}" for i in range(1, count + 1)]
        assert lines["stderr"] == ["L start"]
        await backend.destroy(handle)

    async def test_kill_stops_a_running_step_and_both_kill_and_destroy_may_repeat(
        self, subject: Subject
    ) -> None:
        backend = subject.backend
        handle = await subject.setup([("stdout", "L up")], hold=True)
        output = await backend.start(handle)
        try:
            batches = aiter(output)
            seen: list[str] = []
            while "L up" not in seen:
                batch = await asyncio.wait_for(anext(batches), 60)
                seen += [line for chunk in batch for line in chunk.text.split("\n")]
            await backend.kill(handle)
            status = await asyncio.wait_for(backend.wait(handle), 60)
            assert status.code != 0
            async for _ in batches:  # the output ends with the step
                pass
        finally:
            await output.aclose()
        await backend.kill(handle)  # already exited: not an error
        await backend.destroy(handle)
        await backend.destroy(handle)
        await backend.kill(handle)  # gone: not an error either

    async def test_collect_gives_what_the_step_left_as_a_tar(self, subject: Subject) -> None:
        backend = subject.backend
        handle = await subject.setup([("stdout", "L done")], files={"pkg.tar": b"the package"})
        await read_lines(await backend.start(handle))
        assert (await backend.wait(handle)).code == 0
        with await backend.collect(handle, OUT_DIR + "/.") as tar, tarfile.open(fileobj=tar) as t:
            found = {
                m.name.removeprefix("./"): t.extractfile(m).read()  # type: ignore[union-attr]
                for m in t.getmembers()
                if m.isfile()
            }
        assert found == {"pkg.tar": b"the package"}
        await backend.destroy(handle)

    async def test_a_step_destroyed_before_it_started_is_gone(self, subject: Subject) -> None:
        backend = subject.backend
        handle = await subject.setup([("stdout", "L never")])
        await backend.destroy(handle)
        await backend.destroy(handle)
        assert handle not in await backend.list_steps(subject.labels)
        with pytest.raises(ContainerGone):
            await backend.start(handle)

    async def test_reap_destroys_every_step_carrying_the_labels(self, subject: Subject) -> None:
        backend = subject.backend
        # Started: a step only set up may be nothing yet to its engine (a Swarm service is made by
        # ``start``), which ``setup`` leaves nothing of that ``reap`` would not find.
        first = await subject.setup([("stdout", "L a")], hold=True)
        second = await subject.setup([("stdout", "L b")], hold=True)
        outputs = [await backend.start(first), await backend.start(second)]
        try:
            assert set(await backend.list_steps(subject.labels)) == {first, second}
            assert set(await backend.reap(subject.labels)) == {first, second}
            assert await backend.list_steps(subject.labels) == {}
        finally:
            for output in outputs:
                await output.aclose()

    async def test_a_missing_image_is_never_pulled(self, subject: Subject) -> None:
        with pytest.raises(ImageNotFound):
            await subject.setup([("stdout", "L")], image="orchestrator/build:no-such-image")
        assert await subject.backend.image_present("orchestrator/build:no-such-image") is False
        assert await subject.backend.image_present(subject.image) is True

    # -- capabilities, where the engine claims them ----------------------------------------------

    async def test_find_and_reattach_give_the_step_back_less_what_was_read(
        self, subject: Subject
    ) -> None:
        backend = subject.backend
        if not backend.supports_adopt:
            pytest.skip(f"{backend.name} does not adopt here")
        prints: list[tuple[Stream, str]] = [("stdout", f"L{i}") for i in range(1, 6)]
        handle = await subject.setup([*prints, ("stderr", "L err")], code=2)
        await read_lines(await backend.start(handle))
        await backend.wait(handle)

        [found] = [s for s in await backend.find(subject.labels) if s.handle == handle]
        assert found.state == "exited"
        assert found.exit is not None and found.exit.code == 2
        assert dict(found.labels).items() >= dict(subject.labels).items()
        again = await backend.reattach(handle, {"stdout": 2}, follow=False)
        assert await read_lines(again) == {"stdout": ["L3", "L4", "L5"], "stderr": ["L err"]}
        await backend.destroy(handle)

    async def test_a_running_step_is_found_running(self, subject: Subject) -> None:
        backend = subject.backend
        if not backend.supports_adopt:
            pytest.skip(f"{backend.name} does not adopt here")
        handle = await subject.setup([("stdout", "L up")], hold=True)
        output = await backend.start(handle)
        try:
            found = await until(
                lambda: backend.find(subject.labels),
                lambda steps: any(s.handle == handle and s.state == "running" for s in steps),
                timeout_s=30,
                what="the step found running",
            )
            assert [s.exit for s in found if s.handle == handle] == [None]
        finally:
            await output.aclose()
            await backend.destroy(handle)

    async def test_exec_runs_in_a_running_step_only(self, subject: Subject) -> None:
        backend = subject.backend
        if not backend.supports_exec:
            pytest.skip(f"{backend.name} cannot exec")
        handle = await subject.setup([("stdout", "L up")], hold=True)
        output = await backend.start(handle)
        try:
            tar = io.BytesIO()
            with tarfile.open(fileobj=tar, mode="w") as archive:
                info = tarfile.TarInfo("note")
                info.size = 2
                archive.addfile(info, io.BytesIO(b"hi"))
            await backend.put(handle, "/tmp", tar)
            command = ("sh", "-c", "cat /tmp/note; echo oh >&2; exit 4")
            ran = await backend.exec(handle, command, user="builder", workdir="/", keep_bytes=64)
            if subject.fake is None:  # the fake plays scripts, it runs no commands
                assert (ran.code, ran.stdout, ran.stderr) == (4, b"hi", b"oh\n")
            assert await backend.cpu_seconds(handle) is not None
            await backend.kill(handle)
            await backend.wait(handle)
            with pytest.raises(BackendError):  # exited: nothing runs there any more
                await backend.exec(handle, ("true",), user="builder", workdir="/", keep_bytes=64)
        finally:
            await output.aclose()
            await backend.destroy(handle)
        with pytest.raises(ContainerGone):
            await backend.exec(handle, ("true",), user="builder", workdir="/", keep_bytes=64)

    async def test_volumes_are_made_once_listed_by_label_and_removed_idempotently(
        self, subject: Subject
    ) -> None:
        backend = subject.backend
        if not backend.supports_volumes:
            assert await backend.list_volumes(subject.labels) == {}
            return
        name = f"contract-{uuid.uuid4().hex}"
        assert await backend.create_volume(name, subject.labels) is True
        try:
            assert await backend.create_volume(name, subject.labels) is False
            assert name in await backend.list_volumes(subject.labels)
        finally:
            await backend.remove_volume(name)
        await backend.remove_volume(name)  # gone already: fine
        assert name not in await backend.list_volumes(subject.labels)
