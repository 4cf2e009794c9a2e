"""A chunk's failure on a node, raised in the user's program as the Python API promises.

A call that raised on a node raises the same exception type from `result()`
or from `map`'s iterator, rebuilt from the node's `ErrorDetail` (its type
name and plain arguments), with the node's traceback as its `__cause__` the
way `concurrent.futures`' process pool chains a worker's. Only exception
classes of the standard library or of the modules the user's functions came
from are rebuilt, and without running any of their code (no `__init__`), so a
node cannot make the console run code of its choosing; anything else, and the
failures that are not exceptions (a timeout, a dead worker, a refused value),
raise `RemoteError`.
"""

from __future__ import annotations

import builtins
import sys
from typing import Any, FrozenSet, Optional

from console.scheduler import Failure
from nodeagent.wire import ErrorDetail

__all__ = ["RemoteError", "ChunkTimedOut", "WorkerDied", "RemoteTraceback", "rebuild_exception"]


class RemoteTraceback(Exception):
    """The node's traceback of a failed call: the `__cause__` of the exception the API raises."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteError(Exception):
    """A call failed on a node in a way that cannot be raised here as its own exception."""

    def __init__(self, message: str, node: str = "", kind: str = "error") -> None:
        super().__init__(message)
        self.node = node
        self.kind = kind


class ChunkTimedOut(RemoteError, TimeoutError):
    """The call's chunk ran longer than the chunk timeout (on every attempt)."""


class WorkerDied(RemoteError):
    """The worker process running the call's chunk died (os._exit, a crash, the OOM killer)."""


def _exception_class(type_name: str, allowed_modules: FrozenSet[str]) -> Optional[type]:
    """The class a node named, if it may be raised here: an Exception subclass already imported."""
    module_name, _, qualname = type_name.partition(":")
    if module_name != "builtins" and module_name not in allowed_modules:
        return None
    target: Any = builtins if module_name == "builtins" else sys.modules.get(module_name)
    for part in qualname.split("."):
        target = getattr(target, part, None)
    if isinstance(target, type) and issubclass(target, Exception):
        return target
    return None


def _instance(cls: type, args: tuple) -> Optional[BaseException]:
    """An instance of `cls` with `args`; a class outside builtins is made by its builtin base, so none of its own
    code runs."""
    try:
        if cls.__module__ == "builtins":
            return cls(*args)
        base = next(k for k in cls.__mro__ if k.__module__ == "builtins")
        exc = base.__new__(cls, *args)
        exc.args = args
        return exc
    except Exception:  # the arguments do not fit the class: fall back to RemoteError
        return None


def rebuild_exception(failure: Failure, allowed_modules: FrozenSet[str]) -> BaseException:
    """What the API raises for a call whose chunk failed for good."""
    where = f"on node {failure.node} (chunk {failure.chunk}, attempt {failure.attempt})"
    exc: Optional[BaseException] = None
    if failure.kind == "timeout":
        exc = ChunkTimedOut(f"the call ran longer than the chunk timeout {where}", failure.node, failure.kind)
    elif failure.kind == "died":
        exc = WorkerDied(f"the worker running the call died {where}: {failure.error or 'no reason given'}",
                         failure.node, failure.kind)
    elif isinstance(failure.detail, ErrorDetail):
        cls = _exception_class(failure.detail.type, allowed_modules)
        exc = _instance(cls, failure.detail.args) if cls is not None else None
        if exc is not None and hasattr(exc, "add_note"):
            exc.add_note(f"raised {where}")
    if exc is None:
        exc = RemoteError(f"{failure.error} ({where})", failure.node, failure.kind)
    if failure.traceback:
        exc.__cause__ = RemoteTraceback(f'\n"""\n{failure.traceback.rstrip()}\n"""\n{where}')
    return exc
