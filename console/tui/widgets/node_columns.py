"""The node table's columns: what each cell says for a node, how rows sort, and `Cell`.

Pure functions of a `NodeSnapshot`, no Textual and no I/O, so they are tested
without an app. `Cell` is a one-line renderable that yields a single prebuilt
segment: DataTable repaints every cell in view on any update, and this is about
40% cheaper to repaint than a `rich.text.Text`. Used by `NodeTable`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style

from console.snapshot import NodeSnapshot
from console import format as f

__all__ = ["COLUMNS", "SORTS", "STATES", "Cell", "node_cells", "sort_value"]


class Cell:
    """One line of plain text (never parsed as markup) in one style, cheap to render.

    `style` may be a function returning the style, looked up at each render, so a
    state's colour follows the CSS (and a theme change) without rebuilding the cell.
    """

    __slots__ = ("text", "_style", "_segments", "_width")

    def __init__(self, text: str, style: Optional[Callable[[], Style]] = None) -> None:
        self.text = text
        """What the cell says."""
        self._style = style
        self._segments = (Segment(text),)
        self._width = cell_len(text)

    def __str__(self) -> str:
        return self.text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterable[Segment]:
        if self._style is None:
            return self._segments
        return (Segment(self.text, self._style()),)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self._width, self._width)

COLUMNS: Tuple[Tuple[str, str, Optional[int]], ...] = (
    ("name", "name", None),
    ("system", "OS/arch", 13),
    ("state", "state", 13),
    ("cpu", "CPU  last min", 15),
    ("cores", "cores", 10),
    ("mem", "memory", 11),
    ("workers", "workers", 7),
    ("done", "chunks", 6),
    ("rate", "items/s", 7),
    ("errors", "errors", 6),
)
"""(key, header, width) of each column; None sizes the column to its content."""

SORTS = ("inventory", "name", "state", "cpu", "items/s", "errors")
"""Sort orders that `o` cycles through; numbers sort largest first."""

STATES = f.NODE_STATES
"""Every node state, in the order the "state" sort shows them: trouble first."""

_STATE_RANK = {state: rank for rank, state in enumerate(STATES)}


def node_cells(node: NodeSnapshot) -> Tuple[str, ...]:
    """The text of each column for `node`, in `COLUMNS` order."""
    return (
        node.name,
        f.os_arch(node.os, node.arch),
        node.state,
        f"{f.percent(node.cpu_percent):>4} {f.sparkline(node.cpu_history, 10)}",
        f.core_strip(node.cpu_per_core, 10),
        f.memory(node.mem_percent, node.mem_total),
        f.workers(node.workers_busy, node.workers),
        str(node.chunks_done),
        f.rate(node.items_per_s),
        str(node.errors),
    )


def sort_value(node: NodeSnapshot, order: str, index: int) -> tuple:
    """Key placing `node` (at `index` in the inventory) in sort `order`."""
    if order == "name":
        return (node.name.lower(), index)
    if order == "state":
        return (_STATE_RANK.get(node.state, len(_STATE_RANK)), index)
    if order == "cpu":
        return (-(node.cpu_percent if node.cpu_percent is not None else -1.0), index)
    if order == "items/s":
        return (-node.items_per_s, index)
    if order == "errors":
        return (-node.errors, index)
    return (index,)
