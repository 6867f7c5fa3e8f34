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

# (end of the CLI)
