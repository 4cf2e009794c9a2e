"""The job chart: the cluster's items/s and CPU over the job's life, as two column charts.

Reads `JobSnapshot.history` (one sample a second, thinned as the job grows
long, so the chart always spans the whole job) from the bound
`ClusterSnapshot`; redraws only when the history or the width changed.
Composed by `console.tui.app.ConsoleApp`.
"""

from __future__ import annotations

from typing import Optional, Tuple

from rich.text import Text
from textual.reactive import var
from textual.widgets import Static

from console import format as f
from console.snapshot import ClusterSnapshot

__all__ = ["JobChart", "chart_lines"]

RATE_ROWS = 3
CPU_ROWS = 2


def chart_lines(history: Tuple[Tuple[float, float, Optional[float]], ...], width: int) -> Text:
    """The chart's text for `history` ((seconds, items/s, cpu %) samples) in `width` cells."""
    if not history:
        return Text("no samples yet", style="dim")
    rates = [rate for _, rate, _ in history]
    cpus = [cpu for _, _, cpu in history]
    peak = max(rates)
    known = [c for c in cpus if c is not None]
    text = Text()
    text.append(f"items/s {f.rate(rates[-1])}, peak {f.rate(peak)}\n", style="bold")
    for row in f.column_chart(rates, width, RATE_ROWS, peak):
        text.append(row + "\n", style="green")
    text.append(f"CPU {f.percent(known[-1]).strip() if known else f.NA}, over {f.duration(history[-1][0])}\n",
                style="bold")
    rows = f.column_chart([c or 0.0 for c in cpus], width, CPU_ROWS, 100.0)
    for index, row in enumerate(rows):
        text.append(row + ("\n" if index < len(rows) - 1 else ""), style="cyan")
    return text


class JobChart(Static):
    """items/s and CPU of the whole cluster since the job started."""

    snapshot: var[Optional[ClusterSnapshot]] = var(None)
    """The latest cluster snapshot (bound to the app's)."""

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self._drawn: Tuple[object, int] = ((), -1)

    def watch_snapshot(self, snapshot: Optional[ClusterSnapshot]) -> None:
        if not self.is_mounted:
            return
        history = snapshot.job.history if snapshot and snapshot.job else ()
        width = max(self.content_size.width, 10)
        if self._drawn != (history, width):
            self._drawn = (history, width)
            self.update(chart_lines(history, width))

    def on_resize(self) -> None:
        self.watch_snapshot(self.snapshot)

    def on_mount(self) -> None:
        self.border_title = "Throughput"
        self.watch_snapshot(self.snapshot)
