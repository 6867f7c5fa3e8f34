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
# kill (backend/_swarmstop.py): a task whose wrapper was told to stop ends within a few tenths
# of a second; its state is asked this often, for at most the grace plus this (then its service
# is removed all the same). A removed service's task is said stopped once its node has stopped
# the container: asked this often, for at most the stop grace plus this.
SWARM_STOP_POLL_S = 0.02
SWARM_STOP_TIMEOUT_S = 5.0
SWARM_TASK_ENDED_POLL_S = 0.05
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
# A swarm task's pushed output (its wrapper's curl, per chunk and for the final report): a
# broken or refused send is tried this many times in all, this many whole seconds apart (the
# command waits meanwhile: a cut of up to about half a minute loses no time on the service
# logs), each try connecting within and taking at most so long (an answer waits while the
# reader is behind); then the pusher stops pushing and the service logs complete the output.
PUSH_ATTEMPTS = 30
PUSH_RETRY_S = 1
PUSH_CONNECT_TIMEOUT_S = 5
PUSH_REQUEST_TIMEOUT_S = 120
# Once the command has ended, how long its pushers may take to finish (a process it left behind
# may hold the pipes open for ever): past it they are stopped and the service logs complete.
PUSH_DRAIN_S = 60
# The longest a chunk's body (1 MiB at most) may take to arrive at the listener.
PUSH_BODY_TIMEOUT_S = 60.0
# A task's wrapper waiting for kill's stop on the listener asks again this long after its
# request failed (a service restarting); told to stop, it counts the grace in ticks of this,
# looking whether the command has exited each time.
HANDOFF_STOP_RETRY_S = 1
HANDOFF_STOP_TICK_S = 0.1

# (end of engines)

# --- narration, storage and the API ---

# How long the store's connection waits for SQLite's write lock before failing: another
# process (a second service refused by the data-dir lock, an operator's sqlite3) holds it briefly.
STORE_BUSY_TIMEOUT_MS = 5_000
# Between the checkpointer's rounds of copying the write-ahead log back (storage/checkpoint.py):
# one round a second keeps the log small without a sync in every commit.
CHECKPOINT_INTERVAL_S = 1.0
# A bus subscriber whose cursor is behind what was published yet found nothing to read: should
# not happen; it looks again after this instead of spinning.
BUS_RETRY_S = 0.05
# A `: keep-alive` comment on a stream this long after its last write, so proxies and clients
# do not take a quiet build for a dead connection.
STREAM_HEARTBEAT_S = 15.0
# How soon after a stream lost its client freed heap is handed back (malloc_trim): one trim
# covers every stream that ends within it.
STREAM_TRIM_AFTER_S = 1.0

# (end of narration, storage and the API)

# --- jobs, builds and the catalog ---

# Jobs (jobs/). A stop that cancels running builds waits this long for them to end (their
# containers removed) before the workers are cut short.
SHUTDOWN_GRACE_S = 60.0
# Leaving builds running is quick (their output streams close); a job still setting up past
# this is stopped instead, so the service exits within its 10 s.
DETACH_GRACE_S = 5.0
# How often an adopted step whose output is lost is asked whether it has exited.
ADOPTED_EXIT_POLL_S = 1.0
# The janitor tries an unremoved step again this soon, then less and less often (up to its
# sweep interval); at the stop, a daemon that is gone must not hold it for a removal per step.
JANITOR_RETRY_S = 1.0
JANITOR_CLOSE_TIMEOUT_S = 20.0

# Builds (build/). The most a line of output can wait for the one before it to be sent: a
# flood goes out in big events, a line after a quiet spell at once.
OUTPUT_PACE_S = 0.005
# How often a long reading's CPU time is looked at, once it could be over its limit.
READER_CPU_POLL_S = 0.5
# How long makepkg's answer for one PKGBUILD skeleton is reused without reading it again.
INSPECTION_REMEMBER_S = 600.0
# The engine's walk of a whole writable layer costs its daemon: the pause after one is this
# many times what it took, so it takes at most a tenth of the daemon's time.
LAYER_LOOK_PAUSE_PER_COST = 10
# At the stop, how long the cache measuring and pruning that builds left may still run.
CACHE_SETTLE_TIMEOUT_S = 30.0

# The catalog (catalog/). A model download retries a failed request after 0.2 s, 0.4 s, ...
# at most 2 s, this many times in a row without progress; it reports progress this often.
MODEL_RETRY_FIRST_WAIT_S = 0.2
MODEL_RETRY_MAX_WAIT_S = 2.0
MODEL_DOWNLOAD_ATTEMPTS = 5
MODEL_PROGRESS_INTERVAL_S = 0.5
# A model server that does not answer, or stops sending, is given up on (then retried).
MODEL_CONNECT_TIMEOUT_S = 30.0
MODEL_READ_TIMEOUT_S = 60.0
# The whole fetch of a catalog from an http(s) URL.
CATALOG_FETCH_TIMEOUT_S = 30.0


# (end of jobs, builds and the catalog)
# A gpg call (sign, verify, make the key: ed25519 takes well under a second) and a repo-add or
# repo-remove run over the repository's database (seconds for thousands of packages).
GPG_TIMEOUT_S = 60.0
REPO_TOOL_TIMEOUT_S = 300.0
# bsdtar reading a package's .PKGINFO for POST /v1/jobs/{id}/reproduce, in the request: makepkg
# writes it among the first entries (milliseconds), so a package it takes longer in is hostile.
PKGINFO_READ_TIMEOUT_S = 30.0

# --- the CLI ---

# A whole call to the API, a package's download included (a stream has none): an upload is
# answered only once the service has unpacked it and makepkg has read its PKGBUILD.
CLI_CALL_TIMEOUT_S = 300.0
# A stream has no overall limit (a build may run for hours): only connecting, and a silence
# longer than the service's heartbeat (15 s) allows many times over, count as a drop.
CLI_STREAM_CONNECT_TIMEOUT_S = 30.0
CLI_STREAM_READ_TIMEOUT_S = 90.0
# The n-th try in a row to resume a dropped stream waits base * 2**n (0.5 s, 1 s, 2 s...) and at
# most 5 s; about three minutes of tries: a build outlives a restart of the service (an upgrade
# rebuilds and recreates it), so a follow waits for it to be back.
CLI_RESUME_BASE_DELAY_S = 0.25
CLI_RESUME_MAX_DELAY_S = 5.0
CLI_RESUME_ATTEMPTS = 40
# ``orchestrator serve``'s wait for open requests on shutdown: streams end and builds are left
# at once, so only a drain (``on_stop=drain``) waits for what runs.
SERVE_SHUTDOWN_TIMEOUT_S = 5.0
SERVE_DRAIN_SHUTDOWN_TIMEOUT_S = 60.0

# (end of the CLI)
