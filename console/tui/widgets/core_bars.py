"""Per-core CPU bars and a memory bar for one node, redrawn from its `NodeSnapshot`.

A plain renderer: `node` in, lines of text out, one bar per core sized to the
widget's width, "n/a" where the node sent no figures. Never calls the cluster.
Composed by `console.tui.screens.node.NodeScreen`.
"""

from __future__ import annotations

from typing import List, Optional

from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from console.snapshot import NA, NodeSnapshot
from console import format as f

__all__ = ["CoreBars", "core_lines"]


def core_lines(node: Optional[NodeSnapshot], width: int) -> List[str]:
    """One line per core ("cpu3 ████░░░░  52%"), then memory's, fitting `width`."""
    if node is None:
        return [NA]
    label = max(len(f"cpu{max((node.cores or 1) - 1, 0)}"), 3) + 1
    bar = max(width - label - 6, 4)
    lines = []
    per_core = node.cpu_per_core or ()
    for index, value in enumerate(per_core):
        lines.append(f"{f'cpu{index}':<{label}}{f.hbar(value, bar)} {f.percent(value):>4}")
    if not per_core:
        lines.append(f"{'cpu':<{label}}{NA} (the node sent no per-core figures)")
    if node.mem_percent is None:
        lines.append(f"{'mem':<{label}}{NA}")
    else:
        mem = node.mem_percent
        lines.append(f"{'mem':<{label}}{f.hbar(mem, bar)} {f.percent(mem):>4}")
    used, total = f.human_bytes(node.mem_used), f.human_bytes(node.mem_total)
    lines.append(f"{'':<{label}}{used} used of {total}")
    return lines


class CoreBars(Widget):
    """A bar for each core of one node, then its memory."""

    DEFAULT_CSS = """
    CoreBars { height: auto; }
    """

    COMPONENT_CLASSES = {"core-bars--used", "core-bars--free"}

    node: reactive[Optional[NodeSnapshot]] = reactive(None, layout=True)
    """The node to draw; None draws "n/a"."""

    def render(self) -> Text:
        used = self.get_component_rich_style("core-bars--used", partial=True)
        free = self.get_component_rich_style("core-bars--free", partial=True)
        text = Text()
        for index, line in enumerate(core_lines(self.node, self.size.width)):
            if index:
                text.append("\n")
            for run in _runs(line):
                text.append(run, style=used if run[0] == "█" else free if run[0] == "░" else "")
        return text

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(core_lines(self.node, width))


def _runs(line: str) -> List[str]:
    """`line` cut into runs of the same bar character ("█", "░") or other text."""
    runs: List[str] = []
    for char in line:
        kind = char if char in "█░" else ""
        if runs and (runs[-1][0] if runs[-1][0] in "█░" else "") == kind:
            runs[-1] += char
        else:
            runs.append(char)
    return runs
