"""What this test session leaves on the daemon: its containers, and every volume they used.

A session's own are known by labels only it uses (never by image or age: other suites, other
engineers' runs, share this daemon): the instance ids it gives its services (all starting with
its prefix), the label it puts on the containers it runs itself, the compose projects it names.
A volume is the session's when one of its containers mounted it: the daemon's events say so as
it happens (an anonymous volume has no label, and its container may be gone by the end).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

import docker

from orchestrator.build.runner import INSTANCE_LABEL

# On the containers the suite runs itself (the service's image): not INSTANCE_LABEL, which the
# service would take for one of its own and reap at its start.
SESSION_LABEL = "orchestrator.test-session"
COMPOSE_PROJECT = "com.docker.compose.project"


class Leftovers:
    """Watches the daemon's events from the start of the session; ``find`` says what is left."""

    def __init__(self, client: docker.DockerClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._containers: set[str] = set()
        self.volumes: set[str] = set()  # mounted by one of the session's containers
        self._lock = threading.Lock()
        filters = {"type": ["container", "volume"], "event": ["create", "mount"]}
        self._events = client.events(decode=True, filters=filters)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def ours(self, labels: Mapping[str, str]) -> bool:
        return (
            labels.get(INSTANCE_LABEL, "").startswith(self.prefix)
            or labels.get(SESSION_LABEL) == self.prefix
            or labels.get(COMPOSE_PROJECT, "").startswith(self.prefix)
        )

    def _watch(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when ``stop`` closes it
            for event in self._events:
                self._seen(event)

    def _seen(self, event: Mapping[str, Any]) -> None:
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        with self._lock:
            if event.get("Type") == "container" and self.ours(attributes):
                self._containers.add(str(actor.get("ID")))
            elif event.get("Type") == "volume" and attributes.get("container") in self._containers:
                self.volumes.add(str(actor.get("ID")))

    def stop(self) -> None:
        self._events.close()
        self._thread.join(10)

    def containers(self) -> list[Any]:
        """The session's containers that exist now."""
        found: dict[str, Any] = {}
        for label in (INSTANCE_LABEL, SESSION_LABEL, COMPOSE_PROJECT):
            for container in self.client.containers.list(
                ignore_removed=True, all=True, filters={"label": label}
            ):
                if self.ours(container.labels):
                    found[container.id] = container
        return list(found.values())

    def named_volumes(self) -> list[str]:
        """Volumes that carry one of the session's instance ids (the services' caches)."""
        found = self.client.volumes.list(filters={"label": INSTANCE_LABEL})
        return [str(v.name) for v in found if self.ours(v.attrs.get("Labels") or {})]

    def mounted_volumes(self) -> list[str]:
        """Volumes one of the session's containers used that exist now."""
        with self._lock:
            used = set(self.volumes)
        existing = {str(v.name) for v in self.client.volumes.list()}
        return sorted(used & existing)
