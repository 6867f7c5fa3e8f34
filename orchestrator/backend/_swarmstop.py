"""How the swarm engine's ``kill`` stops a step's task, and knows every process of it is dead.

Where the time went when ``kill`` was ``service rm`` alone (one-node swarm, 20.10, stop grace
0; from ``docker events`` and the manager's task record, medians of three):

- the request to remove the service returns at once (~5 ms);
- the node's agent sends SIGTERM only ~1.14 s later: removing the service cancels the agent's
  wait on the running container, and swarmkit's task manager takes a cancelled wait for an error
  to retry after a fixed second (``agent/task.go``: ``ErrTaskRetry`` → ``time.AfterFunc(time.
  Second, ...)``); only that retry stops the container. Any change of a running task (a scale to
  0, an update) goes the same way, so no manager call avoids it;
- the container dies ~0.1 s after SIGTERM; the node reports the task ``shutdown`` ~0.2 s later;
  the manager drops the task record ~0.25 s after that (the task reaper's batches), and the
  agent removes the stopped container ~0.1 s after that: ~1.75 s from the request.

So a task whose wrapper can reach the handoff listener is stopped by its wrapper instead
(``Handoff.stop``): the container then ends by itself, which the agent reports at once (~0.1 s),
and the service is removed only after that, which the agent no longer waits on. Without a
listening wrapper (a sealed step, one still fetching its inputs, one whose wrapper cannot be
reached) it is ``service rm`` as before, the slow way.

Either way ``kill`` returns once the node has reported every task ended (``complete``,
``failed``, ``shutdown`` or ``rejected``, each said only once the container has stopped: every
process in it is dead) or the manager has dropped it, and the service is removed. A task whose
node is down (or has left) is not waited for: the manager keeps calling it running until the
node is back, and the node then stops what its removed service still ran. The agent
removes the stopped container itself shortly after (~0.35 s), which no manager call shows.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import docker.errors

from ..errors import BackendError
from ..timeouts import (
    SWARM_GONE_TIMEOUT_S,
    SWARM_NODE_CHECK_S,
    SWARM_STOP_POLL_S,
    SWARM_STOP_TIMEOUT_S,
    SWARM_TASK_ENDED_POLL_S,
)
from ._swarmspec import node_down

# What a node reports of a task only once its container has stopped, or never started.
_STOPPED = frozenset({"complete", "failed", "shutdown", "rejected"})


def stop_and_remove(api: Any, handle: str, grace_s: float, asked: bool) -> None:
    """Blocking. ``asked``: the step's wrapper was told to stop (``Handoff.stop``) and listens:
    its task is waited for before the service is removed, for at most the grace and a margin
    (then the service is removed all the same)."""
    tasks = _tasks(api, handle)
    if asked and tasks:
        deadline = time.monotonic() + grace_s + SWARM_STOP_TIMEOUT_S
        _until_stopped(api, tasks, deadline, SWARM_STOP_POLL_S)
        tasks |= _tasks(api, handle)  # one its restart policy made meanwhile
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_service(handle)
    deadline = time.monotonic() + grace_s + SWARM_GONE_TIMEOUT_S
    if not _until_stopped(api, tasks, deadline, SWARM_TASK_ENDED_POLL_S):
        raise BackendError(f"the task of {handle} was not stopped within the deadline")


def _tasks(api: Any, handle: str) -> set[str]:
    try:
        return {str(t["ID"]) for t in api.tasks(filters={"service": handle})}
    except docker.errors.APIError:
        return set()  # a missing service is an error for this filter


def _until_stopped(api: Any, tasks: set[str], deadline: float, poll_s: float) -> bool:
    """Whether every task is stopped (or dropped, or on a node that is gone) by ``deadline``."""
    for task in tasks:
        checked = 0.0
        while True:
            try:
                found = api.inspect_task(task) or {}
            except docker.errors.NotFound:
                break
            if str((found.get("Status") or {}).get("State")) in _STOPPED:
                break
            if time.monotonic() - checked >= SWARM_NODE_CHECK_S:
                checked = time.monotonic()
                if _unreachable(api, str(found.get("NodeID") or "")):
                    break
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
    return True


def _unreachable(api: Any, node_id: str) -> bool:
    if not node_id:
        return False
    try:
        node = api.inspect_node(node_id)
    except docker.errors.NotFound:
        node = None
    return node_down(node)
