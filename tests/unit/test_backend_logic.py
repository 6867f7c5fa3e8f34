"""Pure logic of the Docker backend: line splitting, the sandbox, what is retried."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from orchestrator.backend import ContainerSpec
from orchestrator.backend.docker import (
    _MAX_LINE_BYTES,
    _is_transient,
    _is_unsent,
    create_kwargs,
    split_lines,
)


def texts(frames: list[tuple[bytes | None, bytes | None]]) -> list[tuple[str, str]]:
    return [(line.stream, line.text) for batch in split_lines(iter(frames)) for line in batch]


def test_lines_are_split_and_tagged_in_order() -> None:
    frames = [(b"a\nb", None), (None, b"err\n"), (b"c\n", None), (b"tail", None)]
    assert texts(frames) == [
        ("stdout", "a"),
        ("stderr", "err"),
        ("stdout", "bc"),
        ("stdout", "tail"),
    ]


def test_partial_lines_do_not_mix_streams() -> None:
    frames = [(b"out-", None), (None, b"err-"), (None, b"line\n"), (b"line\r\n", None)]
    assert texts(frames) == [("stderr", "err-line"), ("stdout", "out-line")]


def test_empty_lines_and_bad_utf8_survive() -> None:
    assert texts([(b"\n\xff\n", None)]) == [("stdout", ""), ("stdout", "\ufffd")]


def test_an_endless_line_is_cut_so_memory_stays_bounded() -> None:
    lines = texts([(b"x" * (_MAX_LINE_BYTES * 2 + 5), None)])
    assert [len(t) for _, t in lines] == [_MAX_LINE_BYTES, _MAX_LINE_BYTES, 5]


def test_sandbox_options() -> None:
    spec = ContainerSpec(
        image="img",
        command=("makepkg",),
        labels={"orchestrator.job": "j"},
        network="none",
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


def test_gpu_builds_request_every_gpu() -> None:
    spec = ContainerSpec(image="img", command=("x",), labels={}, gpus=True)
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
    assert _is_transient(exc) is transient


def test_non_idempotent_calls_retry_only_when_nothing_was_sent() -> None:
    refused = requests.exceptions.ConnectionError("refused")
    refused.__cause__ = ConnectionRefusedError()
    assert _is_unsent(refused)
    assert not _is_unsent(requests.exceptions.ConnectionError("reset mid-request"))
    assert not _is_unsent(api_error(500))
