"""Settings, read from the environment (prefix ``ORCHESTRATOR_``) when a ``Settings()`` is made.

Nothing reads the environment at import time: the service, the tests and the benchmarks each make
their own ``Settings`` and pass it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3
MiB = 1024**2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    # -- engine ---------------------------------------------------------------------------------
    backend: str = Field(
        default="docker",
        description="The engine builds run on: docker, swarm (services on a Docker Swarm, "
        "from a manager), or fake (in memory, for tests).",
    )
    swarm_listen: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z.:\[\]-]+:[0-9]{1,5}$",
        description="swarm: HOST:PORT where build tasks fetch their inputs and send their "
        "packages (per-step tokens, not the API token); unset = the docker0 bridge's gateway "
        "on an ephemeral port, which only tasks on this node reach.",
    )
    swarm_callback_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="swarm: how a task on any node reaches swarm_listen, e.g. "
        "http://MANAGER-IP:7836; unset = http://<the docker0 gateway>:<its port>.",
    )
    swarm_restart_attempts: int = Field(
        default=0,
        ge=0,
        le=5,
        description="swarm: how often a task that failed by itself (not drained, not "
        "cancelled) is run again; 0 = a build runs once, as on docker.",
    )
    swarm_gpu_label: str = Field(
        default="orchestrator.gpu",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="swarm: the node label (=true) that marks a node able to run cuda builds "
        "with a GPU; nodes advertising a generic resource named like *GPU* count too.",
    )
    docker_url: str | None = Field(
        default=None, description="Docker endpoint; unset means DOCKER_HOST or the local socket."
    )
    docker_timeout_s: float = Field(default=60.0, gt=0)
    instance_id: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Labels this service's containers so start-up reaps only its own orphans.",
    )
    image_cpu: str = "orchestrator/build:cpu"
    image_cuda: str = "orchestrator/build:cuda"
    image_diffoscope: str = Field(
        default="orchestrator/diffoscope:trixie",
        description="Where a reproduce job runs diffoscope on packages that differ.",
    )
    diffoscope_timeout_s: float = Field(default=600.0, gt=0)
    diffoscope_memory_bytes: int = Field(default=1 * GiB, gt=0)
    diffoscope_tmp_bytes: int = Field(
        default=512 * MiB, gt=0, description="Its in-memory /tmp, where it unpacks the packages."
    )
    gpu: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Request GPUs for cuda builds: auto = when the daemon has the nvidia runtime.",
    )
    build_network: str = Field(
        default="bridge", description="'bridge' lets makepkg fetch remote sources; 'none' seals."
    )
    build_memory_bytes: int = Field(default=4 * GiB, gt=0)
    build_cpus: float = Field(default=2.0, gt=0)
    build_pids_limit: int = Field(default=2048, gt=0)
    build_log_max_bytes: int = Field(
        default=50 * MiB, gt=0, description="json-file log cap; the live stream is not cut by it."
    )
    build_disk_bytes: int = Field(
        default=20 * GiB,
        gt=0,
        description="What a build may write to its container's filesystem: a quota where the "
        "storage driver has one, otherwise a watchdog stops the build once it is over.",
    )
    build_disk_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="The watchdog's pace (where no quota holds the disk bound): a look is a "
        "du of the places the build can write to, ~0.1 s. When only the engine's own measure "
        "is left (a walk of the whole container), it waits 10x as long as that took.",
    )
    sample_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often a running build's CPU, memory, pids, disk and network are "
        "sampled (a `sample` event on its stream, kept with the job).",
    )
    silence_s: float = Field(
        default=60.0,
        gt=0,
        description="After this long without output, the build's narration says it is alive "
        "and what it is running; again after each further such spell.",
    )
    caches: bool = Field(
        default=True,
        description="Keep a cache volume per package and variant (sources, cargo, sccache, "
        "ccache) for its later builds; a build can still opt out with cache=off.",
    )
    cache_max_bytes: int = Field(
        default=20 * GiB,
        gt=0,
        description="All build caches together; past it the least recently used idle ones "
        "are removed after a build. Each tool's own store is held to a quarter of it. On "
        "swarm also what one cache's archive may be.",
    )
    inspect_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="The CPU time makepkg may use to read a PKGBUILD (its top level runs "
        "then): CPU time, so that a busy host slows a reading without failing it.",
    )
    inspect_wall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a reading may take however little CPU it uses (a top level that "
        "waits for something); also the only bound where the CPU time is unknown (Swarm).",
    )
    readers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Warm PKGBUILD readers per build image: readings at once (Docker).",
    )
    janitor_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the service looks for its containers that no job or reading "
        "owns any more (their removal failed) and removes them.",
    )
    janitor_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="How long a container may go unowned before that sweep removes it (one "
        "may exist a moment before its owner is known).",
    )
    on_stop: Literal["leave", "cancel", "drain"] = Field(
        default="leave",
        description="What a stop (SIGTERM, SIGINT) does to running builds: leave them running "
        "for the next start to pick up (Docker; on Swarm they are stopped), cancel them "
        "(they end interrupted), or drain: wait for them to end ('serve --drain').",
    )
    kill_grace_s: float = Field(
        default=0.0, ge=0, description="SIGTERM, then SIGKILL after this long; 0 kills at once."
    )
    max_build_dir_bytes: int = Field(
        default=512 * MiB, gt=0, description="What one upload may unpack to."
    )
    max_queued_upload_bytes: int = Field(
        default=2 * GiB,
        gt=0,
        description="What all uploads of unfinished jobs may unpack to together (507 beyond).",
    )
    max_artifact_bytes: int = Field(default=4 * GiB, gt=0)

    # -- storage --------------------------------------------------------------------------------
    data_dir: Path = Path("var")
    disk_min_free_bytes: int = Field(
        default=256 * MiB,
        ge=0,
        description="Below this much free space under data_dir no new job is taken (507) and "
        "running ones are stopped, until there is this much plus the reserve again.",
    )
    disk_reserve_bytes: int = Field(
        default=32 * MiB,
        ge=0,
        description="Kept as a file under data_dir and given up when the disk fills, so the "
        "service can still record how each job ended.",
    )
    disk_poll_s: float = Field(default=1.0, gt=0, description="How often free space is read.")
    repo_key_file: Path | None = Field(
        default=None,
        description="An ASCII-armored secret key (no passphrase) to sign the package "
        "repositories with; unset = one made on first start, kept in data_dir/gnupg.",
    )
    repo_arch: str = Field(
        default="x86_64", description="The architecture the repositories hold (makepkg's CARCH)."
    )
    catalog: str | None = Field(
        default=None,
        description="Worker catalog: a folder, a JSON file or an http(s) URL; unset = shipped.",
    )
    model_url_template: str = Field(
        default="https://huggingface.co/{repo}/resolve/{revision}/{file}",
        description="How a model given as hf://REPO/FILE[@REVISION] becomes a URL.",
    )

    # -- service --------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=7835, ge=0, le=65535)
    api_token: SecretStr | None = None
    allow_unauthenticated: bool = Field(
        default=False,
        description="Listen beyond loopback without a token. Only where something else limits "
        "who reaches the port, e.g. compose publishing it on 127.0.0.1 alone.",
    )
    stream_stall_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="An SSE client that takes nothing written to it for this long is dropped "
        "(it resumes with Last-Event-ID); until then it holds about 100 KiB of the service.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Without a token, host names besides loopback ones that requests may be "
        'addressed to (a JSON list, e.g. ["builds.internal"]); with a token, any.',
    )
    max_upload_bytes: int = Field(default=256 * MiB, gt=0)
    upload_timeout_s: float = Field(
        default=300.0, gt=0, description="How long an upload's body may take to arrive (408)."
    )
    max_concurrent_builds: int = Field(default=2, ge=1)
    default_timeout_s: float = Field(default=3600.0, gt=0)
    max_timeout_s: float = Field(default=6 * 3600.0, gt=0)

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        # compose passes ${ORCHESTRATOR_API_TOKEN:-} through as "" when it is unset.
        secret = value.get_secret_value() if isinstance(value, SecretStr) else value
        if secret == "":
            return None
        if isinstance(secret, str) and not secret.strip():
            # Not "unset": whoever set it meant to protect the service.
            raise ValueError(
                "a blank token (only whitespace) protects nothing: set a real token, "
                "or leave it empty for none"
            )
        return value

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def workers_dir(self) -> Path:
        return self.data_dir / "workers"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def repo_dir(self) -> Path:
        """The pacman repositories: ``<variant>/<arch>/``."""
        return self.data_dir / "repo"

    @property
    def work_dir(self) -> Path:
        """Where uploads are unpacked while a job waits; emptied as each job ends."""
        return self.data_dir / "work"
