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

# (end of jobs, builds and the catalog)

# --- the CLI ---

# (end of the CLI)
