"""Pure logic of the backends: line splitting, the Docker sandbox, what is retried, the choice
of engine by setting."""

from __future__ import annotations

import struct

import docker.errors
import pytest
import requests

from orchestrator import Settings
from orchestrator.backend import Step
from orchestrator.backend._attach import demux
from orchestrator.backend._daemon import is_transient, is_unsent
from orchestrator.backend._dockerspec import create_kwargs, quota_capable
from orchestrator.backend.engines import ENGINES, open_backend
from orchestrator.backend.fake import FakeBackend
from orchestrator.backend.lines import MAX_LINE_BYTES, LineSplitter
from orchestrator.errors import BackendError, UnknownBackend


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def lines(frames: list[tuple[bytes | None, bytes | None]]) -> list[tuple[str, str]]:
    """Feed (stdout, stderr) pairs through the splitter; one pair per read."""
    splitter = LineSplitter()
    chunks = []
    for out, err in frames:
        runs = [(s, d) for s, d in (("stdout", out), ("stderr", err)) if d]
        chunks += splitter.feed(runs, 0.0)  # type: ignore[arg-type]
    chunks += splitter.finish()
    return [(c.stream, line) for c in chunks for line in c.text.split("\n")]


def test_demux_joins_frames_of_one_stream_and_keeps_their_order() -> None:
    raw = frame(1, b"a\n") + frame(1, b"b") + frame(2, b"err\n") + frame(1, b"c\n")
    assert list(demux([raw])) == [[("stdout", b"a\nb"), ("stderr", b"err\n"), ("stdout", b"c\n")]]


@pytest.mark.parametrize("size", [1, 3, 7, 8, 9, 100])
def test_demux_reassembles_frames_cut_anywhere(size: int) -> None:
    raw = b"".join(frame(1 + i % 2, f"line {i}\n".encode()) for i in range(50))
    blocks = [raw[i : i + size] for i in range(0, len(raw), size)]
    got: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    for runs in demux(blocks):
        for stream, data in runs:
            got[stream] += data
    assert got["stdout"] == b"".join(f"line {i}\n".encode() for i in range(0, 50, 2))
    assert got["stderr"] == b"".join(f"line {i}\n".encode() for i in range(1, 50, 2))


def test_demux_reports_a_stream_cut_inside_a_frame() -> None:
    with pytest.raises(BackendError, match="inside a frame"):
        list(demux([frame(1, b"whole\n") + frame(1, b"half")[:-2]]))


def test_lines_are_split_and_tagged_in_order() -> None:
    frames = [(b"a\nb", None), (None, b"err\n"), (b"c\n", None), (b"tail", None)]
    assert lines(frames) == [
        ("stdout", "a"),
        ("stderr", "err"),
        ("stdout", "bc"),
        ("stdout", "tail"),
    ]


def test_partial_lines_do_not_mix_streams() -> None:
    frames = [(b"out-", None), (None, b"err-"), (None, b"line\n"), (b"line\r\n", None)]
    assert lines(frames) == [("stderr", "err-line"), ("stdout", "out-line")]


def test_empty_lines_carriage_returns_and_bad_utf8_survive() -> None:
    assert lines([(b"\n\xff\r\n\n", None)]) == [
        ("stdout", ""),
        ("stdout", "\ufffd"),
        ("stdout", ""),
    ]


def test_a_chunk_holds_every_whole_line_of_a_read() -> None:
    [chunk] = LineSplitter().feed([("stdout", b"1\n2\n3\n4")], 5.0)
    assert (chunk.stream, chunk.text, chunk.ts) == ("stdout", "1\n2\n3", 5.0)


def test_an_endless_line_is_cut_so_memory_stays_bounded() -> None:
    got = lines([(b"x" * (MAX_LINE_BYTES * 2 + 5), None)])
    assert [len(t) for _, t in got] == [MAX_LINE_BYTES, MAX_LINE_BYTES, 5]


def test_sandbox_options() -> None:
    spec = Step(
        image="img",
        command=("makepkg",),
        labels={"orchestrator.job": "j"},
        network=False,
        memory_bytes=1024,
        cpus=1.5,
        pids_limit=100,
        log_max_bytes=2048,
    )
    kwargs = create_kwargs(spec)
    assert kwargs["init"] is True
    assert kwargs["user"] == "builder"
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["network_mode"] == "none"
    assert (kwargs["mem_limit"], kwargs["nano_cpus"], kwargs["pids_limit"]) == (
        1024,
        1_500_000_000,
        100,
    )
    assert kwargs["log_config"]["Type"] == "json-file"
    assert kwargs["log_config"]["Config"] == {"max-size": "2048"}
    assert "device_requests" not in kwargs
    assert "volumes" not in kwargs  # never a bind mount, never the Docker socket
    assert "read_only" not in kwargs and "tmpfs" not in kwargs


def test_a_step_with_network_gets_the_configured_docker_network() -> None:
    step = Step(image="img", command=("x",), labels={})
    assert create_kwargs(step)["network_mode"] == "bridge"
    assert create_kwargs(step, network="builds")["network_mode"] == "builds"


def test_a_read_only_step_writes_only_its_workdir_and_a_small_tmp() -> None:
    step = Step(
        image="img", command=("x",), labels={}, workdir="/src", read_only=True, tmp_bytes=4096
    )
    kwargs = create_kwargs(step)
    assert kwargs["read_only"] is True
    assert kwargs["tmpfs"] == {"/tmp": "size=4096"}
    assert kwargs["volumes"] == ["/src"]  # anonymous: removed with the container


def test_gpu_builds_request_every_gpu() -> None:
    spec = Step(image="img", command=("x",), labels={}, gpus=True)
    [request] = create_kwargs(spec)["device_requests"]
    assert request["Count"] == -1
    assert request["Capabilities"] == [["gpu"]]


def api_error(status: int) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("boom", response=response)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (requests.exceptions.ConnectionError("reset"), True),
        (api_error(500), True),
        (api_error(503), True),
        (api_error(404), False),
        (api_error(409), False),
        (ValueError("x"), False),
    ],
)
def test_only_transient_errors_are_retried(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_non_idempotent_calls_retry_only_when_nothing_was_sent() -> None:
    refused = requests.exceptions.ConnectionError("refused")
    refused.__cause__ = ConnectionRefusedError()
    assert is_unsent(refused)
    assert not is_unsent(requests.exceptions.ConnectionError("reset mid-request"))
    assert not is_unsent(api_error(500))


@pytest.mark.parametrize(
    ("info", "capable"),
    [
        ({"Driver": "fuse-overlayfs", "DriverStatus": []}, False),
        ({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}, False),
        ({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "xfs"]]}, True),
        ({"Driver": "btrfs"}, True),
        ({}, False),
    ],
)
def test_a_disk_quota_is_asked_for_only_where_the_driver_can_have_one(
    info: dict[str, object], capable: bool
) -> None:
    assert quota_capable(info) is capable
    spec = Step(image="i", command=("true",), labels={}, disk_bytes=123)
    assert create_kwargs(spec, quota=quota_capable(info)).get("storage_opt") == (
        {"size": "123"} if capable else None
    )


def test_the_backend_setting_picks_the_engine_by_name() -> None:
    assert set(ENGINES) >= {"docker", "fake"}
    backend = open_backend(Settings(backend="fake"))
    assert isinstance(backend, FakeBackend) and backend.name == "fake"


def test_an_unknown_backend_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownBackend, match=r"unknown backend 'podman'.*docker, swarm, fake"):
        open_backend(Settings(backend="podman"))
