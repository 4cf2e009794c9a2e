"""Every message between the console and an agent, as a named type, encoded and decoded here.

The console trusts the node it logged into no further than "this chunk's value
is this plain data". So what crosses from the agent (its `NodeInfo`, a
`MetricsSample`, `Collected` chunk outcomes) is encoded as nested tuples of
plain values and decoded by an unpickler that refuses every global, then
checked field by field: a node that sends anything else raises `WireError`.
A chunk's value is decoded by `ValueDecoder`, which allows plain data and the
types the job file names, nothing else (`RefusedType` names what it met).
What goes to the agent (`JobSettings`, `ChunkItems`s, items) stays pickle: the
node trusts the console that logged into it over SSH.

Shared by both sides (console/agentlink.py, nodeagent/service.py): Python 3.9,
standard library only. `PROTOCOL_VERSION` names this layout.
"""

import io
import pickle
import re
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

__all__ = [
    "PROTOCOL_VERSION", "MAX_LOG_LINE", "shown", "WireError", "ProtocolMismatch", "RefusedType", "NodeInfo",
    "JobSettings", "ChunkItems", "ChunkOutcome", "Collected", "MetricsSample", "encode", "decode_info",
    "decode_metrics", "decode_collected", "decode_digests", "ValueDecoder", "PLAIN_TYPES", "ErrorDetail",
    "describe_error", "decode_error_detail",
]

PROTOCOL_VERSION = 5
"""Names this module's layout; bumped whenever a message or an exposed method changes."""
MAX_LOG_LINE = 8192
"""Bytes of one line of an agent's log the console keeps; longer lines are cut."""
OUTCOME_STATUSES = ("ok", "error", "timeout", "died", "mistake")


class WireError(Exception):
    """What a node sent is not what the protocol allows (the node misbehaved, or its stream broke)."""


class ProtocolMismatch(WireError):
    """The agent speaks another protocol version (an older or newer bundle)."""


class RefusedType(Exception):
    """A chunk's value holds a type the job file does not allow; `.name` is "module:qualname"."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class NodeInfo(NamedTuple):
    """The agent's answer to hello: who this node is."""

    protocol: int
    hostname: str
    os: str
    """sys.platform, "windows" for win32."""
    arch: str
    python: str
    cores: int
    pid: int
    """The agent's process id on the node (the stop command uses it)."""
    metrics: str
    """"psutil" or "fallback"."""
    start_method: str
    abi: str
    """The wheel ABI tag of the node's Python ("cp39"); nodeagent/wheels.py."""
    platform: str
    """The wheel platform tag pip downloads for ("manylinux_2_36_x86_64", "win_amd64"), "" for none."""


class JobSettings(NamedTuple):
    """What an agent needs to run a job's chunks (console to agent)."""

    name: str
    fn: str
    """"module:function" of the job's code."""
    mode: str
    """"item" or "chunk"."""
    combine: str
    """How a worker folds one chunk's per-item results: "sum", "merge" or "list"."""
    files: Dict[str, bytes]
    """The job's own files, {relative path: content}."""
    timeout: float
    workers: Optional[int]
    """Pool size; None means the node's core count."""
    wheels: Tuple[str, ...] = ()
    """The SHA-256 of each wheel the job's workers import from (sent before the job, nodeagent/wheels.py)."""


class ChunkItems(NamedTuple):
    """One chunk attempt with its items, for an agent to run (console to agent)."""

    chunk: int
    attempt: int
    items: bytes
    """The chunk's items, pickled by the console."""


class ChunkOutcome(NamedTuple):
    """What became of a chunk attempt on the node."""

    chunk: int
    attempt: int
    status: str
    """"ok", "error", "timeout", "died", or "mistake" (the job's function and its job file disagree)."""
    value: bytes
    """The chunk's value, pickled by the worker (decode with a ValueDecoder); for "error", the exception's
    `ErrorDetail` (decode with decode_error_detail); else empty."""
    error: str
    traceback: str
    seconds: float
    worker: str
    """Which of the node's workers ran it (its pool slot)."""


class ErrorDetail(NamedTuple):
    """A chunk's exception in plain data: enough for the console to raise the same type again."""

    type: str
    """"module:qualname" of the exception's class."""
    args: tuple
    """Its arguments when they are plain data, else (str(exc),)."""


_PLAIN_ATOMS = (str, int, float, bool, bytes, type(None))


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN_ATOMS):
        return True
    if depth < 4 and type(value) in (tuple, list):
        return all(_is_plain(v, depth + 1) for v in value)
    return False


def describe_error(exc: BaseException) -> bytes:
    """An exception as an encoded ErrorDetail (node side)."""
    kind = type(exc)
    args = tuple(exc.args) if _is_plain(list(exc.args)) else (str(exc),)
    return encode(ErrorDetail("%s:%s" % (kind.__module__, kind.__qualname__), args))


def decode_error_detail(data: bytes) -> Optional[ErrorDetail]:
    """The ErrorDetail a node sent with an error outcome, its text arguments `shown` (the exception rebuilt
    from it is printed in a traceback); None when there is none or it is not one."""
    if not data:
        return None
    try:
        value = _fields("error detail", _loads_plain(data, "error detail"), ((str,), (tuple,)))
    except WireError:
        return None
    return ErrorDetail(value[0], _shown_plain(value[1])) if _is_plain(list(value[1])) else None


def _shown_plain(value: Any) -> Any:
    """Plain data with every string in it `shown`."""
    if type(value) is str:
        return shown(value)
    if type(value) in (tuple, list):
        return type(value)(_shown_plain(v) for v in value)
    return value


class Collected(NamedTuple):
    """The reply to exchange: outcomes since the last call and the pool's state."""

    outcomes: Tuple[ChunkOutcome, ...]
    busy: int
    """Workers running a chunk now."""
    queued: int
    """Chunks waiting for a worker."""
    metrics: Optional["MetricsSample"] = None
    """The node's metrics when the call asked for them: a busy node's ride on its exchanges, a round trip
    saved on each node every second (with a hundred agents on one machine, a tenth of its CPU)."""


class MetricsSample(NamedTuple):
    """CPU, memory and load of the node since the previous sample."""

    source: str
    """"psutil" or "fallback"."""
    cpu_percent: Optional[float]
    cpu_per_core: Optional[Tuple[float, ...]]
    mem_used: Optional[int]
    mem_total: Optional[int]
    load: Optional[Tuple[float, float, float]]
    busy: int
    """Workers running a chunk now."""


def encode(message: Any) -> bytes:
    """A message (or a plain value) as bytes; named tuples travel as plain tuples."""
    return pickle.dumps(_plain(message), protocol=pickle.HIGHEST_PROTOCOL)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


class _NoGlobals(pickle.Unpickler):
    """Builds plain data only: every class or function a pickle names is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise WireError(f"it sent a pickle naming {module}.{name}, which the protocol never does")


def _loads_plain(data: Any, what: str) -> Any:
    if type(data) is not bytes:
        raise WireError(f"its {what} was a {type(data).__name__}, not bytes")
    try:
        return _NoGlobals(io.BytesIO(data)).load()
    except WireError:
        raise
    except Exception as exc:  # any malformed pickle: the stream is garbage
        raise WireError(f"its {what} is not a valid message ({type(exc).__name__}: {exc})") from None


_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))


def _fields(what: str, value: Any, kinds: Sequence[Tuple[type, ...]]) -> tuple:
    if type(value) is not tuple or len(value) != len(kinds):
        raise WireError(f"its {what} does not have the {len(kinds)} fields of protocol {PROTOCOL_VERSION}")
    for field, kind in zip(value, kinds):
        if not isinstance(field, kind):
            raise WireError(f"its {what} holds a {type(field).__name__} where the protocol has "
                            f"{' or '.join(k.__name__ for k in kind)}")
    return value


_CONTROLS = dict.fromkeys([*range(0, 9), *range(11, 32), 127, *range(128, 160)], "\ufffd")


def shown(text: str) -> str:
    """A node's text as the console may print it: control characters (tab and newline aside) replaced, so an
    escape sequence in an error message or a log line is shown, never obeyed by the operator's terminal."""
    return text.translate(_CONTROLS)


def decode_info(data: Any) -> NodeInfo:
    """The agent's NodeInfo, its text `shown`; an agent of another protocol gets a WireError naming its version."""
    value = _loads_plain(data, "hello")
    theirs = value[0] if type(value) is tuple and value else value.get("protocol") if type(value) is dict else None
    if type(theirs) is int and theirs != PROTOCOL_VERSION:  # protocol 1 answered a dict
        raise ProtocolMismatch(f"the agent speaks protocol {theirs} and this console {PROTOCOL_VERSION}")
    fields = _fields("hello", value, ((int,), (str,), (str,), (str,), (str,), (int,), (int,), (str,), (str,), (str,),
                                      (str,)))
    info = NodeInfo(*_shown_plain(fields))  # a hostname is shown on the terminal
    if not (_TAG.match(info.abi) and (not info.platform or _TAG.match(info.platform))):
        raise WireError("its hello names wheel tags that are not tags")
    return info


_TAG = re.compile(r"^[a-z0-9_]{1,64}$")


def decode_digests(data: Any, asked: Sequence[str]) -> Tuple[str, ...]:
    """The wheel digests a node says it lacks: a subset of those asked about."""
    value = _loads_plain(data, "missing wheels")
    if type(value) is not tuple or not all(type(d) is str and d in asked for d in value):
        raise WireError("it answered which wheels it lacks with something other than some of those asked about")
    return value


def decode_metrics(data: Any) -> MetricsSample:
    """A MetricsSample, each figure checked."""
    return _metrics_sample(_loads_plain(data, "metrics"))


def _metrics_sample(value: Any) -> MetricsSample:
    value = _fields("metrics", value, ((str,), _OPTIONAL_NUMBER, (tuple, type(None)), (int, type(None)),
                                       (int, type(None)), (tuple, type(None)), (int,)))
    for figures in (value[2], value[5]):
        if figures is not None and not all(isinstance(f, _NUMBER) for f in figures):
            raise WireError("its metrics hold a CPU or load figure that is not a number")
    return MetricsSample(*value)


_OUTCOME_KINDS = ((int,), (int,), (str,), (bytes,), (str,), (str,), _NUMBER, (str,))


def decode_collected(data: Any) -> Collected:
    """Collected outcomes, each checked (their error, traceback and worker `shown`); the caller checks they are
    for chunks it sent."""
    outcomes, busy, queued, metrics = _fields("outcomes", _loads_plain(data, "outcomes"),
                                              ((tuple,), (int,), (int,), (tuple, type(None))))
    checked = []
    for outcome in outcomes:
        chunk, attempt, status, value, error, tb, seconds, worker = _fields("chunk outcome", outcome, _OUTCOME_KINDS)
        if status not in OUTCOME_STATUSES:
            raise WireError(f"it sent a chunk outcome with the status {status[:40]!r}")
        checked.append(ChunkOutcome(chunk, attempt, status, value, shown(error), shown(tb), seconds, shown(worker)))
    return Collected(tuple(checked), busy, queued, None if metrics is None else _metrics_sample(metrics))


PLAIN_TYPES = {
    ("builtins", "complex"), ("builtins", "bytearray"), ("builtins", "set"), ("builtins", "frozenset"),
    ("__builtin__", "complex"), ("__builtin__", "bytearray"), ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
}
"""The globals plain data needs: None, bool, int, float, str, bytes, list, tuple and dict need none."""


class ValueDecoder:
    """Decodes chunk values: plain data, plus the "module:qualname" types the job file allows."""

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        self.allowed = frozenset(tuple(ref.split(":", 1)) for ref in allowed) | PLAIN_TYPES

    def loads(self, data: bytes) -> Any:
        """The value; RefusedType for a type not allowed, WireError for a malformed pickle."""
        try:
            return _AllowList(io.BytesIO(data), self.allowed).load()
        except RefusedType:
            raise
        except Exception as exc:  # a malformed pickle, or an allowed type's constructor refusing its arguments
            raise WireError(f"a chunk value is not a valid pickle ({type(exc).__name__}: {exc})") from None


class _AllowList(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, allowed: frozenset) -> None:
        super().__init__(file)
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise RefusedType(f"{module}:{name}")
        return super().find_class(module, name)
