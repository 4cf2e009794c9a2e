"""The node screen: one node in detail, live: vitals, per-core bars, recent chunks, agent log.

Opened by the app with Enter on a node row. Watches the app's `snapshot`
reactive and redraws from the node's newest `NodeSnapshot`; it never calls the
cluster itself (`r` / `d` here are the app's actions, aimed at this node).
Pushed by `console.tui.app.ConsoleApp`.
"""

from __future__ import annotations

from typing import Optional, Tuple

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Log, Static

from console.snapshot import NA, ChunkRecord, ClusterSnapshot, NodeSnapshot
from console import format as f
from console.tui.widgets.core_bars import CoreBars

__all__ = ["NodeScreen", "node_heading"]


def node_heading(node: Optional[NodeSnapshot], name: str) -> str:
    """Three lines about the node (identity, work, vitals), and its error if any."""
    if node is None:
        return f"{name}: not in the latest snapshot"
    load = " ".join(f"{v:.2f}" for v in node.load) if node.load else NA
    lines = [
        f"{node.name}  {node.state}  ·  {node.address or node.transport}  ·  "
        f"{f.os_arch(node.os, node.arch)}  ·  python {node.python or NA}  ·  "
        f"tags {', '.join(node.tags) or NA}",
        f"{node.cores or NA} cores · workers {f.workers(node.workers_busy, node.workers)} busy"
        f" · {node.in_flight} chunks in flight · {node.chunks_done} done"
        f" · {f.rate(node.items_per_s)} items/s · {node.errors} errors",
        f"load {load} · metrics from {node.metrics_source or NA}",
    ]
    if node.packages:
        lines.append(f"packages: {node.packages}")
    if node.error:
        lines.append(f"error: {node.error}")
    return "\n".join(lines)


class NodeScreen(Screen):
    """Everything the console knows about one node."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node_name = node
        """The node shown."""
        self._node: Optional[NodeSnapshot] = None
        self._chunks: Tuple[ChunkRecord, ...] = ()
        self._log_lines: Tuple[str, ...] = ()
        self._heading = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="node-heading")
        with Horizontal(id="node-body"):
            with VerticalScroll(id="node-cores"):
                yield CoreBars()
            yield DataTable(id="node-chunks", cursor_type="none")
        yield Log(id="node-log", max_lines=1000)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.node_name
        self.query_one("#node-cores").border_title = "CPU per core · memory"
        self.query_one("#node-log").border_title = "agent log"
        chunks = self.query_one("#node-chunks", DataTable)
        chunks.border_title = "recent chunks"
        for label in ("chunk", "items", "seconds", "outcome"):
            chunks.add_column(label, key=label)
        self.watch(self.app, "snapshot", self.show_snapshot)

    def show_snapshot(self, snapshot: Optional[ClusterSnapshot]) -> None:
        """Redraw from the node's entry in `snapshot` (only the parts that changed)."""
        node = None
        for candidate in snapshot.nodes if snapshot else ():
            if candidate.name == self.node_name:
                node = candidate
                break
        if node is not None and node == self._node:
            return
        self._node = node
        heading = node_heading(node, self.node_name)
        if heading != self._heading:
            self._heading = heading
            self.query_one("#node-heading", Static).update(Text(heading))
        self.query_one(CoreBars).node = node
        self._show_chunks(node.recent_chunks if node else ())
        self._show_log(node.log if node else ())

    def _show_chunks(self, chunks: Tuple[ChunkRecord, ...]) -> None:
        if chunks == self._chunks:
            return
        self._chunks = chunks
        table = self.query_one("#node-chunks", DataTable)
        table.clear()
        for record in reversed(chunks):
            table.add_row(
                str(record.chunk), str(record.items), f"{record.seconds:.2f}", record.outcome
            )

    def _show_log(self, lines: Tuple[str, ...]) -> None:
        reset, fresh = f.new_lines(self._log_lines, lines)
        self._log_lines = lines
        log = self.query_one(Log)
        if reset:
            log.clear()
        if fresh:
            log.write_lines(fresh)
