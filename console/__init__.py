"""The operator's side of the cluster console: everything that runs in the terminal (see README.md).

The Python API: `connect()` opens the cluster as a `concurrent.futures.Executor`
(console/executor.py); `RemoteError` and its kinds are what failed calls raise
when their own exception cannot be. Imported on first use, so the `console`
command starts without them.
"""

from typing import Any

__all__ = ["connect", "ClusterExecutor", "ClusterBroken", "RemoteError", "ChunkTimedOut", "WorkerDied"]


def __getattr__(name: str) -> Any:
    if name == "connect":
        from console.api import connect

        return connect
    if name in ("ClusterExecutor", "ClusterBroken"):
        from console import executor

        return getattr(executor, name)
    if name in ("RemoteError", "ChunkTimedOut", "WorkerDied"):
        from console import remote

        return getattr(remote, name)
    raise AttributeError(f"module 'console' has no attribute {name!r}")
