"""What a Docker step is in Docker's terms: the ``containers.create`` arguments derived from the
engine-neutral ``Step`` (init, dropped capabilities, no-new-privileges, the json-file log, a
storage quota, tmpfs and scratch volumes), and whether the storage driver takes a quota. The
pure part of the Docker engine (``docker.py`` makes the calls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import docker.errors
from docker.types import DeviceRequest, LogConfig, Mount

from . import Step

# Storage drivers that can cap a container's writable layer; overlay2 only on xfs (with pquota).
_QUOTA_DRIVERS = frozenset({"btrfs", "zfs", "devicemapper", "windowsfilter"})


def quota_capable(info: Mapping[str, Any]) -> bool:
    """Whether the daemon's storage driver may take ``storage_opt={"size": ...}``."""
    driver = str(info.get("Driver") or "")
    if driver in _QUOTA_DRIVERS:
        return True
    status = {str(k): str(v) for k, v in info.get("DriverStatus") or []}
    return driver == "overlay2" and status.get("Backing Filesystem") == "xfs"


def quota_refused(exc: docker.errors.APIError) -> bool:
    text = str(exc.explanation or exc).lower()
    return "storage-opt" in text or "storage opt" in text or "quota" in text


def create_kwargs(step: Step, *, quota: bool = False, network: str = "bridge") -> dict[str, Any]:
    """The ``containers.create`` arguments for a step: the sandbox every build runs in.

    ``network`` is the Docker network a step with network gets (``build_network``); ``quota``
    says whether the storage driver takes a size for the container's writable layer."""
    kwargs: dict[str, Any] = {
        "image": step.image,
        "command": list(step.command),
        "labels": dict(step.labels),
        "user": step.user,
        "working_dir": step.workdir,
        "environment": dict(step.env),
        "network_mode": network if step.network else "none",
        # docker-init as PID 1 reaps zombies and forwards signals; a SIGKILL of the container
        # then takes every process in its PID namespace with it.
        "init": True,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "tty": False,
        # A tied step's command reads its stdin to the end, and the stdin is this process's
        # attach socket: when this process goes, so does the step, and Docker removes it.
        # (docker-py sets StdinOnce, which closes the stdin with that socket, only for a
        # container that is not "detached", a flag that changes nothing else here.)
        "detach": not step.tied,
        "stdin_open": step.tied,
        "auto_remove": step.tied,
        "log_config": LogConfig(
            type=LogConfig.types.JSON,
            config={"max-size": str(step.log_max_bytes)} if step.log_max_bytes else {},
        ),
    }
    if step.memory_bytes:
        kwargs["mem_limit"] = step.memory_bytes
    if step.cpus:
        kwargs["nano_cpus"] = int(step.cpus * 1e9)
    if step.pids_limit:
        kwargs["pids_limit"] = step.pids_limit
    if step.gpus:
        kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if quota and step.disk_bytes:
        kwargs["storage_opt"] = {"size": str(step.disk_bytes)}
    if step.read_only:
        kwargs["read_only"] = True
        kwargs["tmpfs"] = {"/tmp": f"size={step.tmp_bytes}"}
        # An anonymous volume at the workdir: writable (and reachable by put_archive) under
        # the read-only root, and removed with the container (remove(v=True)).
        kwargs["volumes"] = [step.workdir]
    if step.volumes:
        kwargs["mounts"] = [
            Mount(target, name, type="volume", no_copy=False)
            for name, target in step.volumes.items()
        ]
    return kwargs


def volume_usage_kwargs(name: str, image: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A throwaway container (~0.7 s here) that prints the bytes in the named volume, mounted
    read-only: root with only the right to read any folder, no network. The build's own ``du``
    would miss what its user cannot read, and Docker's own measure (/system/df) walks every
    container (~5 s)."""
    return {
        "image": image,
        "command": ["du", "-sxb", "/volume"],
        "user": "root",
        "cap_drop": ["ALL"],
        "cap_add": ["DAC_READ_SEARCH"],
        "security_opt": ["no-new-privileges"],
        "network_mode": "none",
        "labels": dict(labels),
        "mounts": [Mount("/volume", name, type="volume", read_only=True)],
    }
