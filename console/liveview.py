"""`console run` on a terminal: a live view redrawn from snapshots, and the summary as a table.

The overall bar, items/s, ETA, and a line per node with its state, CPU and
chunks, a few times a second; at the end the `Summary` console/headless.py
makes, drawn with rich. Reads `ClusterSnapshot`s only.
"""

from __future__ import annotations

from typing import Callable, Tuple

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from console import format as f
from console.headless import SUMMARY_COLUMNS, SUMMARY_LEFT, Summary
from console.snapshot import ClusterSnapshot, NodeSnapshot

__all__ = ["LiveView", "render_live", "render_summary"]


def _node_table(nodes: Tuple[NodeSnapshot, ...]) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column, justify in (("node", "left"), ("state", "left"), ("cpu", "right"), ("busy", "right"),
                            ("chunks", "right"), ("items/s", "right"), ("errors", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for node in nodes:
        workers = f"{node.workers_busy}/{node.workers}" if node.workers else "n/a"
        table.add_row(
            node.name, Text(node.state, style=f.STATE_STYLE.get(node.state, "")), f.percent(node.cpu_percent).strip(),
            workers, str(node.chunks_done), f.rate(node.items_per_s), str(node.errors),
        )
    return table


def render_live(snapshot: ClusterSnapshot) -> RenderableType:
    """The live view of one snapshot."""
    job = snapshot.job
    if job is None:
        return _node_table(snapshot.nodes)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        Text(job.name, style="bold"),
        ProgressBar(total=job.items_total or 1, completed=job.items_done, width=40),
        f"{job.items_done:,}/{job.items_total or 0:,} items",
        f"{f.rate(job.items_per_s)}/s",
        f"ETA {f.duration(job.eta_s)}",
        f"{snapshot.nodes_up} up",
        Text(f"{job.chunks_failed} failed", style="red" if job.chunks_failed else ""),
    )
    return Group(bar, _node_table(snapshot.nodes))


def render_summary(summary: Summary) -> RenderableType:
    """The summary as a table and styled sentences."""
    table = Table(title=summary.title, header_style="bold")
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="left" if column in SUMMARY_LEFT else "right")
    for row in summary.rows:
        table.add_row(*row)
    lines = [table] + ([Text.assemble(("answer: ", "bold"), summary.answer)] if summary.answer is not None else [])
    return Group(*lines, *(Text(sentence, style=style) for sentence, style in summary.notes))


class LiveView:
    """`console run`'s output on a terminal, through rich."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def line(self, text: str) -> None:
        """One line, as it is."""
        self._console.print(text, markup=False, highlight=False)

    def watch(self, source: Callable[[], ClusterSnapshot], done: Callable[[float], bool]) -> ClusterSnapshot:
        """Redraw the live view until `done(wait)` says the job ended; the last snapshot."""
        with Live(render_live(source()), console=self._console, refresh_per_second=4, transient=False) as live:
            while not done(0.25):
                live.update(render_live(source()))
            snapshot = source()
            live.update(render_live(snapshot))
            return snapshot

    def summary(self, summary: Summary) -> None:
        """The job's summary."""
        self._console.print(render_summary(summary))
