"""What a swarm step is in Swarm's terms, and how to read its tasks and nodes: the pure part of
the swarm engine (``swarm.py`` makes the calls)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from docker.types import (
    ConfigReference,
    ContainerSpec,
    DriverConfig,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from ..settings import Settings
from ..storage.archive import spooled
from . import Step
from ._handoff import wrapper_command

SEALED_NETWORK = "orchestrator-sealed"  # an internal overlay: Swarm has no "none" network
INPUTS_FILE = "/run/orchestrator-inputs.tar"


def service_kwargs(
    handle: str,
    step: Step,
    image_id: str,
    env: Mapping[str, str],
    config_id: str | None,
    gpu_nodes: list[dict[str, Any]],
    settings: Settings,
) -> dict[str, Any]:
    """The ``create_service`` arguments: the sandbox every build runs in, in Swarm's terms."""
    resources = Resources(
        cpu_limit=int(step.cpus * 1e9) if step.cpus else None,
        mem_limit=step.memory_bytes,
        cpu_reservation=int(step.cpus * 1e9) if step.cpus else None,
        mem_reservation=step.memory_bytes,
        generic_resources=gpu_request(gpu_nodes) if step.gpus else None,
    )
    if step.pids_limit:  # API 1.41; docker-py has no argument for it
        resources.setdefault("Limits", {})["Pids"] = step.pids_limit
    constraints = []
    if step.gpus and not gpu_request(gpu_nodes):
        constraints.append(f"node.labels.{settings.swarm_gpu_label}==true")
    attempts = settings.swarm_restart_attempts
    restart = RestartPolicy(
        condition="on-failure" if attempts else "none", max_attempts=attempts or 0
    )
    log = DriverConfig(
        "json-file", {"max-size": str(step.log_max_bytes)} if step.log_max_bytes else {}
    )
    template = TaskTemplate(
        container_spec=_container_spec(handle, step, image_id, env, config_id, settings),
        resources=resources,
        restart_policy=restart,
        placement=Placement(constraints=constraints or None),
        log_driver=log,
    )
    return {
        "task_template": template,
        "name": handle,
        "labels": dict(step.labels),
        "mode": ServiceMode("replicated", replicas=1),
        "networks": None if step.network else [SEALED_NETWORK],
    }


def _container_spec(
    handle: str,
    step: Step,
    image_id: str,
    env: Mapping[str, str],
    config_id: str | None,
    settings: Settings,
) -> ContainerSpec:
    mounts = [Mount("/tmp", None, type="tmpfs", tmpfs_size=step.tmp_bytes, tmpfs_mode=0o1777)]
    configs = []
    if config_id:
        configs.append(ConfigReference(config_id, f"{handle}-inputs", filename=INPUTS_FILE))
    return ContainerSpec(
        # By its id: a task never asks a registry, and every node must hold the same image
        # (docker save | docker load keeps the id).
        image=image_id,
        command=wrapper_command(step.command),
        env={**step.env, **env},
        # Under a read-only root the inputs go to a folder in the in-memory /tmp: a tmpfs
        # mount elsewhere would be root's (Swarm's tmpfs options have a mode that 20.10
        # ignores, and no owner).
        workdir="/tmp" if step.read_only else step.workdir,
        user=step.user,
        labels=dict(step.labels),  # on the task's container too: found by label anywhere
        mounts=mounts,
        configs=configs or None,
        read_only=step.read_only,
        init=True,
        cap_drop=["ALL"],
        stop_grace_period=int(settings.kill_grace_s * 1e9),
    )


def has_gpu(node: Mapping[str, Any], gpu_label: str) -> bool:
    """Labelled as having a GPU (``swarm_gpu_label``), or advertising one as a resource."""
    labels = (node.get("Spec") or {}).get("Labels") or {}
    return labels.get(gpu_label) == "true" or bool(gpu_resources(node))


def node_trouble(node: Mapping[str, Any] | None, node_id: str) -> str | None:
    """Why the node running a build (None: it left the swarm) can no longer run it, if so."""
    if node is None:
        return f"the node running the build ({node_id[:12]}) left the swarm"
    name = (node.get("Description") or {}).get("Hostname") or node_id[:12]
    if (node.get("Spec") or {}).get("Availability") == "drain":
        return f"the node running the build ({name}) was drained; the build was stopped"
    if node_down(node):
        return (
            f"the node running the build ({name}) went down; its service was removed (what "
            "still runs there is stopped once the node is back)"
        )
    return None


def node_down(node: Mapping[str, Any] | None) -> bool:
    """A node that is down (None: it left) reports nothing to the manager until it is back. A
    drained one is not: its agent still stops its tasks and says so."""
    return node is None or (node.get("Status") or {}).get("State") == "down"


def gateway(network: Mapping[str, Any]) -> str:
    """The default bridge's gateway: this host as a task without a network of its own sees it
    (and reachable from nowhere else)."""
    for config in (network.get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
    return "172.17.0.1"


def usable(node: Mapping[str, Any]) -> bool:
    spec, status = node.get("Spec") or {}, node.get("Status") or {}
    return spec.get("Availability") == "active" and status.get("State") == "ready"


def gpu_resources(node: Mapping[str, Any]) -> list[str]:
    described = (node.get("Description") or {}).get("Resources") or {}
    kinds = []
    for resource in described.get("GenericResources") or []:
        for spec in resource.values():
            kind = str(spec.get("Kind") or "")
            if "gpu" in kind.lower():
                kinds.append(kind)
    return kinds


def gpu_request(gpu_nodes: list[dict[str, Any]]) -> dict[str, int | str] | None:
    kinds = sorted({k for n in gpu_nodes for k in gpu_resources(n)})
    return {kinds[0]: 1} if kinds else None


def followed(tasks: list[dict[str, Any]], attempts: int) -> dict[str, Any] | None:
    """The task to follow: the first, or the one Swarm made to run it again after it failed by
    itself. A task Swarm moves elsewhere (its node drained) is not followed: the build's output
    so far would be told twice."""
    ordered = sorted(tasks, key=lambda t: str(t.get("CreatedAt") or ""))
    index = 0
    while index + 1 < len(ordered) and index < attempts and failed(ordered[index]):
        index += 1
    return ordered[index] if ordered else None


def task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State") or "")


def failed(task: Mapping[str, Any]) -> bool:
    """Ended by its own command with a non-zero code (what a restart policy retries)."""
    return task_state(task) == "failed" and bool(exit_code(task))


def exit_code(task: Mapping[str, Any]) -> int | None:
    status = task.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    if not container.get("ContainerID") or "ExitCode" not in container:
        return None
    if status.get("State") not in ("complete", "failed"):
        return None
    return int(container["ExitCode"])


def spooled_copy(inputs: IO[bytes]) -> IO[bytes]:
    # Ours to serve later: the caller closes its own as soon as setup returns.
    out = spooled()
    inputs.seek(0)
    while block := inputs.read(1 << 20):
        out.write(block)
    out.seek(0)
    return out


def no_image(image: str) -> str:
    hint = " --cuda" if "cuda" in image else ""
    return (
        f"build image {image!r} is not on this swarm manager (images are never pulled; make "
        f"it with 'images/bootstrap{hint}' and load it on every node with docker save/load)"
    )
