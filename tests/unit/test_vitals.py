"""A build's vital signs: the daemon's figures read, phases timed, silences and memory explained."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from orchestrator.backend._usage import Usage, busiest, usage_from_stats
from orchestrator.backend.fake import FakeBackend
from orchestrator.build.life import sample_while_running
from orchestrator.build.vitals import Vitals, duration, size
from orchestrator.narration.events import Event

MiB = 1 << 20

# The daemon's one-shot answers as this machine's Docker 20.10 gives them (cgroup v1), trimmed,
# and the shape cgroup v2 hosts give.
V1 = {
    "memory_stats": {
        "usage": 340 * MiB,
        "max_usage": 400 * MiB,
        "stats": {
            "total_rss": 290 * MiB,
            "total_mapped_file": 10 * MiB,
            "total_inactive_file": 40 * MiB,
            "inactive_file": 40 * MiB,
        },
        "limit": 2048 * MiB,
    },
    "cpu_stats": {"cpu_usage": {"total_usage": 12_500_000_000}, "online_cpus": 2},
    "pids_stats": {"current": 17},
    "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 20}, "eth1": {"rx_bytes": 5}},
}
V2 = {
    "memory_stats": {
        "usage": 100 * MiB,
        "stats": {"anon": 80 * MiB, "file_mapped": 10 * MiB, "inactive_file": 5 * MiB},
        "limit": 1 << 63,
    },
    "cpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}},
    "pids_stats": {"current": 3},
}
BARE = {  # no breakdown: usage less the inactive file cache
    "memory_stats": {"usage": 100 * MiB, "stats": {"inactive_file": 10 * MiB}},
    "cpu_stats": {"cpu_usage": {"total_usage": 0}},
}
STOPPED = {"memory_stats": {}, "cpu_stats": {"cpu_usage": {}}, "pids_stats": {}}


def test_the_daemons_figures_are_read_as_a_working_set_and_totals() -> None:
    usage = usage_from_stats(V1)
    assert usage == Usage(12.5, 300 * MiB, 2048 * MiB, 17, 1005, 20)
    v2 = usage_from_stats(V2)
    assert v2 is not None
    assert (v2.memory_bytes, v2.memory_limit_bytes, v2.net_rx_bytes) == (90 * MiB, None, 0)
    bare = usage_from_stats(BARE)
    assert bare is not None and bare.memory_bytes == 90 * MiB
    assert usage_from_stats(STOPPED) is None


def test_the_busiest_commands_come_first_each_named_once() -> None:
    top = {
        "Titles": ["%CPU", "COMMAND"],
        "Processes": [["0.1", "bash"], ["95.0", "cc1plus"], ["80", "cc1plus"], ["12", "cmake"]],
    }
    assert busiest(top) == ("cc1plus", "cmake")  # the shell around them says nothing
    idle = {"Titles": ["PID", "%CPU", "COMMAND"], "Processes": [["1", "0.0", "makepkg"]]}
    assert busiest(idle) == ("makepkg",)
    quiet = {**idle, "Processes": [*idle["Processes"], ["9", "0.0", "sleep"]]}
    assert busiest(quiet) == ("sleep",)
    assert busiest({"Titles": ["PID"], "Processes": [["1"]]}) == ()


def _usage(cpu_s: float, memory: int, limit: int | None = 1024 * MiB, pids: int = 4) -> Usage:
    return Usage(cpu_s, memory, limit, pids, 0, 0)


def test_cpu_share_comes_from_two_samples_and_peaks_are_kept() -> None:
    vitals = Vitals(started=100.0, silence_s=60)
    first = vitals.sample(_usage(1.0, 200 * MiB, pids=9), now=105.0)
    assert first.cpu_percent == 0.0  # one look says nothing about a rate
    second = vitals.sample(_usage(11.0, 100 * MiB), now=110.0, disk_bytes=5000)
    assert second.cpu_percent == 200.0  # ten CPU seconds in five: two busy cores
    assert (second.peak_memory_bytes, second.disk_bytes) == (200 * MiB, 5000)
    totals = vitals.totals(now=111.0)
    assert (totals.peak_memory_bytes, totals.cpu_seconds, totals.peak_pids) == (
        200 * MiB,
        11.0,
        9,
    )


def test_makepkg_phases_are_timed_from_its_own_lines() -> None:
    vitals = Vitals(started=0.0, silence_s=60)
    for at, line in [
        (1, "==> Retrieving sources..."),
        (2, "==> Starting prepare()..."),
        (5, "==> Starting build()..."),
        (65, "==> Entering fakeroot environment..."),
        (66, "==> Starting package_hello()..."),
        (67, "==> Tidying install..."),  # still package()
        (69, "==> Starting package_hello-doc()..."),
        (70, "==> Leaving fakeroot environment."),
    ]:
        vitals.saw_phase(line, float(at))
    assert vitals.totals(now=80.0).phases_s == {"prepare": 3.0, "build": 60.0, "package": 4.0}


def test_a_phase_still_open_at_the_end_counts_until_then() -> None:
    vitals = Vitals(started=0.0, silence_s=60)
    vitals.saw_phase("==> Starting check()...", 10.0)
    assert vitals.totals(now=25.0).phases_s == {"check": 15.0}


def test_a_silence_is_explained_once_per_period_and_output_resets_it() -> None:
    vitals = Vitals(started=0.0, silence_s=60)
    vitals.sample(_usage(0.0, 0), now=55.0)
    vitals.sample(_usage(9.5, 1400 * MiB), now=60.0)
    assert vitals.silence(59.0) is None
    said = vitals.silence(60.0, ("cc1plus", "cmake"))
    assert said == "no output for 60 s; CPU 190%, 1.4 GiB; running: cc1plus, cmake"
    assert vitals.silence(100.0) is None
    assert vitals.silence(125.0) == "no output for 2 min; CPU 190%, 1.4 GiB"
    vitals.saw_output(130.0)
    assert vitals.silence(180.0) is None
    assert vitals.silence(190.0) == "no output for 60 s; CPU 190%, 1.4 GiB"


def test_memory_is_warned_of_once_at_nine_tenths_of_the_limit() -> None:
    vitals = Vitals(started=0.0, silence_s=60)
    vitals.sample(_usage(0, 900 * MiB), now=1.0)
    assert vitals.memory_warning() is None
    vitals.sample(_usage(0, 930 * MiB), now=2.0)
    warning = vitals.memory_warning()
    assert warning is not None and "91%" in warning and "930 MiB of 1.0 GiB" in warning
    vitals.sample(_usage(0, 1000 * MiB), now=3.0)
    assert vitals.memory_warning() is None
    unlimited = Vitals(started=0.0, silence_s=60)
    unlimited.sample(_usage(0, 10_000 * MiB, limit=None), now=1.0)
    assert unlimited.memory_warning() is None


def test_sizes_and_durations_read_as_people_say_them() -> None:
    assert [size(312 * MiB), size(1331 * MiB)] == ["312 MiB", "1.3 GiB"]
    assert [duration(45), duration(125), duration(3900)] == ["45 s", "2 min", "1 h 5 min"]


async def test_a_fault_in_sampling_is_logged_and_ends_only_the_sampling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Faulty(FakeBackend):
        async def usage(self, handle: str) -> Usage | None:
            raise RuntimeError("a bug in reading the figures")

    said: list[Event] = []

    async def sink(events: Sequence[Event]) -> None:
        said.extend(events)

    with caplog.at_level(logging.ERROR, logger="orchestrator.build.life"):
        await sample_while_running(Faulty(), "c1", Vitals(started=0.0, silence_s=60), sink, 0.0)
    assert "a bug in reading the figures" in caplog.text
    assert said == []
