"""Every fixed wait, timeout, poll interval and retry count of the service and the CLI, in one
module, with its unit in its name.

What an operator may want to change is in ``Settings`` (``ORCHESTRATOR_*``); what is here is
the service's own pacing, chosen against the daemon's and the client's behaviour and explained
beside each value. The module imports nothing, so the CLI can read it without loading the
service's dependencies.
"""

from __future__ import annotations

# --- engines (backend/) ---

# A docker-py call that failed before the daemon could act on it (or, when it is safe to repeat,
# with a 5xx) is tried again: this many tries in all, waiting from the first pause doubling up
# to the longest between them.
DAEMON_ATTEMPTS = 4
DAEMON_RETRY_FIRST_S = 0.1
DAEMON_RETRY_MAX_S = 2.0
# A SIGKILLed container is seen stopped within this (the daemon's own wait, in whole seconds).
CONTAINER_STOP_TIMEOUT_S = 60
# A removal under way (409) is waited out, asking again this often, for at most this long.
CONTAINER_REMOVAL_POLL_S = 0.05
CONTAINER_REMOVAL_TIMEOUT_S = 30.0
# How long a container killed under an exec'd command may take to say it is not running
# (the daemon's wait, in whole seconds).
EXEC_ENDING_S = 2
# A reattached Docker log whose follow read ended early: how often the container is asked
# whether it has exited (the final read waits for that).
ADOPT_EXIT_POLL_S = 0.2
# An output stream's reader thread waiting for room (the pile is full) looks this often
# whether the stream was closed meanwhile.
OUTPUT_ROOM_POLL_S = 1.0
# How long closing an output stream waits for its reading thread or task to end.
OUTPUT_CLOSE_TIMEOUT_S = 5.0
# Swarm's service logs: a live read that ended is opened again after this; it waits for the
# task to run, looking a fifth of it at a time.
SERVICE_LOGS_RETRY_S = 0.5
# A live read that got nothing for this long is opened again (under load one opened as the
# task starts was seen to deliver nothing); the pause doubles while it stays quiet, up to the
# longest, and is looked at this often.
SERVICE_LOGS_QUIET_S = 5.0
SERVICE_LOGS_MAX_QUIET_S = 60.0
SERVICE_LOGS_CHECK_S = 1.0
# A swarm step's tasks are polled this often until it has ended; its node's health this often.
SWARM_POLL_S = 0.25
SWARM_NODE_CHECK_S = 1.0
# A removed service's task record goes once its node has stopped the container: asked this
# often, for at most the stop grace plus this.
SWARM_TASK_GONE_POLL_S = 0.1
SWARM_GONE_TIMEOUT_S = 60.0
# The longest a task's upload of its packages to the handoff listener may take.
HANDOFF_BODY_TIMEOUT_S = 600.0
# A swarm task's own tries (curl, in its wrapper): fetching its inputs; sending a folder back
# from a spooled file, a try every few seconds for up to an hour, so that a service restarting
# meanwhile (the next one takes the step over) still gets it; and a streamed one, which cannot
# be sent again once begun, only briefly.
HANDOFF_FETCH_ATTEMPTS = 6
HANDOFF_SEND_ATTEMPTS = 1801
HANDOFF_SEND_RETRY_S = 2
HANDOFF_SEND_MAX_S = 3600
HANDOFF_STREAM_SEND_ATTEMPTS = 4

# (end of engines)

# --- narration, storage and the API ---

# (end of narration, storage and the API)

# --- jobs, builds and the catalog ---

# (end of jobs, builds and the catalog)

# --- the CLI ---

# (end of the CLI)
