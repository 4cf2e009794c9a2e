"""What runs inside one pool worker process: take a chunk, call the job, reply.

A worker receives `(fn_ref, mode, combine, paths, items_bytes)` on its pipe
(`paths` are put on sys.path first, where the job's code lives), unpickles
the items, calls the job function once per item ("item" mode) or once for the
whole chunk ("chunk" mode), folds per-item results when asked ("sum", "merge",
"dict"), and sends back the pickled value or the error with its traceback. A
value that does not fit the job file's reduce, or cannot be pickled, is a
"mistake": the same would happen on every node, so the console does not retry
it. The agent itself never unpickles job data.
"""

from __future__ import annotations

import importlib
import os
import pickle
import struct
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, traceback and the wire module cost the forker's start 30 to 60 ms of CPU together
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["JobMistake", "resolve", "run_chunk", "chunk_reply", "worker_main", "serve_fds", "die_with_parent",
           "PipeEnds"]

_functions: Dict[str, Callable[..., Any]] = {}
SUM_BLOCK = 4096
"""Items whose values a worker holds at once when it sums a chunk."""


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


class JobMistake(Exception):
    """The job's function and its job file disagree: the same would happen on every node, every time."""


def _kind(value: Any) -> str:
    text = repr(value)
    return "%s (%s)" % (type(value).__name__, text if len(text) <= 40 else text[:39] + "...")


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float, complex)):
        return True
    import numbers  # numpy's scalars, Fraction and Decimal are Numbers by registration; imported once one comes

    return isinstance(value, numbers.Number)


def _check(fn_ref: str, combine: str, value: Any, where: str) -> None:
    """A JobMistake when `value` cannot be folded the way the job file's reduce says."""
    if combine == "sum" and not _is_number(value):
        raise JobMistake('%s returned a %s for %s, and reduce = "sum" adds numbers: return a number, or use '
                         'reduce = "list" (or "dict" to get {item: value})' % (fn_ref, _kind(value), where))
    if combine == "merge" and not isinstance(value, dict):
        raise JobMistake('%s returned a %s for %s, and reduce = "merge" merges dicts: return a dict such as '
                         '{item: value}, or use reduce = "dict" to collect {item: value} from plain values'
                         % (fn_ref, _kind(value), where))


def run_chunk(fn_ref: str, mode: str, combine: str, items: Sequence[Any]) -> Any:
    """Run one chunk's items through the job function; the chunk's value.

    `items` is a list, or a range when the job's input is one (it travels as three numbers). `combine` is the
    job file's reduce as far as a worker applies it: "sum" and "merge" fold an item function's results (and
    check a chunk function's value), "dict" collects {item: value}."""
    fn = resolve(fn_ref)
    if mode == "chunk":
        value = fn(list(items) if type(items) is range else items)
        _check(fn_ref, combine, value, "the chunk starting at item %r" % (items[0] if items else None,))
        return value
    if combine == "sum":  # block by block, so a chunk of millions of items never holds all its values
        total: Any = 0
        for start in range(0, len(items), SUM_BLOCK):
            block = items[start:start + SUM_BLOCK]
            values = [fn(item) for item in block]
            try:
                total = sum(values, total)  # the same additions, in the same order, as one sum of every value
            except TypeError:  # say which value is not a number
                for item, value in zip(block, values):
                    _check(fn_ref, combine, value, "item %r" % (item,))
                raise
        return total
    results = [fn(item) for item in items]
    if combine == "dict":
        try:
            return dict(zip(items, results))
        except TypeError:  # an unhashable item
            raise JobMistake('reduce = "dict" collects {item: value}, but item %r cannot be a dict key; use '
                             'reduce = "list"' % (next(i for i in items if not _hashable(i)),)) from None
    if combine == "merge":
        merged: Dict[Any, Any] = {}
        for item, part in zip(items, results):
            if type(part) is not dict:
                _check(fn_ref, combine, part, "item %r" % (item,))
            merged.update(part)
        return merged
    return results


def _hashable(item: Any) -> bool:
    try:
        hash(item)
    except TypeError:
        return False
    return True


def _value_bytes(fn_ref: str, value: Any, items: List[Any]) -> bytes:
    try:
        return pickle.dumps(value)
    except Exception as exc:  # a generator, a lambda, an open file: nothing that can travel back
        raise JobMistake("%s returned a %s for the chunk starting at item %r, which cannot be sent back (%s: %s); "
                         "return plain data (numbers, strings, lists, dicts)"
                         % (fn_ref, type(value).__name__, items[0] if items else None, type(exc).__name__, exc))


def die_with_parent(parent_pid: Optional[int]) -> None:
    """On Linux, have the kernel kill this process when its parent goes, and go now if it already has.
    `parent_pid`: the forker's, for a worker it forked (the agent's, for the forker); None for a worker
    multiprocessing started."""
    if not sys.platform.startswith("linux") or not _kill_me_with_parent():
        return
    if parent_pid is not None:
        gone = os.getppid() != parent_pid
    else:
        import multiprocessing

        parent = multiprocessing.parent_process()
        gone = parent is not None and not parent.is_alive()
    if gone:  # the parent went while this process started
        os._exit(0)


def _kill_me_with_parent() -> bool:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): whether the kernel took it. Through `_ctypes` itself where it has
    call_function (Python 3.9 to 3.13 have): the `ctypes` package costs ~6 ms more of a forker's start, before its
    first worker."""
    try:
        import _ctypes

        prctl = _ctypes.dlsym(_ctypes.dlopen(None, os.RTLD_NOW), "prctl")
        call = getattr(_ctypes, "call_function", None)
        if call is not None:
            return call(prctl, (1, 9)) == 0  # PR_SET_PDEATHSIG, SIGKILL
        import ctypes

        return ctypes.CDLL(None).prctl(1, 9) == 0
    except (ImportError, OSError, AttributeError):
        return False


def _job_traceback(exc: BaseException) -> str:
    """The traceback from the job's own code on: the agent's frames above it tell the operator nothing."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("nodeagent."):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def chunk_reply(fn_ref: str, mode: str, combine: str, paths: Sequence[str],
                items_bytes: bytes) -> Tuple[str, bytes, str, str, float]:
    """Run one chunk attempt: (status "ok", "error" or "mistake", pickled value or the error's ErrorDetail,
    error, traceback, seconds).

    What a pool worker sends back, and what a Dask task returns (console/backends/dask_task.py)."""
    for path in paths:
        if path not in sys.path:
            sys.path.insert(0, path)
    started = time.perf_counter()
    try:
        items = pickle.loads(items_bytes)
        value = _value_bytes(fn_ref, run_chunk(fn_ref, mode, combine, items), items)
        return "ok", value, "", "", time.perf_counter() - started
    except JobMistake as exc:
        return "mistake", b"", str(exc), "", time.perf_counter() - started
    except BaseException as exc:  # the job's failure is data to report, whatever it is
        from nodeagent.wire import describe_error

        error = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
        return "error", describe_error(exc), error, _job_traceback(exc), time.perf_counter() - started


class PipeEnds:
    """A pipe end to read and one to write, framed as `multiprocessing.connection.Connection` frames them: a
    4-byte big-endian signed length (-1, then an 8-byte one, past 2 GiB), then the message. A forked worker
    reads its tasks and writes its replies on them; the pool on POSIX holds the other ends (and one pipe's two
    ends to wake its manager thread). Not Connection itself: importing multiprocessing.connection costs the
    forker's start ~25 ms of CPU, an agent's ~5."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd

    def fileno(self) -> int:
        """The end read from (what the pool waits on)."""
        return self._read_fd

    def recv(self) -> Any:
        """The next message, unpickled; EOFError once the other side closed its end."""
        return pickle.loads(self.recv_bytes())

    def recv_bytes(self) -> bytes:
        size, = struct.unpack("!i", self._read(4))
        if size == -1:
            size, = struct.unpack("!Q", self._read(8))
        return self._read(size)

    def send(self, message: Any) -> None:
        self.send_bytes(pickle.dumps(message))

    def send_bytes(self, data: bytes) -> None:
        size = len(data)
        header = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!i", -1) + struct.pack("!Q", size)
        if size <= 16384:  # one write, as Connection makes it; a larger message is not copied to put a header on it
            self._write(header + data)
        else:
            self._write(header)
            self._write(data)

    def close(self) -> None:
        """Close both ends, once (an end closed reads and writes as OSError from then on)."""
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1

    __del__ = close  # as Connection closes its fd when collected (the pool's wake pipe is left to this)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_fd, view):]

    def _read(self, size: int) -> bytes:
        parts = []
        while size:
            data = os.read(self._read_fd, size)
            if not data:
                raise EOFError("the other end of the pipe was closed")
            parts.append(data)
            size -= len(data)
        return b"".join(parts)  # one part, the usual case, is returned as it is


def serve_fds(task_fd: int, reply_fd: int, parent_pid: int) -> None:
    """`worker_main` on the two pipe ends of a worker the forker forked (nodeagent/forker.py)."""
    ends = PipeEnds(task_fd, reply_fd)
    worker_main(ends, ends, parent_pid)


def worker_main(inbox: Any, outbox: Any, parent_pid: Optional[int] = None) -> None:
    """Serve chunks from `inbox`, replying on `outbox`, until it closes; the target of each pool process."""
    die_with_parent(parent_pid)
    while True:
        try:
            task = inbox.recv()
        except (EOFError, OSError):
            return
        try:
            outbox.send(chunk_reply(*task))
        except (EOFError, OSError):
            return

