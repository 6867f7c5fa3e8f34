"""Cache volumes on Swarm (``_swarmvolumes.py``): the store, and the real task wrapper (bash,
curl, tar, zstd) carrying a volume to and from the handoff listener, with no Docker."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from orchestrator.backend._handoff import Handoff, wrapper_command, wrapper_env
from orchestrator.backend._swarmadopt import outputs_of
from orchestrator.backend._swarmvolumes import VolumeStore
from orchestrator.errors import BackendError, VolumeInUse

from .conftest import listening

VOLUME = "orchestrator-cache-0123abcd"
LABELS = {"orchestrator.cache": "hexyl:cpu", "orchestrator.instance": "t"}


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[Handoff]:
    async with listening(VolumeStore(tmp_path / "volumes", max_bytes=1 << 20)) as exchange:
        yield exchange


def test_the_store_keeps_volumes_by_label_and_refuses_to_remove_a_mounted_one(
    tmp_path: Path,
) -> None:
    store = VolumeStore(tmp_path, max_bytes=100)
    assert store.create(VOLUME, LABELS) is True
    assert store.create(VOLUME, {"other": "labels"}) is False  # made once, labels kept
    assert store.listing({"orchestrator.instance": "t"}) == {VOLUME: LABELS}
    assert store.listing({"orchestrator.instance": "u"}) == {}
    assert store.usage(VOLUME) == 0 and store.archive(VOLUME) is None
    store.mount((VOLUME,))
    with pytest.raises(VolumeInUse):
        store.remove(VOLUME)
    store.unmount((VOLUME,))
    store.remove(VOLUME)
    assert store.listing({}) == {} and store.usage(VOLUME) is None
    with pytest.raises(BackendError, match="not a volume name"):
        store.create("../etc", {})


async def _task(listener: Handoff, handle: str, volume_dir: Path, script: str) -> str:
    """One task's wrapper around ``script``, as a swarm task runs it: its stderr."""
    token = listener.open(handle, None, (), volumes=(VOLUME,))
    env = wrapper_env(listener.url, handle, token, None, (), volumes={VOLUME: str(volume_dir)})
    process = await asyncio.create_subprocess_exec(
        *wrapper_command(("bash", "-c", script)),
        env={"PATH": os.environ["PATH"], **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await process.communicate()
    listener.drop(handle)
    assert process.returncode == 0, err
    return err.decode()


async def test_a_volume_made_in_one_task_is_there_in_the_next_anywhere(
    listener: Handoff, tmp_path: Path
) -> None:
    assert listener.volumes is not None
    listener.volumes.create(VOLUME, LABELS)
    # Each task has its own folder, as a task on another node has its own container.
    a, b, c = (tmp_path / n for n in ("node-a", "node-b", "node-c"))
    await _task(listener, "orch-a", a, f'test -z "$(ls -A {a})" && echo kept > {a}/kept.txt')
    assert (listener.volumes.usage(VOLUME) or 0) > 0
    # The next task (another folder: another node) finds it, and its change is kept in turn.
    await _task(listener, "orch-b", b, f"grep -qx kept {b}/kept.txt && echo more >> {b}/kept.txt")
    await _task(listener, "orch-c", c, f'test "$(cat {c}/kept.txt)" = "$(printf "kept\\nmore")"')


async def test_an_archive_that_does_not_unpack_leaves_the_volume_empty(
    listener: Handoff, tmp_path: Path
) -> None:
    assert listener.volumes is not None
    listener.volumes.create(VOLUME, LABELS)
    spare, out = listener.volumes.spare(VOLUME)
    with out:
        out.write(b"not zstd at all")
    assert listener.volumes.commit(VOLUME, spare)
    where = tmp_path / "task"
    err = await _task(listener, "orch-a", where, f'test -z "$(ls -A {where})"')
    assert "could not unpack the cache" in err


async def test_a_step_reaches_only_its_own_volumes_and_sends_each_once(
    listener: Handoff,
) -> None:
    assert listener.volumes is not None
    listener.volumes.create(VOLUME, LABELS)
    mine = listener.open("orch-a", None, (), volumes=(VOLUME,))
    other = listener.open("orch-b", None, ())
    base = f"{listener.url}/steps"
    async with aiohttp.ClientSession() as http:
        empty = await http.get(f"{base}/orch-a/volumes/0", headers=_auth(mine))
        assert empty.status == 204
        # Another step's token, or a volume it does not mount: nothing.
        assert (await http.get(f"{base}/orch-a/volumes/0", headers=_auth(other))).status == 403
        assert (await http.get(f"{base}/orch-b/volumes/0", headers=_auth(other))).status == 404
        assert (await http.put(f"{base}/orch-b/volumes/0", headers=_auth(other))).status == 404
        sent = await http.put(f"{base}/orch-a/volumes/0", data=b"new", headers=_auth(mine))
        assert sent.status == 201
        again = await http.put(f"{base}/orch-a/volumes/0", data=b"x", headers=_auth(mine))
        assert again.status == 409
        got = await http.get(f"{base}/orch-a/volumes/0", headers=_auth(mine))
        assert (got.status, await got.read()) == (200, b"new")
    with pytest.raises(VolumeInUse):
        listener.volumes.remove(VOLUME)
    listener.drop("orch-a")
    listener.volumes.remove(VOLUME)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_next_process_takes_a_volume_back_from_a_step_it_adopts(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "volumes", max_bytes=1 << 20)
    store.create(VOLUME, LABELS)
    first = Handoff("127.0.0.1", 0, None, max_bytes=1000, secret=b"s" * 32, volumes=store)
    token = first.open("orch-a", None, (), volumes=(VOLUME,))
    env = wrapper_env("http://h:1", "orch-a", token, None, (), volumes={VOLUME: "/cache"})
    await first.close()  # the service stops while the task runs

    # The next one reads the volumes' names back from the service's environment.
    variables = [f"{k}={v}" for k, v in env.items()]
    service = {"Spec": {"TaskTemplate": {"ContainerSpec": {"Env": variables}}}}
    names = outputs_of(service, "ORCHESTRATOR_STEP_VOLUME_NAMES")
    assert names == (VOLUME,)
    second = Handoff("127.0.0.1", 0, None, max_bytes=1000, secret=b"s" * 32, volumes=store)
    await second.start()
    try:
        second.reopen("orch-a", (), None, names)
        async with aiohttp.ClientSession() as http:
            url = f"{second.url}/steps/orch-a/volumes/0"
            assert (await http.put(url, data=b"late", headers=_auth(token))).status == 201
        archive = store.archive(VOLUME)
        assert archive is not None and archive.read_bytes() == b"late"
    finally:
        await second.close()
