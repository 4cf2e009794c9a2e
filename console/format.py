"""The one vocabulary of every view: durations, rates, node states, numbers, bars and sparklines as text.

Every function takes plain values (None for "unknown") and returns a string; none
raises on None, an empty tuple or a value out of range, and none touches Textual,
I/O or a clock. Shared by the headless view (console/headless.py), the Python
API's progress and the dashboard (console/tui), and tested alone.
"""

from __future__ import annotations

import itertools
from typing import Iterable, List, Optional, Sequence, Tuple

from console.snapshot import NA, NodeSnapshot

__all__ = [
    "NODE_STATES",
    "STATE_STYLE",
    "BLOCKS",
    "sparkline",
    "core_strip",
    "hbar",
    "percent",
    "human_bytes",
    "memory",
    "rate",
    "duration",
    "os_arch",
    "workers",
    "first_line",
    "node_matches",
    "node_summary",
    "work_shares",
    "new_lines",
    "answer",
    "column_chart",
]

NODE_STATES = ("failed", "lost", "draining", "busy", "ready", "bootstrapping", "connecting", "pending")
"""Every node state (console/snapshot.py NodeState), the ones that need the operator first."""
STATE_STYLE = {
    "pending": "dim", "connecting": "cyan", "bootstrapping": "cyan", "ready": "green", "busy": "bold green",
    "draining": "yellow", "lost": "bold red", "failed": "red",
}
"""How each state looks (rich styles; the dashboard's stylesheet uses the same colours)."""

BLOCKS = "▁▂▃▄▅▆▇█"
"""Eight heights, lowest first: one character per sample or per core."""


def _clean(values: Optional[Iterable[Optional[float]]]) -> List[float]:
    """The numbers in `values`, clamped to 0-100, with None dropped."""
    if not values:
        return []
    return [min(max(float(v), 0.0), 100.0) for v in values if v is not None]


def _block(value: float) -> str:
    """One block character for a 0-100 value."""
    return BLOCKS[min(int(value / 100.0 * len(BLOCKS)), len(BLOCKS) - 1)]


def _buckets(values: Sequence[float], width: int) -> List[float]:
    """`values` averaged into at most `width` consecutive buckets, order kept."""
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        part = values[i * len(values) // width:(i + 1) * len(values) // width]
        out.append(sum(part) / len(part))
    return out


def sparkline(values: Optional[Iterable[Optional[float]]], width: int = 10) -> str:
    """0-100 samples, oldest first, as `width` block characters, newest at the right edge."""
    if width <= 0:
        return ""
    samples = _buckets(_clean(values), width)
    return "".join(_block(v) for v in samples).rjust(width)


def column_chart(values: Sequence[float], width: int, height: int, top: Optional[float] = None) -> List[str]:
    """`values` (oldest first) as a column chart `height` rows tall and at most `width` wide, top row first:
    each column is one value (or the mean of a bucket of them) scaled to `top` (their largest by default),
    drawn in eighth-block steps."""
    if width <= 0 or height <= 0:
        return []
    samples = _buckets([max(float(v), 0.0) for v in values], width)
    ceiling = top if top else max(samples, default=0.0)
    levels = [round(v / ceiling * height * 8) if ceiling > 0 else 0 for v in samples]
    rows = []
    for row in range(height - 1, -1, -1):
        cells = []
        for level in levels:
            part = min(max(level - row * 8, 0), 8)
            cells.append(" " if part == 0 else BLOCKS[part - 1])
        rows.append("".join(cells))
    return rows


def core_strip(per_core: Optional[Sequence[Optional[float]]], width: int = 10) -> str:
    """One block per core (cores averaged in groups past `width`), or "n/a"."""
    cores = _clean(per_core)
    if not cores or width <= 0:
        return NA
    return "".join(_block(v) for v in _buckets(cores, width))


def hbar(value: Optional[float], width: int) -> str:
    """A horizontal bar `width` cells wide, filled in proportion to a 0-100 value."""
    if width <= 0:
        return ""
    filled = round(min(max(value or 0.0, 0.0), 100.0) / 100.0 * width)
    return "█" * filled + "░" * (width - filled)


def percent(value: Optional[float]) -> str:
    """"87%" (right-aligned in 4 cells), or "n/a"."""
    return NA if value is None else f"{value:3.0f}%"


def human_bytes(count: Optional[float]) -> str:
    """Bytes as "512M", "16G", "7.5G" (powers of 1024), or "n/a"."""
    if count is None:
        return NA
    value = float(count)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            break
        value /= 1024
    if unit == "B" or value >= 10:
        return f"{value:.0f}{unit}"
    return f"{value:.1f}{unit}"


def memory(mem_percent: Optional[float], mem_total: Optional[int]) -> str:
    """"62% of 16G", "62%", or "n/a"."""
    if mem_percent is None:
        return NA
    if mem_total is None:
        return f"{mem_percent:.0f}%"
    return f"{mem_percent:.0f}% of {human_bytes(mem_total)}"


def rate(value: Optional[float]) -> str:
    """A per-second figure in at most 5 cells: "0", "9.5", "950", "12.3k", "4.1M"; or "n/a"."""
    if value is None:
        return NA
    if value == 0:
        return "0"
    for limit, div, unit in ((1e6, 1e6, "M"), (1e3, 1e3, "k")):
        if value >= limit:
            scaled = value / div
            return f"{scaled:.0f}{unit}" if scaled >= 100 else f"{scaled:.1f}{unit}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def duration(seconds: Optional[float]) -> str:
    """"42s", "3m05s", "1h02m", or "n/a"."""
    if seconds is None:
        return NA
    total = max(int(round(seconds)), 0)
    if total >= 3600:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    if total >= 60:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total}s"


def os_arch(os_name: Optional[str], arch: Optional[str]) -> str:
    """"linux/x86_64", "windows", or "n/a" before the node is probed."""
    parts = [p for p in (os_name, arch) if p]
    return "/".join(parts) if parts else NA


def workers(busy: Optional[int], total: Optional[int]) -> str:
    """"3/8" workers busy of all, with "n/a" for a pool not started yet."""
    if total is None:
        return NA
    return f"{busy or 0}/{total}"


def first_line(text: Optional[str]) -> str:
    """The first non-blank line of `text`, stripped; "" for None or blank."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def node_matches(node: NodeSnapshot, query: str) -> bool:
    """Whether `node` passes the filter: every word must match.

    A word "state:lost", "tag:pi", "name:ws" or "os:windows" matches that field
    (state, tag and os exactly, name as a substring); a bare word matches the
    state or a tag exactly, or the name, OS or arch as a substring. Case is ignored.
    """
    tags = {t.lower() for t in node.tags}
    name = node.name.lower()
    system = f"{node.os or ''} {node.arch or ''}".lower()
    for word in query.lower().split():
        field, _, value = word.partition(":")
        if not value:
            if not (word == node.state or word in tags or word in name or word in system):
                return False
        elif field == "state":
            if value != node.state:
                return False
        elif field == "tag":
            if value not in tags:
                return False
        elif field == "name":
            if value not in name:
                return False
        elif field == "os":
            if value != (node.os or "").lower():
                return False
        elif word not in name:
            return False
    return True


def node_summary(node: NodeSnapshot) -> str:
    """One line about a node: where it is, then its error or its vitals."""
    where = node.address or node.transport
    if node.error:
        return f"{node.name} ({where}) {node.state}: {first_line(node.error)}"
    load = " ".join(f"{v:.1f}" for v in node.load) if node.load else NA
    return (
        f"{node.name} ({where}) · python {node.python or NA} · {node.cores or NA} cores"
        f" · load {load} · metrics {node.metrics_source or NA}"
    )


def work_shares(nodes: Iterable[NodeSnapshot], top: int = 4) -> List[Tuple[str, float]]:
    """Each node's share of the items done (0-1), largest first; the rest summed as "others"."""
    done = [(n.name, n.items_done) for n in nodes if n.items_done > 0]
    total = sum(items for _, items in done)
    if not total:
        return []
    done.sort(key=lambda pair: -pair[1])
    shares = [(name, items / total) for name, items in done[:top]]
    rest = sum(items for _, items in done[top:])
    if rest:
        shares.append((f"{len(done) - top} others", rest / total))
    return shares


def new_lines(old: Sequence[str], new: Sequence[str]) -> Tuple[bool, List[str]]:
    """Lines to append to a log showing `old` so it shows `new`: (reset first?, lines).

    `old` and `new` are windows on the same stream, newest last; when they do
    not overlap the log must be cleared and `new` written whole.
    """
    if list(old) == list(new):
        return False, []
    if not old:
        return False, list(new)
    for overlap in range(min(len(old), len(new)), 0, -1):
        if list(old[-overlap:]) == list(new[:overlap]):
            return False, list(new[overlap:])
    return True, list(new)


ANSWER_WIDTH = 72
"""Characters of a job's answer shown whole; a longer one is previewed."""


def _short(value: object, width: int = 24) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def answer(result: object, where: Optional[str] = None, entries: int = 3) -> str:
    """A job's result for people: a number or a short value whole; a dict or a list as its size and first few
    entries, saying where the rest is."""
    whole = repr(result)
    if len(whole) <= ANSWER_WIDTH or not isinstance(result, (dict, list, tuple, str)):
        return whole if len(whole) <= ANSWER_WIDTH else whole[:ANSWER_WIDTH - 1] + "…"
    rest = f" (all in {where})" if where else ""
    if isinstance(result, str):
        return f"{len(result):,} characters: {whole[:ANSWER_WIDTH - 1]}…{rest}"
    if isinstance(result, dict):
        shown = ", ".join(f"{_short(k)}: {_short(v)}" for k, v in itertools.islice(result.items(), entries))
        return f"{len(result):,} entries: {{{shown}, …}}{rest}"
    shown = ", ".join(_short(v) for v in result[:entries])
    return f"{len(result):,} values: [{shown}, …]{rest}"

