"""diffoscope on two builds of a package, in a throwaway sandbox: where they differ, as text.

The packages came from untrusted PKGBUILDs, and diffoscope unpacks and reads everything in
them with many tools: it never runs on the host. Its step has no network, a read-only root,
no capabilities (every step's), small memory, process and time limits, and only the two
packages in it; what it prints is kept up to ``MAX_DIFFERENCES_BYTES`` (its first bytes:
diffoscope says which files differ first). The step is removed however it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import tarfile
from pathlib import Path
from typing import IO

from ..backend import Backend, Step
from ..errors import OrchestratorError
from ..settings import MiB, Settings
from ..storage import archive
from .reproduce import MAX_DIFFERENCES_BYTES, cut
from .runner import BUILDER_UID, INSPECT_LABEL, INSTANCE_LABEL

WORKDIR = "/work"
# diffoscope: 0 the same, 1 they differ, anything else it failed.
_SAME, _DIFFER = 0, 1


async def differences(
    backend: Backend,
    settings: Settings,
    job_id: str,
    original: Path,
    rebuilt: Path,
) -> str:
    """diffoscope's text report of how ``rebuilt`` differs from ``original`` (files named alike:
    they go in as ``original/NAME`` and ``rebuilt/NAME``). ``OrchestratorError`` when it could
    not say (no image, a limit, a failure): the caller reports that instead."""
    name = original.name
    files = {f"original/{name}": original, f"rebuilt/{name}": rebuilt}
    inputs = await asyncio.to_thread(_pack, files)
    step = Step(
        image=settings.image_diffoscope,
        # Text to stdout; unpacked members go to the in-memory /tmp (TMPDIR), within its size.
        command=(
            "diffoscope",
            "--text",
            "-",
            "--no-progress",
            "--max-text-report-size",
            str(MAX_DIFFERENCES_BYTES),
            f"original/{name}",
            f"rebuilt/{name}",
        ),
        labels={INSPECT_LABEL: job_id, INSTANCE_LABEL: settings.instance_id},
        workdir=WORKDIR,
        env={"TMPDIR": "/tmp", "HOME": "/tmp"},
        inputs=inputs,
        network=False,
        memory_bytes=settings.diffoscope_memory_bytes,
        cpus=1.0,
        pids_limit=128,
        log_max_bytes=1 * MiB,
        read_only=True,
        tmp_bytes=settings.diffoscope_tmp_bytes,
    )
    with inputs:
        handle = await backend.setup(step)
    try:
        kept: list[str] = []
        size = 0
        stream = await backend.start(handle)

        async def collect() -> int:
            nonlocal size
            async for batch in stream:
                for chunk in batch:
                    # Both streams: what it says on stderr is why it stopped, when it did.
                    if size <= MAX_DIFFERENCES_BYTES:
                        kept.append(chunk.text + "\n")
                        size += len(chunk.text) + 1
            return (await backend.wait(handle)).code

        timeout_s = settings.diffoscope_timeout_s
        try:
            code = await asyncio.wait_for(collect(), timeout_s)
        except TimeoutError:
            raise OrchestratorError(f"diffoscope took more than {timeout_s:g} s") from None
        finally:
            await stream.aclose()
    finally:
        with contextlib.suppress(OrchestratorError):
            await asyncio.shield(backend.destroy(handle))
    text = cut("".join(kept))
    if code not in (_SAME, _DIFFER):
        raise OrchestratorError(f"diffoscope failed (exit code {code}): {text[-2000:]}")
    return text


def _pack(files: dict[str, Path]) -> IO[bytes]:
    """A tar of ``files`` (by their name in it), owned by the sandbox's user."""
    out = archive.spooled()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for folder in sorted({name.split("/")[0] for name in files}):
                info = tarfile.TarInfo(folder)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                info.uid = info.gid = BUILDER_UID
                tar.addfile(info)
            for name, path in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = path.stat().st_size, 0o644
                info.uid = info.gid = BUILDER_UID
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out
