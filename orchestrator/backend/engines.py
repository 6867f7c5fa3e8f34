"""The engines this service can run steps on, by the name the ``backend`` setting gives.

A new engine is a module with a class that implements ``Backend`` and one entry here; each
entry imports its module only when chosen, so an engine's client library is loaded only where
that engine is used.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UnknownBackend
from ..settings import Settings
from . import Backend


def _docker(settings: Settings) -> Backend:
    from .docker import DockerBackend

    return DockerBackend(settings)


def _swarm(settings: Settings) -> Backend:
    # Services on a Docker Swarm, from a manager node (docs/backends.md).
    from .swarm import SwarmBackend

    return SwarmBackend(settings)


def _fake(settings: Settings) -> Backend:
    # In-memory, for tests and demos: every build prints nothing and makes one package.
    from .fake import FakeBackend

    return FakeBackend()


ENGINES: dict[str, Callable[[Settings], Backend]] = {
    "docker": _docker,
    "swarm": _swarm,
    "fake": _fake,
}


def open_backend(settings: Settings) -> Backend:
    """The engine ``settings.backend`` names, connected (not yet pinged)."""
    try:
        make = ENGINES[settings.backend]
    except KeyError:
        raise UnknownBackend(settings.backend, tuple(ENGINES)) from None
    return make(settings)


__all__ = ["ENGINES", "open_backend"]
