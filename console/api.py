"""The Python API's front door: `connect()`.

It checks its arguments and reads the inventory, starts the local node (served
in the caller's process, as `console run` serves it: console/localnode.py),
and only then imports the executor's machinery (the cluster, the scheduler;
console/executor.py), so the node's forker and workers come up meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

from console.inventory import default_inventory, load_inventory
from console.jobspec import requirement_problem

if TYPE_CHECKING:
    from console.executor import ClusterExecutor

__all__ = ["connect"]


def connect(inventory: Union[str, Path, None] = None, *, engine: Optional[str] = None, progress: bool = False,
            retries: int = 2, chunk_timeout: Optional[float] = None, result_types: Sequence[str] = (),
            max_reply_mb: float = 256.0, requires: Sequence[str] = ()) -> ClusterExecutor:
    """Open the cluster of an inventory as a `concurrent.futures.Executor`.

    inventory: an inventory.toml (default: ./inventory.toml, else this machine as the one node).
    engine: "dask://host:8786" to run on an existing Dask cluster instead of the inventory's nodes.
    progress: show the live progress view of `console run` on the terminal (stderr), if it is one.
    retries: further attempts for a chunk that raises, times out or loses its worker (as in a job file).
    chunk_timeout: seconds a chunk may run before its worker is killed (default: no limit).
    result_types: "module:Type" of values beyond plain data that calls may return (e.g. "fractions:Fraction").
    max_reply_mb: the largest reply a node may send.
    requires: requirements the calls import ("numpy>=1.26"), shipped to each node as wheels for its platform,
        as [job] requires in a job file; a node no wheels fit takes no calls.

    Example:
        with connect() as cluster:
            total = sum(cluster.map(count_primes, range(0, 2_000_000, 10_000)))
            future = cluster.submit(factorize, 999_999_999_999)

    Functions of installed modules go by name; of your own modules, with the module's source; of __main__, a
    notebook or a lambda, by value (cloudpickle: only nodes with this Python's minor version can run them).
    Nodes come up in the background; calls wait in the queue meanwhile. A bad inventory raises the console's
    InventoryError with its sentence.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be 0 or more, not {retries!r}")
    if chunk_timeout is not None and not chunk_timeout > 0:
        raise ValueError(f"chunk_timeout must be more than 0 seconds (or None for no limit), not {chunk_timeout!r}")
    if not max_reply_mb > 0:
        raise ValueError(f"max_reply_mb must be more than 0, not {max_reply_mb!r}")
    for ref in result_types:
        module, sep, name = str(ref).partition(":")
        if not (sep and module and name):
            raise ValueError(f'result_types entries look like "module:Type" (e.g. "fractions:Fraction"), not {ref!r}')
    for line in requires:
        problem = requirement_problem(str(line))
        if problem:
            raise ValueError(f"requires: {problem}")
    nodes = load_inventory(Path(inventory) if inventory is not None else default_inventory())
    from console import localnode

    served = localnode.start(nodes, engine)
    try:
        from console.executor import open_executor

        return open_executor(nodes, engine, served, retries=retries,
                             chunk_timeout=chunk_timeout if chunk_timeout is not None else 7 * 24 * 3600.0,
                             result_types=result_types, max_reply_mb=max_reply_mb, progress=progress,
                             requires=requires)
    except BaseException:
        served.close()  # the nodes no session took; those it took went with the cluster
        raise
