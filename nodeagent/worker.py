"""What runs inside one pool worker process: take a chunk, call the job, reply.

A worker receives `(fn_ref, mode, combine, paths, items_bytes)` on its pipe
(`paths` are put on sys.path first, where the job's code lives), unpickles
the items, calls the job function once per item ("item" mode) or once for the
whole chunk ("chunk" mode), folds per-item results when asked ("sum", "merge"),
and sends back the pickled value or the error with its traceback. The agent
itself never unpickles job data.
"""

import importlib
import pickle
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Sequence, Tuple

__all__ = ["resolve", "run_chunk", "chunk_reply", "worker_main"]

_functions: Dict[str, Callable[..., Any]] = {}


def resolve(ref: str, fresh: bool = False) -> Callable[..., Any]:
    """Import "package.module:function" and return the function (cached per worker).

    `fresh` re-reads the module from disk when it was imported before: a long-lived
    console must run the code as it is now, not as it was at its first job."""
    fn = None if fresh else _functions.get(ref)
    if fn is None:
        module_name, _, attr = ref.partition(":")
        module = sys.modules.get(module_name) if fresh else None
        fn = importlib.reload(module) if module is not None else importlib.import_module(module_name)
        for part in attr.split("."):
            fn = getattr(fn, part)
        _functions[ref] = fn
    return fn


def _merge(results: List[Any]) -> Dict[Any, Any]:
    merged: Dict[Any, Any] = {}
    for part in results:
        merged.update(part)
    return merged


def run_chunk(fn_ref: str, mode: str, combine: str, items: List[Any]) -> Any:
    """Run one chunk's items through the job function; the chunk's value."""
    fn = resolve(fn_ref)
    if mode == "chunk":
        return fn(items)
    results = [fn(item) for item in items]
    if combine == "sum":
        return sum(results)
    if combine == "merge":
        return _merge(results)
    return results


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when its parent goes."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def chunk_reply(fn_ref: str, mode: str, combine: str, paths: Sequence[str],
                items_bytes: bytes) -> Tuple[str, bytes, str, str, float]:
    """Run one chunk attempt: (status "ok" or "error", pickled value, error, traceback, seconds).

    What a pool worker sends back, and what a Dask task returns (console/backends/dask_task.py)."""
    for path in paths:
        if path not in sys.path:
            sys.path.insert(0, path)
    started = time.perf_counter()
    try:
        value = pickle.dumps(run_chunk(fn_ref, mode, combine, pickle.loads(items_bytes)))
        return "ok", value, "", "", time.perf_counter() - started
    except BaseException as exc:  # the job's failure is data to report, whatever it is
        error = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
        return "error", b"", error, traceback.format_exc(), time.perf_counter() - started


def worker_main(inbox: Any, outbox: Any) -> None:
    """Serve chunks from `inbox`, replying on `outbox`, until it closes; the target of each pool process."""
    _die_with_parent()
    while True:
        try:
            task = inbox.recv()
        except (EOFError, OSError):
            return
        try:
            outbox.send(chunk_reply(*task))
        except (EOFError, OSError):
            return

