"""The swarm engine's parts that need no swarm: its handoff listener over real HTTP, its log
deduplication, and the rule that it only ever asks a manager (never a node's containers)."""

from __future__ import annotations

import ast
import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from orchestrator.backend import (
    _daemon,
    _handoff,
    _lacking,
    _pile,
    _pushed,
    _servicelogs,
    _swarmadopt,
    _swarmspec,
    _swarmstop,
    _wrapper,
    swarm,
)
from orchestrator.backend._attach import frames
from orchestrator.backend._handoff import Handoff
from orchestrator.backend._servicelogs import Deduplicator, timestamp_key
from orchestrator.errors import ArchiveTooLarge, ContainerGone

# What a swarm manager answers for the whole cluster. Anything else docker-py offers (containers,
# exec, archives, attach, volumes) acts on one node's daemon and would miss a task elsewhere.
MANAGER_CALLS = {
    "api",  # the low-level client itself: its calls go through `_api`, checked here
    "base_url",
    "close",
    "configs",
    "create_config",
    "create_network",
    "create_service",
    "get",  # the service logs endpoint, read raw (its URL is checked below)
    "images",  # the manager's own image list: what the health check and runner ask
    "info",
    "inspect_network",
    "inspect_node",
    "inspect_task",
    "networks",
    "nodes",
    "ping",
    "remove_config",
    "remove_service",
    "services",
    "tasks",
}
CLIENTS = {"_api", "_long", "_client"}


def _engine_calls(source: str) -> set[str]:
    calls = set()
    for node in ast.walk(ast.parse(source)):
        # self._api.X, self._long.X, self._client.X, and X on a local alias of one (api = ...)
        if not isinstance(node, ast.Attribute):
            continue
        if isinstance(node.value, ast.Attribute) and node.value.attr in CLIENTS:
            calls.add(node.attr)
        if isinstance(node.value, ast.Name) and node.value.id == "api":
            calls.add(node.attr)
    return calls


@pytest.mark.parametrize(
    "module",
    [
        swarm,
        _swarmspec,
        _swarmstop,
        _servicelogs,
        _handoff,
        _pushed,
        _wrapper,
        _swarmadopt,
        _daemon,
        _pile,
        _lacking,
    ],
)
def test_the_swarm_engine_only_asks_a_manager(module: object) -> None:
    source = Path(str(getattr(module, "__file__", ""))).read_text()
    calls = _engine_calls(source)
    assert calls <= MANAGER_CALLS, f"node-local calls: {calls - MANAGER_CALLS}"
    assert "/containers" not in source and "/exec" not in source
    if module is swarm:  # the rule would pass vacuously if the walk found nothing
        assert {"create_service", "tasks", "get"} <= calls
        assert 'f"{api.base_url}/services/{handle}/logs"' in source
    if module is _swarmstop:
        assert {"remove_service", "tasks", "inspect_task"} <= calls


def test_the_manager_only_rule_sees_a_node_local_call() -> None:
    source = (
        "def f(self):\n    self._api.put_archive(1)\n    api = self._long\n    api.exec_create(2)\n"
    )
    assert _engine_calls(source) - MANAGER_CALLS == {"put_archive", "exec_create"}


def test_timestamps_sort_in_time_order_whatever_their_precision() -> None:
    stamps = [
        b"2026-11-30T16:39:55.5Z",
        b"2026-11-30T16:39:55.519474313Z",
        b"2026-11-30T16:39:55.52Z",
        b"2026-11-30T16:39:56Z",
    ]
    keys = [timestamp_key(s) for s in stamps]
    assert keys == sorted(keys) and len(set(keys)) == 4


def test_overlapping_reads_emit_each_message_once() -> None:
    dedup = Deduplicator()
    messages = [("stdout", b"1"), ("stdout", b"1"), ("stdout", b"2"), ("stderr", b"1")]
    # A live read that stopped after the second message with the same timestamp.
    dedup.begin_read()
    live = [m for m in messages[:2] if dedup.accept(m[0], m[1])]  # type: ignore[arg-type]
    # A full read from the start: only what the live one did not emit.
    dedup.begin_read()
    rest = [m for m in messages if dedup.accept(m[0], m[1])]  # type: ignore[arg-type]
    assert live + rest == messages
    dedup.begin_read()
    assert [m for m in messages if dedup.accept(m[0], m[1])] == []  # type: ignore[arg-type]


def test_frames_split_the_logs_framing_at_any_block_boundary() -> None:
    def frame(kind: int, payload: bytes) -> bytes:
        return bytes([kind, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload

    raw = frame(1, b"T1 out\n") + frame(2, b"T2 err\n") + frame(1, b"T3 more\n")
    blocks = [raw[i : i + 5] for i in range(0, len(raw), 5)]
    got = [f for batch in frames(iter(blocks)) for f in batch]
    assert got == [("stdout", b"T1 out\n"), ("stderr", b"T2 err\n"), ("stdout", b"T3 more\n")]


async def test_handoff_serves_inputs_once_to_the_right_token_only(handoff: Handoff) -> None:
    token = handoff.open("orch-a", io.BytesIO(b"the tar"), ("/out",))
    url = f"{handoff.url}/steps/orch-a/inputs"
    async with aiohttp.ClientSession() as http:
        unknown = await http.get(f"{handoff.url}/steps/orch-b/inputs")
        assert unknown.status == 404
        for wrong in ("", "Bearer nope", f"Bearer {token}x", token):
            refused = await http.get(url, headers={"Authorization": wrong})
            assert refused.status == 403, wrong
        auth = {"Authorization": f"Bearer {token}"}
        first = await http.get(url, headers=auth)
        assert (first.status, await first.read()) == (200, b"the tar")
        again = await http.get(url, headers=auth)
        assert again.status == 410


async def test_handoff_takes_each_output_once_and_caps_its_size(handoff: Handoff) -> None:
    token = handoff.open("orch-a", None, ("/out", "/tmp/report"))
    auth = {"Authorization": f"Bearer {token}"}
    base = f"{handoff.url}/steps/orch-a/outputs"
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ContainerGone, match="sent no /out"):
            handoff.output("orch-a", "/out/.", None)
        assert (await http.put(f"{base}/0", data=b"packages", headers=auth)).status == 201
        assert (await http.put(f"{base}/0", data=b"again", headers=auth)).status == 409
        assert (await http.put(f"{base}/7", data=b"x", headers=auth)).status == 404
        forged = await http.put(f"{base}/1", data=b"x", headers={"Authorization": "Bearer x"})
        assert forged.status == 403

        # Past the cap (and tar's slack), streamed without a length: refused, and said so.
        async def body() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"x" * 65536

        big = await http.put(f"{base}/1", data=body(), headers=auth)
        assert big.status == 413
    with handoff.output("orch-a", "/out/.", None) as tar:
        assert tar.read() == b"packages"
    with pytest.raises(ArchiveTooLarge):
        handoff.output("orch-a", "/tmp/report/.", None)
    with pytest.raises(ContainerGone, match="not asked for"):
        handoff.output("orch-a", "/etc", None)
    handoff.drop("orch-a")
    async with aiohttp.ClientSession() as http:
        gone = await http.put(f"{base}/1", data=b"x", headers=auth)
        assert gone.status == 404


def test_the_wrapper_takes_only_plain_absolute_output_paths() -> None:
    env = _handoff.wrapper_env("http://h:1", "orch-a", "t", "fetch", ("/out", "/tmp/r"))
    assert env["ORCHESTRATOR_STEP_OUTPUTS"] == "/out /tmp/r"
    for bad in (("out",), ("/a b",), ("/a\nb",)):
        with pytest.raises(ValueError, match="absolute"):
            _handoff.wrapper_env("http://h:1", "orch-a", "t", None, bad)


def _task(state: str, code: int | None = None) -> dict[str, object]:
    container = {} if code is None else {"ContainerID": "c1", "ExitCode": code}
    return {"Status": {"State": state, "ContainerStatus": container}}


def test_a_task_ends_with_its_own_exit_code_only_when_its_command_ended_it() -> None:
    assert _swarmspec.exit_code(_task("complete", 0)) == 0
    assert _swarmspec.exit_code(_task("failed", 2)) == 2
    assert _swarmspec.exit_code(_task("shutdown", 0)) is None  # Swarm stopped it: no code
    assert _swarmspec.exit_code(_task("rejected")) is None
    assert _swarmspec.failed(_task("failed", 2)) and not _swarmspec.failed(_task("complete", 0))


def test_gpu_placement_reads_labels_and_generic_resources() -> None:
    def node(labels: dict[str, str], kinds: list[str], availability: str = "active") -> dict:  # type: ignore[type-arg]
        resources = [{"DiscreteResourceSpec": {"Kind": k, "Value": 1}} for k in kinds]
        return {
            "Spec": {"Labels": labels, "Availability": availability},
            "Status": {"State": "ready"},
            "Description": {"Resources": {"GenericResources": resources}},
        }

    plain, labelled, advertised = (
        node({}, []),
        node({"orchestrator.gpu": "true"}, []),
        node({}, ["NVIDIA-GPU"]),
    )
    assert _swarmspec.gpu_resources(advertised) == ["NVIDIA-GPU"]
    assert _swarmspec.gpu_request([labelled]) is None  # a constraint on the label instead
    assert _swarmspec.gpu_request([labelled, advertised]) == {"NVIDIA-GPU": 1}
    assert _swarmspec.usable(plain) and not _swarmspec.usable(node({}, [], "drain"))
