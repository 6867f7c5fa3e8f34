"""Every fixed wait, timeout, poll interval and retry count of the service and the CLI, in one
module, with its unit in its name.

What an operator may want to change is in ``Settings`` (``ORCHESTRATOR_*``); what is here is
the service's own pacing, chosen against the daemon's and the client's behaviour and explained
beside each value. The module imports nothing, so the CLI can read it without loading the
service's dependencies.
"""

from __future__ import annotations

# --- engines (backend/) ---

# (end of engines)

# --- narration, storage and the API ---

# (end of narration, storage and the API)

# --- jobs, builds and the catalog ---

# (end of jobs, builds and the catalog)

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
