"""`console run`: the job without the dashboard.

On a terminal, a live view redrawn from snapshots a few times a second: the
overall bar, items/s, ETA, and a line per node with its state, CPU and chunks.
Off a terminal, one plain sentence per event that matters (a node up, lost or
failed; a chunk failed for good) and a progress line every few seconds. Either
way a summary table at the end. Reads `ClusterSnapshot`s only.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from console import format as f
from console.snapshot import ClusterSnapshot, JobSnapshot, NodeSnapshot

__all__ = ["render_live", "render_summary", "PlainReporter", "watch", "progress_line"]

def progress_line(job: JobSnapshot, nodes_up: int) -> str:
    """One sentence of progress, for logs."""
    total = job.items_total or 0
    percent = 100.0 * job.items_done / total if total else 0.0
    return (f"{job.name}: {job.items_done}/{total} items ({percent:.0f}%), {f.rate(job.items_per_s)} items/s, "
            f"{nodes_up} node(s) up, {job.chunks_failed} chunk(s) failed, ETA {f.duration(job.eta_s)}")


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


def render_summary(document: Dict, snapshot: ClusterSnapshot) -> RenderableType:
    """The table printed when the job ends, from the results document."""
    table = Table(title=f"{document['job']}: {document['status']} in {f.duration(document['elapsed_s'])}",
                  header_style="bold")
    for column in ("node", "chunks", "items", "busy s", "errors", "state"):
        table.add_column(column, justify="left" if column in ("node", "state") else "right")
    errors = {n.name: n for n in snapshot.nodes}
    for name, share in document["nodes"].items():
        node = errors.get(name)
        table.add_row(name, str(share["chunks"]), f"{share['items']:,}", f"{share['busy_seconds']:.1f}",
                      str(node.errors if node else 0), node.state if node else "n/a")
    chunks = document["chunks"]
    lines: List[RenderableType] = [table, Text(
        f"chunks: {chunks['done']} done, {chunks['failed']} failed of {chunks['total']}; "
        f"{document['retried_attempts']} attempt(s) retried"
    )]
    for failure in document["failures"]:
        if failure["error"] == document.get("mistake"):
            continue  # said once, below
        lines.append(Text(f"chunk {failure['chunk']} failed for good on {failure['node']} "
                          f"(attempt {failure['attempt']}): {failure['error']}", style="red"))
    for node in snapshot.nodes:
        if node.state == "failed" and node.error:
            lines.append(Text(node.error, style="red"))
        elif node.state in ("connecting", "bootstrapping"):
            lines.append(Text(f"{node.name} ({node.address or 'local'}): was still {node.state} when the job "
                              "ended and took no part.", style="yellow"))
    failed = {node.name for node in snapshot.nodes if node.state == "failed"}
    for name, sentence in document.get("node_errors", {}).items():
        if name not in failed:  # sat the job out: no wheels fit its platform
            lines.append(Text(sentence, style="yellow"))
    if snapshot.job is not None and snapshot.job.answer is not None:
        lines.insert(1, Text.assemble(("answer: ", "bold"), snapshot.job.answer))
    if document.get("mistake"):
        lines.append(Text(f"stopped: {document['mistake']}", style="bold red"))
    if document.get("reason"):
        lines.append(Text(f"stopped: {document['reason']}", style="red"))
    if document.get("console_error"):
        lines.append(Text(f"error: {document['console_error']}", style="bold red"))
    return Group(*lines)


LOG_TAIL = 5
"""Lines of a node's log shown in plain output when it is lost or fails."""


class PlainReporter:
    """Sentences for a log: each state change once, progress every `every` seconds."""

    def __init__(self, write: Callable[[str], None], every: float = 2.0) -> None:
        self.write = write
        self.every = every
        self._states: Dict[str, str] = {}
        self._failures = 0
        self._next = 0.0

    def report(self, snapshot: ClusterSnapshot, now: float) -> None:
        """Write what changed since the last report."""
        for node in snapshot.nodes:
            before = self._states.get(node.name)
            if before != node.state:
                self._states[node.name] = node.state
                if node.state == "ready" and before in ("busy", "draining"):
                    continue
                if node.state in ("ready", "lost", "failed", "draining"):
                    detail = f": {node.error}" if node.error and node.state in ("lost", "failed") else ""
                    self.write(f"node {node.name} is {node.state}{detail}")
                if node.state in ("lost", "failed"):  # what the node said last: often why it went
                    for line in node.log[-LOG_TAIL:]:
                        self.write(f"  {node.name} log: {line}")
        for failure in snapshot.failures[self._failures:]:
            if failure.final:
                self.write(f"chunk {failure.chunk} failed for good on {failure.node} "
                           f"(attempt {failure.attempt}): {failure.error}")
        self._failures = len(snapshot.failures)
        if snapshot.job is not None and now >= self._next:
            self.write(progress_line(snapshot.job, snapshot.nodes_up))
            self._next = now + self.every


def watch(source: Callable[[], ClusterSnapshot], done: Callable[[float], bool], console: Console) -> ClusterSnapshot:
    """Show progress until `done(wait)` says the job ended; the last snapshot."""
    if console.is_terminal:
        with Live(render_live(source()), console=console, refresh_per_second=4, transient=False) as live:
            while not done(0.25):
                live.update(render_live(source()))
            snapshot = source()
            live.update(render_live(snapshot))
            return snapshot
    reporter = PlainReporter(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    while not done(0.5):
        reporter.report(source(), time.monotonic())
    snapshot = source()
    reporter.report(snapshot, float("inf"))
    return snapshot
