"""makepkg's reading in warm readers: what makepkg accepts is accepted, readings are kept apart,
and whatever a top level does, the reader it ran in is clean (or replaced) before the next one.

Real makepkg, the real daemon, real HTTP; PKGBUILDs that do what rbee's worker PKGBUILDs do
(print at the top level, detect the platform in a function, pick sources at parse time, read
files), and hostile ones.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from orchestrator import Settings
from orchestrator.build.readers import READER_LABEL
from orchestrator.build.runner import INSTANCE_LABEL

from .. import waiting
from ..conftest import PKGBUILDS
from .conftest import serve
from .service import dry_run, read_sse, submit, tar_dir, wait_status

pytestmark = pytest.mark.docker


def pkgbuild(tmp_path: Path, name: str, top_level: str) -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "PKGBUILD").write_text(
        f"pkgname={name}\npkgver=1\npkgrel=1\narch=(any)\n{top_level}\npackage() {{ :; }}\n"
    )
    return src


def makepkg_itself(client: docker.DockerClient, image: str, src: Path) -> str:
    """What ``makepkg --printsrcinfo`` prints in a plain container of the image, for the
    folder as it is (every file whole), as the image's builder."""
    out = client.containers.run(
        image,
        ["sh", "-c", "cp -r /in /tmp/w && cd /tmp/w && makepkg --printsrcinfo"],
        volumes={str(src): {"bind": "/in", "mode": "ro"}},
        network_mode="none",
        environment={"BUILDDIR": "/tmp", "SRCDEST": "/tmp", "PKGDEST": "/tmp"},
        remove=True,
        stdout=True,
        stderr=False,
    )
    return bytes(out).decode()


def readers(client: docker.DockerClient, settings: Settings, image: str = "") -> list[Any]:
    """The instance's readers (of ``image`` only, if given: the catalog's cuda workers are read
    in cuda readers)."""
    mine = [f"{INSTANCE_LABEL}={settings.instance_id}", READER_LABEL]
    found = client.containers.list(ignore_removed=True, all=True, filters={"label": mine})
    return [c for c in found if not image or c.attrs["Config"]["Image"] == image]


def others_than_readers(client: docker.DockerClient, settings: Settings) -> list[str]:
    found = client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{INSTANCE_LABEL}={settings.instance_id}"}
    )
    return [str(c.name) for c in found if READER_LABEL not in c.labels]


def wait_until_clean(client: docker.DockerClient, settings: Settings) -> None:
    """Every reader runs only root's processes (its idle ones): no reading's is left. Waits
    for the tidying that follows an answer, at most 30 s."""

    def users() -> set[str]:
        return {
            row[1]
            for reader in readers(client, settings)
            if reader.status == "running"
            for row in reader.top(ps_args="-o pid,uid")["Processes"] or []
        }

    waiting.until_sync(
        users,
        lambda uids: uids <= {"0"},
        timeout_s=30,
        interval_s=0.1,
        what="no reading's processes left (their uids)",
    )


@pytest.mark.parametrize("folder", ["rbee-style-detect", "rbee-style-git"])
async def test_a_top_level_that_prints_is_read_as_makepkg_reads_it(
    client: TestClient,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    settings: Settings,
    folder: str,
) -> None:
    src = build_dir(folder)
    found = await dry_run(client, src)
    itself = makepkg_itself(docker_client, settings.image_cpu, src)
    # makepkg printed the top level's lines, then the .SRCINFO: ours is that .SRCINFO.
    assert itself.endswith(found["srcinfo"]), (itself, found["srcinfo"])
    printed = itself[: -len(found["srcinfo"])]
    assert "Building with features: " in printed
    [said] = [w for w in found["warnings"] if "printed this while makepkg read it" in w]
    assert "Building with features: " in said
    if folder == "rbee-style-detect":
        assert "Detected platform: linux-x86_64-cpu" in said
        assert "reading on debian" in said  # its stderr: a warning, not a refusal
        assert found["sources"] == ["worker-linux-x86_64.sh", "worker.conf"]
        assert "(cpu,http on debian)" in found["srcinfo"]  # read from its own files


def makepkg_on_each(client: docker.DockerClient, image: str, root: Path) -> dict[str, str]:
    """``makepkg --printsrcinfo`` in each folder under ``root``, in one plain container of the
    image: the .SRCINFO it printed, or ``refused`` when it exited non-zero."""
    script = (
        "for d in /in/*/; do n=$(basename $d); cp -r $d /tmp/$n; cd /tmp/$n;"
        ' printf "@@ %s\\n" "$n"; makepkg --printsrcinfo 2>/dev/null || echo "@@ refused"; done'
    )
    out = client.containers.run(
        image,
        ["sh", "-c", script],
        volumes={str(root): {"bind": "/in", "mode": "ro"}},
        network_mode="none",
        environment={"BUILDDIR": "/tmp", "SRCDEST": "/tmp", "PKGDEST": "/tmp"},
        remove=True,
        stdout=True,
        stderr=False,
    )
    readings: dict[str, str] = {}
    for part in bytes(out).decode().split("@@ ")[1:]:
        name, _, text = part.partition("\n")
        readings[name] = "refused" if text.endswith("@@ refused\n") or not text else text
    return readings


# The suite's PKGBUILDs whose package functions differ in what makepkg greps them for (each
# reading costs most of a second of CPU here, so not every fixture).
FUNCTION_SHAPES = (
    "overrides",  # arrays, appends, arch-specific ones, non-ASCII text, a grep of its own
    "nocasematch",  # a top level that makes bash's own matching ignore case
    "rbee-style-split",  # a split package as rbee's worker families ship
    "rbee-style-detect",  # prints at the top level, reads its own files
    "gnu-hello",
    "bad-checksum",
)


async def test_every_function_shape_is_read_as_makepkg_reads_it(
    client: TestClient, docker_client: docker.DockerClient, settings: Settings, tmp_path: Path
) -> None:
    """Ours is the tail of makepkg's own output, in a burst, for split packages, package
    functions that override arrays, arch-specific ones and text outside ASCII, a top level that
    runs grep itself or sets ``nocasematch`` (the reading answers makepkg's own grep calls in
    bash)."""
    root = tmp_path / "corpus"
    for name in FUNCTION_SHAPES:
        shutil.copytree(PKGBUILDS / name, root / name)
    itself = makepkg_on_each(docker_client, settings.image_cpu, root)
    assert sorted(itself) == sorted(FUNCTION_SHAPES)

    async def ours(name: str) -> str:
        response = await client.post(
            "/v1/builds",
            params={"dry_run": "true"},
            data=tar_dir(root / name),
            headers={"Content-Type": "application/gzip"},
        )
        body = await response.json()
        assert response.status in (200, 422), body
        return str(body["srcinfo"]) if response.status == 200 else "refused"

    found = dict(zip(itself, await asyncio.gather(*map(ours, itself)), strict=True))
    for name, text in itself.items():
        if text == "refused":
            assert found[name] == "refused", (name, found[name])
        else:
            assert found[name] != "refused" and text.endswith(found[name]), (name, text, found)
    assert "overrides-demo=0.3.1" in found["overrides"]
    assert "pkgdesc = Extra — grüße, ünïcödé, 日本語" in found["overrides"]
    assert "depends_aarch64 = libatomic" in found["overrides"]
    assert "\tdepends = bash\n" in found["nocasematch"]  # not the `Depends=` line


async def test_a_pkgbuild_that_prints_at_its_top_level_builds(
    client: TestClient, build_dir: Callable[..., Path]
) -> None:
    created = await submit(client, build_dir("rbee-style-detect"))
    assert any("Detected platform: linux-x86_64-cpu" in w for w in created["warnings"])
    job = await wait_status(client, created["job_id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job
    narration = await read_sse(client, created["job_id"])
    assert any(
        e["action"] == "warning" and "Detected platform" in e["message"] for e in narration.events
    )


async def test_readings_are_kept_apart_and_leave_nothing_running(
    client: TestClient,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
    settings: Settings,
) -> None:
    found = await dry_run(client, build_dir("sandbox-probe"))
    [desc] = [line for line in found["srcinfo"].splitlines() if "pkgdesc" in line]
    assert "net=offline" in desc and "root=read-only" in desc, desc
    assert "upload=read-only" in desc, desc
    assert "CapEff:0000000000000000" in desc, desc
    uid = int(desc.rsplit("uid=", 1)[1])
    assert uid >= 20000, desc  # a uid of its own, not the builder's nor root
    again = await dry_run(client, build_dir("sandbox-probe"))
    assert again == found  # the same upload: the remembered answer
    wait_until_clean(docker_client, settings)
    assert others_than_readers(docker_client, settings) == []


async def test_a_daemon_forked_by_the_top_level_is_killed(
    client: TestClient, tmp_path: Path, docker_client: docker.DockerClient, settings: Settings
) -> None:
    src = pkgbuild(tmp_path, "forker", "(setsid sleep 600 >/dev/null 2>&1 &)\nsleep 600 &")
    began = time.monotonic()
    await dry_run(client, src)
    # Answered when makepkg is done, not when the daemons are.
    assert time.monotonic() - began < 60
    wait_until_clean(docker_client, settings)
    before = {r.id for r in readers(docker_client, settings)}
    # Its reader was made clean, not replaced, and readings go on.
    await dry_run(client, pkgbuild(tmp_path, "after", ""))
    assert before <= {r.id for r in readers(docker_client, settings)}


async def test_a_top_level_that_fills_tmp_and_shm_leaves_them_empty(
    client: TestClient, tmp_path: Path, docker_client: docker.DockerClient, settings: Settings
) -> None:
    top_level = (
        "head -c 64M /dev/zero > /tmp/fill 2>/dev/null\n"
        "mkdir -p /dev/shm/d && head -c 1M /dev/zero > /dev/shm/d/fill; true"
    )
    await dry_run(client, pkgbuild(tmp_path, "filler", top_level))
    wait_until_clean(docker_client, settings)
    for reader in readers(docker_client, settings):
        assert reader.exec_run(["ls", "-A", "/tmp", "/dev/shm"]).output.split() == [
            b"/dev/shm:",
            b"/tmp:",
        ]
    await dry_run(client, pkgbuild(tmp_path, "after", ""))


async def test_megabytes_printed_at_the_top_level_cost_little(
    client: TestClient, tmp_path: Path
) -> None:
    src = pkgbuild(tmp_path, "chatty", "yes 'Detected platform: linux' | head -c 8M")
    found = await dry_run(client, src)
    assert found["pkgnames"] == ["chatty"]
    [said] = [w for w in found["warnings"] if "printed this" in w]
    assert len(said) < 4096


async def test_a_reading_that_never_ends_is_stopped_and_its_reader_replaced(
    settings: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    quick = settings.model_copy(
        update={"inspect_timeout_s": 2.0, "inspect_wall_timeout_s": 20.0, "readers": 1}
    )
    async with serve(quick) as client:
        await dry_run(client, pkgbuild(tmp_path, "first", ""))
        [first] = readers(docker_client, quick, quick.image_cpu)
        body = await dry_run(client, pkgbuild(tmp_path, "spin", "while :; do :; done"), 422)
        assert "more than 2 s of CPU time" in body["message"], body
        body = await dry_run(client, pkgbuild(tmp_path, "wait", "sleep 300"), 422)
        assert "more than 20 s to read the PKGBUILD" in body["message"], body
        # Waiting costs no CPU time: slow is not refused.
        await dry_run(client, pkgbuild(tmp_path, "slow", "sleep 3"))
        assert first.id not in [r.id for r in readers(docker_client, quick, quick.image_cpu)]
    assert readers(docker_client, quick) == []


async def test_a_burst_of_distinct_pkgbuilds_is_answered_and_none_refused(
    client: TestClient, tmp_path: Path, settings: Settings
) -> None:
    folders = [pkgbuild(tmp_path, f"burst{i}", f"_n={i}") for i in range(16)]

    async def one(src: Path) -> dict[str, Any]:
        return await submit(client, src)

    created = await asyncio.gather(*(one(src) for src in folders))
    assert sorted(c["pkgname"] for c in created) == sorted(f"burst{i}" for i in range(16))
    for job in created:
        async with client.post(f"/v1/jobs/{job['job_id']}/cancel") as response:
            assert response.status in (200, 409), await response.text()


async def test_a_stopped_service_leaves_none_of_its_readers(
    settings: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    async with serve(settings) as client:
        await asyncio.gather(*(dry_run(client, pkgbuild(tmp_path, f"p{i}", "")) for i in range(3)))
        assert readers(docker_client, settings)
    assert readers(docker_client, settings) == []


# A daemon that survives its reading's end: it stops and kills the reading's own shell (so the
# reading's `kill -KILL -1` never runs), empties /tmp, then lives on in a thread whose process
# leader has exited: /proc/<pid>/status says "Z" for such a process, though it runs.
_SURVIVOR = r"""
(
  exec </dev/null >/dev/null 2>&1
  setsid perl -Mthreads -e '
    my ($k, $m) = ("kill -KI" . "LL -1", "make" . "pkg");
    select(undef, undef, undef, 0.5);
    my @v;
    for my $p (glob "/proc/[0-9]*") {
      open(my $f, "<", "$p/cmdline") or next; my $c = do { local $/; <$f> }; $c =~ tr/\0/ /;
      push @v, ($p =~ m{(\d+)$}) if index($c, $k) >= 0 || index($c, $m) >= 0;
    }
    kill "STOP", @v;
    system("rm -rf /tmp/* /tmp/.[!.]* 2>/dev/null");
    threads->create(sub {
      sleep 2;
      mkdir "/tmp/r$_", 0700 for 1..3000;  # the next readings cannot make their folder
      sleep 600;
    })->detach;
    kill 9, @v;
    syscall(60, 0);  # exit(2): this thread only
  ' &
)
"""


async def test_a_survivor_whose_leader_looks_like_a_zombie_is_killed_before_the_next_reading(
    settings: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    one = settings.model_copy(update={"readers": 1})
    async with serve(one) as client:
        await dry_run(client, pkgbuild(tmp_path, "survivor", _SURVIVOR), 422)
        await asyncio.sleep(3)  # its thread has done its harm, if it still runs
        wait_until_clean(docker_client, one)
        found = await dry_run(client, pkgbuild(tmp_path, "victim", ""))
        assert found["pkgnames"] == ["victim"]


async def test_what_a_top_level_leaves_in_shared_memory_is_gone_before_the_next_reading(
    tmp_path: Path, settings: Settings
) -> None:
    one = settings.model_copy(update={"readers": 1})
    leave = (
        "echo secret > /dev/shm/left; chmod 666 /dev/shm/left; mkfifo /dev/shm/fifo;"
        " echo x > /dev/mqueue/q 2>/dev/null;"
        " perl -e 'shmget(0x5eed, 4096, 01666) // die' 2>/dev/null; true"
    )
    look = (
        '_seen="$(ls -A /dev/shm /dev/mqueue 2>&1 | tr "\\n" " ")'
        ' $(tail -n +2 /proc/sysvipc/shm | wc -l)"\npkgdesc="seen: $_seen"'
    )
    async with serve(one) as client:
        await dry_run(client, pkgbuild(tmp_path, "leaver", leave))
        found = await dry_run(client, pkgbuild(tmp_path, "looker", look))
        [desc] = [line for line in found["srcinfo"].splitlines() if "pkgdesc" in line]
        assert "left" not in desc and "fifo" not in desc and " q " not in desc, desc
        assert desc.rstrip().endswith(" 0"), desc  # no SysV segment left either


async def test_a_reader_killed_under_a_reading_is_no_refusal_of_the_pkgbuild(
    settings: Settings, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    one = settings.model_copy(update={"readers": 1})
    async with serve(one) as client:
        await dry_run(client, pkgbuild(tmp_path, "first", ""))
        [reader] = readers(docker_client, one, one.image_cpu)
        src = pkgbuild(tmp_path, "slow", "sleep 4")
        answer = asyncio.ensure_future(
            client.post(
                "/v1/builds",
                params={"dry_run": "true"},
                data=tar_dir(src),
                headers={"Content-Type": "application/gzip"},
            )
        )
        await waiting.until(  # makepkg is reading it
            lambda: reader.top(ps_args="-o pid,args")["Processes"] or [],
            lambda rows: any(row[-1] == "sleep 4" for row in rows),
            timeout_s=30,
            interval_s=0.1,
            what="the reading under way",
        )
        reader.kill()  # the OOM killer, an operator, a daemon restart: not makepkg's doing
        response = await answer
        body = await response.json()
        assert response.status != 422, body
        # Nor is it remembered as the PKGBUILD's answer.
        assert (await dry_run(client, src))["pkgnames"] == ["slow"]
