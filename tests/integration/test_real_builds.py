"""What users really build, from third-party code over https, with the projects' own tests.

GNU hello from Debian's orig tarball (`make check`), cJSON from Debian's orig tarball (CMake,
`ctest`), a published crate with its dependencies from the crate registry, a Rust program that
links the system's OpenSSL, CUDA code through nvcc in the cuda image, and cancel while rustc
compiles. Each downloads for real: the build images trust the host's extra CA certificates.
"""

from __future__ import annotations

import asyncio
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from orchestrator import Action, BuildRequest, CancelToken, Engine, JobStatus, Settings

from .. import waiting
from ..conftest import SESSION_PREFIX, Recorder, compiling
from ..leftovers import SESSION_LABEL
from .conftest import job_containers, job_id

pytestmark = pytest.mark.docker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return compiling(settings)  # compile-bound: the service's default CPUs, not the suite's one


def members(package: Path) -> list[str]:
    with tarfile.open(package) as tar:
        return tar.getnames()


def run_in_image(
    client: docker.DockerClient, image: str, package: Path, member: str, script: str
) -> str:
    """Unpack ``member`` of ``package`` in a container of ``image`` (which has the libraries
    it was linked with) and run ``script`` there with ``$BIN`` naming it."""
    unpack = f"bsdtar -xf /pkg/{package.name} -C /tmp {member} && BIN=/tmp/{member} && "
    out = client.containers.run(
        image,
        ["bash", "-c", unpack + script],
        volumes={str(package.parent): {"bind": "/pkg", "mode": "ro"}},
        network_mode="none",
        labels={SESSION_LABEL: SESSION_PREFIX},  # the session's own, if it outlives the test
        remove=True,
    )
    return bytes(out).decode()


async def build(
    engine: Engine, recorder: Recorder, src: Path, variant: str = "cpu"
) -> tuple[str, JobStatus, list[Path]]:
    job = job_id()
    result = await engine.build(BuildRequest(job, src, variant), recorder, CancelToken())
    if result.status is not JobStatus.SUCCEEDED:
        print("\n".join(recorder.lines()[-60:]))
    return job, result.status, list(result.artifacts)


async def test_gnu_hello_from_a_debian_orig_tarball_passes_its_make_check(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    _, status, [package] = await build(engine, recorder, build_dir("gnu-hello"))
    assert status is JobStatus.SUCCEEDED
    lines = recorder.lines()
    assert "==> Starting check()..." in lines
    assert any(line.startswith("# PASS:") and line.split()[-1] != "0" for line in lines)
    assert any(line.strip() == "# FAIL:  0" for line in lines)
    assert "usr/bin/hello" in members(package)


async def test_cjson_a_cmake_project_passes_its_ctest_suite(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path]
) -> None:
    _, status, [package] = await build(engine, recorder, build_dir("cjson"))
    assert status is JobStatus.SUCCEEDED
    lines = recorder.lines()
    summary = [line for line in lines if "tests passed" in line]
    assert summary and summary[-1].startswith("100% tests passed"), summary
    assert any(name.startswith("usr/lib/libcjson.so") for name in members(package))


async def test_a_published_crate_builds_with_its_dependencies_from_the_registry(
    engine: Engine, recorder: Recorder, build_dir: Callable[..., Path], tmp_path: Path
) -> None:
    _, status, [package] = await build(engine, recorder, build_dir("hexyl"))
    assert status is JobStatus.SUCCEEDED
    lines = recorder.lines()
    downloaded = [line for line in lines if line.strip().startswith("Downloaded ")]
    compiled = [line for line in lines if line.strip().startswith("Compiling ")]
    assert len(downloaded) >= 15 and len(compiled) >= 15, (len(downloaded), len(compiled))
    with tarfile.open(package) as tar:
        tar.extract("usr/bin/hexyl", tmp_path, filter="data")
    sample = tmp_path / "sample"
    sample.write_bytes(b"orchestrator\n")
    shown = subprocess.run(
        [tmp_path / "usr/bin/hexyl", "--plain", sample], capture_output=True, text=True, check=True
    )
    assert "6f 72 63 68 65 73 74 72" in shown.stdout


async def test_a_rust_program_links_the_systems_openssl(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    settings: Settings,
    docker_client: docker.DockerClient,
) -> None:
    _, status, [package] = await build(engine, recorder, build_dir("rust-openssl"))
    assert status is JobStatus.SUCCEEDED
    assert "usr/bin/tls-version" in members(package)
    # Run where it was built (the image has the libraries it links): the system's libssl.
    script = "ldd $BIN | grep -E 'libssl|libcrypto' && $BIN"
    out = run_in_image(docker_client, settings.image_cpu, package, "usr/bin/tls-version", script)
    assert "libssl.so.3" in out and "libcrypto.so.3" in out, out
    assert "OpenSSL 3." in out
    assert "sha256=" in out


def compiling_now() -> str:
    found = subprocess.run(["pgrep", "-af", "rustc --crate-name"], capture_output=True, text=True)
    return "\n".join(line for line in found.stdout.splitlines() if "pgrep" not in line)


async def test_cancel_while_rustc_compiles_leaves_no_container_and_no_process(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    job, token = job_id(), CancelToken()
    running = asyncio.ensure_future(
        engine.build(BuildRequest(job, build_dir("hexyl")), recorder, token)
    )
    try:
        await recorder.wait_for(lambda e: "Compiling " in e.message, timeout_s=300)
        # cargo prints "Compiling" before it spawns rustc, and between crates it runs build
        # scripts: rustc comes and goes, so wait until one is seen rather than look once.
        seen, ended = await waiting.until(
            lambda: (compiling_now(), running.done()),
            lambda seen: bool(seen[0]) or seen[1],
            timeout_s=60,
            interval_s=0.1,
            what="rustc running",
        )
        assert seen and not ended, "rustc should be running now"
    finally:
        token.cancel()
        result = await asyncio.wait_for(running, 60)
    assert result.status is JobStatus.CANCELLED
    assert Action.CANCELLED in recorder.actions()
    assert job_containers(docker_client, job) == []
    assert compiling_now() == ""


@pytest.mark.cuda
async def test_nvcc_compiles_cuda_code_in_the_cuda_image(
    engine: Engine,
    recorder: Recorder,
    build_dir: Callable[..., Path],
    settings: Settings,
    docker_client: docker.DockerClient,
) -> None:
    _, status, [package] = await build(engine, recorder, build_dir("nvcc-vecadd"), "cuda")
    assert status is JobStatus.SUCCEEDED
    assert any("Cuda compilation tools, release 12" in line for line in recorder.lines())
    # The binary carries device code (a fatbin for at least one GPU architecture).
    script = "cuobjdump --list-elf $BIN && $BIN"
    out = run_in_image(docker_client, settings.image_cuda, package, "usr/bin/vecadd", script)
    assert ".sm_" in out, out
    assert "vecadd: no CUDA device" in out  # there is no GPU here; with one it adds
