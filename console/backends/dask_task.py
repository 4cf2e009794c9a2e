"""What one Dask task runs: a chunk, exactly as an agent's pool worker runs it.

Shipped to the Dask workers by value (cloudpickle), so the workers need
nothing of the console installed; nodeagent and the job's code come with the
uploaded bundle and job files. The reply is a pool worker's, plus the name of
the Dask worker that ran it.
"""

from typing import Sequence, Tuple

__all__ = ["run_chunk_task"]


def run_chunk_task(fn_ref: str, mode: str, combine: str, paths: Sequence[str],
                   items: bytes) -> Tuple[str, bytes, str, str, float, str]:
    """(status, pickled value, error, traceback, seconds, worker) of one chunk attempt."""
    from nodeagent.worker import chunk_reply

    reply = chunk_reply(fn_ref, mode, combine, paths, items)
    try:
        from distributed import get_worker

        where = get_worker().name
    except (ImportError, ValueError):
        where = ""
    return reply + (str(where),)
