"""What one Dask task runs: a chunk, exactly as an agent's worker runs it.

Shipped to the Dask workers by value (cloudpickle), so the workers need
nothing of the console installed; the job's code and nodeagent come with the
uploaded bundle and job files. The reply is the same fields as an agent's
chunk outcome, plus the worker that ran it.
"""

import pickle
import sys
import time
import traceback
from typing import Sequence, Tuple

__all__ = ["run_chunk_task"]


def run_chunk_task(fn_ref: str, mode: str, combine: str, paths: Sequence[str],
                   items: bytes) -> Tuple[str, bytes, str, str, float, str]:
    """(status, pickled value, error, traceback, seconds, worker) of one chunk attempt."""
    from nodeagent.worker import run_chunk

    for path in paths:
        if path not in sys.path:
            sys.path.insert(0, path)
    started = time.perf_counter()
    try:
        value = pickle.dumps(run_chunk(fn_ref, mode, combine, pickle.loads(items)))
        reply = ("ok", value, "", "")
    except Exception as exc:  # the job's failure is data to report, whatever it is
        error = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
        reply = ("error", b"", error, traceback.format_exc())
    try:
        from distributed import get_worker

        where = get_worker().name
    except (ImportError, ValueError):
        where = ""
    return reply + (time.perf_counter() - started, str(where))
