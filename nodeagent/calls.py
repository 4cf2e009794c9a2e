"""The chunk function of the Python API's jobs: call the user's function on each item of a batch.

`console.connect()` runs one job whose chunk function is `run_calls`; each
chunk's items are one `CallBatch` (pickled by the console with cloudpickle),
the chunk's value the list of the calls' results. The function travels as a
reference to a module the node can import (the console ships the module's
files when they are the user's own) or, for a function of `__main__`, a lambda
or a closure, by value: cloudpickle's bytes, which only the Python version that
made them can load. A batch of `None` is a call the user cancelled: it does
nothing.
"""

import hashlib
import importlib
import pickle
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

__all__ = ["CallBatch", "FunctionRef", "run_calls"]


class FunctionRef(NamedTuple):
    """How a batch names its function: by "module:qualname" or by value."""

    ref: str
    """"module:qualname", or "" when shipped by value."""
    pickled: bytes = b""
    """cloudpickle's bytes of the function (by value)."""
    python: Tuple[int, int] = (0, 0)
    """The Python (major, minor) that pickled it."""


class CallBatch(NamedTuple):
    """One chunk of calls of one function."""

    function: FunctionRef
    spread: str
    """"one": fn(item); "many": fn(*item); "call": fn(*args, **kwargs) for item == (args, kwargs)."""
    items: List[Any]


_by_value: Dict[str, Callable[..., Any]] = {}


def _function(ref: FunctionRef) -> Callable[..., Any]:
    if ref.ref:
        module_name, _, qualname = ref.ref.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
        return target
    digest = hashlib.sha256(ref.pickled).hexdigest()
    fn = _by_value.get(digest)
    if fn is None:
        if tuple(sys.version_info[:2]) != tuple(ref.python):
            raise RuntimeError(
                "this function was shipped by value from Python %d.%d and this node runs Python %d.%d, which "
                "cannot load its code; define it in a module file next to your script (shipped as source), or "
                "leave this node out" % (ref.python[0], ref.python[1], sys.version_info[0], sys.version_info[1]))
        fn = _by_value[digest] = pickle.loads(ref.pickled)
    return fn


def run_calls(batch: Optional[bytes]) -> List[Any]:
    """The results of one batch's calls, in order; the first exception fails the chunk."""
    if batch is None:
        return []
    function, spread, items = CallBatch(*pickle.loads(batch))
    fn = _function(FunctionRef(*function))
    if spread == "one":
        return [fn(item) for item in items]
    if spread == "many":
        return [fn(*item) for item in items]
    return [fn(*args, **kwargs) for args, kwargs in items]
