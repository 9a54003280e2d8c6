"""Exit codes of link's processes that another process reads (a leaf: the supervisor imports
it without loading what the worker needs)."""
from __future__ import annotations

# A worker's: the supervisor tells a boot failure (the VIP cannot be put in place on this host:
# counted towards FATAL) from a crash (respawned after a short backoff).
WORKER_OK = 0
WORKER_BOOT_FAILED = 3
