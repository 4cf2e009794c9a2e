"""`console run` off a terminal: plain sentences, and the summary as plain text.

One sentence per event that matters (a node up, lost or failed; a chunk failed
for good) and a progress line every few seconds, then the summary: the job's
table of nodes, its answer, and what went wrong. Plain lines for a log or a
pipe, never wrapped; no rich imported (it would cost a short job's `console
run` 30 ms of start-up on a small machine). On a terminal, console/liveview.py
draws the same from the same `Summary`. Reads `ClusterSnapshot`s only.
"""

from __future__ import annotations

import time
from typing import IO, Callable, Dict, List, NamedTuple, Optional, Tuple

from console import format as f
from console.snapshot import ClusterSnapshot, JobSnapshot, NodeSnapshot

__all__ = ["Summary", "summarize", "plain_summary", "PlainReporter", "PlainView", "progress_line"]


def progress_line(job: JobSnapshot, nodes_up: int) -> str:
    """One sentence of progress, for logs."""
    total = job.items_total or 0
    percent = 100.0 * job.items_done / total if total else 0.0
    return (f"{job.name}: {job.items_done}/{total} items ({percent:.0f}%), {f.rate(job.items_per_s)} items/s, "
            f"{nodes_up} node(s) up, {job.chunks_failed} chunk(s) failed, ETA {f.duration(job.eta_s)}")


SUMMARY_COLUMNS = ("node", "chunks", "items", "busy s", "errors", "state")
SUMMARY_LEFT = ("node", "state")
"""The summary table's columns set to the left; numbers go to the right."""


class Summary(NamedTuple):
    """What the end of a job shows, for either view."""

    title: str
    rows: Tuple[Tuple[str, ...], ...]
    """One per node, in SUMMARY_COLUMNS' order."""
    answer: Optional[str]
    notes: Tuple[Tuple[str, str], ...]
    """(sentence, style: "", "red", "yellow" or "bold red"), after the answer."""


def summarize(document: Dict, snapshot: ClusterSnapshot) -> Summary:
    """The summary of a job from its results document and the cluster's last snapshot."""
    nodes = {n.name: n for n in snapshot.nodes}
    rows = []
    for name, share in document["nodes"].items():
        node = nodes.get(name)
        rows.append((name, str(share["chunks"]), f"{share['items']:,}", f"{share['busy_seconds']:.1f}",
                     str(node.errors if node else 0), node.state if node else "n/a"))
    chunks = document["chunks"]
    notes: List[Tuple[str, str]] = [(f"chunks: {chunks['done']} done, {chunks['failed']} failed of "
                                     f"{chunks['total']}; {document['retried_attempts']} attempt(s) retried", "")]
    for failure in document["failures"]:
        if failure["error"] == document.get("mistake"):
            continue  # said once, below
        notes.append((f"chunk {failure['chunk']} failed for good on {failure['node']} "
                      f"(attempt {failure['attempt']}): {failure['error']}", "red"))
    for node in snapshot.nodes:
        if node.state == "failed" and node.error:
            notes.append((node.error, "red"))
        elif node.state in ("connecting", "bootstrapping"):
            notes.append((f"{node.name} ({node.address or 'local'}): was still {node.state} when the job "
                          "ended and took no part.", "yellow"))
    failed = {node.name for node in snapshot.nodes if node.state == "failed"}
    for name, sentence in document.get("node_errors", {}).items():
        if name not in failed:  # sat the job out: no wheels fit its platform
            notes.append((sentence, "yellow"))
    if document.get("mistake"):
        notes.append((f"stopped: {document['mistake']}", "bold red"))
    if document.get("reason"):
        notes.append((f"stopped: {document['reason']}", "red"))
    if document.get("console_error"):
        notes.append((f"error: {document['console_error']}", "bold red"))
    answer = snapshot.job.answer if snapshot.job is not None else None
    return Summary(f"{document['job']}: {document['status']} in {f.duration(document['elapsed_s'])}",
                   tuple(rows), answer, tuple(notes))


def plain_summary(summary: Summary) -> List[str]:
    """The summary as plain lines: the title, the nodes' table in aligned columns, the answer, the notes."""
    table = [SUMMARY_COLUMNS, *summary.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(SUMMARY_COLUMNS))]
    lines = [summary.title]
    for row in table:
        cells = (cell.ljust(width) if column in SUMMARY_LEFT else cell.rjust(width)
                 for column, cell, width in zip(SUMMARY_COLUMNS, row, widths))
        lines.append("  ".join(cells).rstrip())
    if summary.answer is not None:
        lines.append(f"answer: {summary.answer}")
    return lines + [sentence for sentence, _ in summary.notes]


LOG_TAIL = 5
"""Lines of a node's log shown in plain output when it is lost or fails."""


class PlainReporter:
    """Sentences for a log: each state change once, progress every `every` seconds."""

    def __init__(self, write: Callable[[str], None], every: float = 2.0) -> None:
        self.write = write
        self.every = every
        self._states: Dict[str, str] = {}
        self._losses: Dict[str, int] = {}
        self._failures = 0
        self._next = 0.0

    def report(self, snapshot: ClusterSnapshot, now: float) -> None:
        """Write what changed since the last report."""
        for node in snapshot.nodes:
            before = self._states.get(node.name)
            lost_unseen = node.losses > self._losses.get(node.name, 0) and node.state != "lost"
            self._losses[node.name] = node.losses
            if lost_unseen:  # lost and back to connecting (or up) between two reports: still worth its sentence
                self._went(node, "lost", node.last_loss)
            if before != node.state:
                self._states[node.name] = node.state
                if node.state == "ready" and before in ("busy", "draining"):
                    continue
                if node.state in ("lost", "failed"):
                    self._went(node, node.state, node.error)
                elif node.state in ("ready", "draining"):
                    self.write(f"node {node.name} is {node.state}")
        for failure in snapshot.failures[self._failures:]:
            if failure.final:
                self.write(f"chunk {failure.chunk} failed for good on {failure.node} "
                           f"(attempt {failure.attempt}): {failure.error}")
        self._failures = len(snapshot.failures)
        if snapshot.job is not None and now >= self._next:
            self.write(progress_line(snapshot.job, snapshot.nodes_up))
            self._next = now + self.every

    def _went(self, node: NodeSnapshot, state: str, why: Optional[str]) -> None:
        """A node is lost or failed: why, and what it said last (often the reason)."""
        self.write(f"node {node.name} is {state}" + (f": {why}" if why else ""))
        for line in node.log[-LOG_TAIL:]:
            self.write(f"  {node.name} log: {line}")


class PlainView:
    """`console run`'s output as plain lines on a stream that is not a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def line(self, text: str) -> None:
        """One line, as it is."""
        self._stream.write(text + "\n")
        self._stream.flush()

    def watch(self, source: Callable[[], ClusterSnapshot], done: Callable[[float], bool]) -> ClusterSnapshot:
        """Report progress until `done(wait)` says the job ended; the last snapshot."""
        reporter = PlainReporter(self.line)
        while not done(0.5):
            reporter.report(source(), time.monotonic())
        snapshot = source()
        reporter.report(snapshot, float("inf"))
        return snapshot

    def summary(self, summary: Summary) -> None:
        """The job's summary."""
        for text in plain_summary(summary):
            self.line(text)
