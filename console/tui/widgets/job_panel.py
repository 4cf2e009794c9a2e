"""The job panel: overall progress, rate, ETA, elapsed, chunk counts, each node's share, and the answer.

Reads the `JobSnapshot` (and the nodes, for the shares) from the bound
`ClusterSnapshot` and rewrites a line only when its text changed. Never calls
the cluster and never reads a clock: elapsed and ETA come from the snapshot.
Composed by `console.tui.app.ConsoleApp`.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import ProgressBar, Static

from console.snapshot import NA, ClusterSnapshot, JobSnapshot
from console import format as f

__all__ = ["JobPanel", "job_lines", "job_progress"]

_STATUS_CLASSES = ("-running", "-ok", "-failed", "-cancelled", "-idle")


def job_lines(snapshot: Optional[ClusterSnapshot], hint: str) -> Dict[str, str]:
    """The panel's text lines for `snapshot`: title, rates, times, chunks, shares."""
    job = snapshot.job if snapshot else None
    if job is None:
        return {"title": "No job yet", "rates": hint, "times": "", "chunks": "", "shares": "", "answer": ""}
    done = f"{job.items_done:,}" + (f" of {job.items_total:,}" if job.items_total else "")
    shares = f.work_shares(snapshot.nodes)
    chunks_total = "" if job.chunks_total is None else f"/{job.chunks_total}"
    return {
        "title": f"{job.name}  {job.status}",
        "rates": f"{done} items · {f.rate(job.items_per_s)} items/s",
        "times": f"elapsed {f.duration(job.elapsed_s)} · ETA {f.duration(job.eta_s)}",
        "chunks": (
            f"chunks {job.chunks_done}{chunks_total} done · {job.chunks_failed} failed · "
            f"{job.chunks_in_flight} in flight · {job.chunks_queued} queued"
        ),
        "shares": "share " + (" · ".join(f"{n} {s:.0%}" for n, s in shares) if shares else NA),
        "answer": f"answer {job.answer}" if job.answer is not None else "",
    }


def job_progress(job: Optional[JobSnapshot]) -> Tuple[Optional[float], float]:
    """(total, done) for the bar: items when their total is known, else chunks."""
    if job is None:
        return None, 0.0
    if job.items_total:
        return float(job.items_total), float(job.items_done)
    if job.chunks_total:
        return float(job.chunks_total), float(job.chunks_done)
    return None, 0.0


class JobPanel(Vertical):
    """The running or last job at a glance."""

    DEFAULT_CSS = """
    JobPanel { height: auto; }
    JobPanel > Static { height: 1; }
    """

    snapshot: var[Optional[ClusterSnapshot]] = var(None)
    """The latest cluster snapshot (bound to the app's)."""

    def __init__(self, hint: str = "", *, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self.hint = hint
        """What to say before the first job, e.g. "Press s to start a job"."""
        self._shown: Dict[str, str] = {}

    def watch_snapshot(self, snapshot: Optional[ClusterSnapshot]) -> None:
        if not self.is_mounted:
            return
        for key, text in job_lines(snapshot, self.hint).items():
            if self._shown.get(key) != text:
                self._shown[key] = text
                self.query_one(f"#job-{key}", Static).update(Text(text), layout=False)
        job = snapshot.job if snapshot else None
        status = f"-{job.status}" if job else "-idle"
        if not self.has_class(status):
            self.remove_class(*_STATUS_CLASSES)
            self.add_class(status)
        total, done = job_progress(job)
        bar = self.query_one(ProgressBar)
        bar.display = total is not None
        if total is not None and (bar.total != total or bar.progress != done):
            bar.update(total=total, progress=done)

    def compose(self) -> ComposeResult:
        yield Static(id="job-title")
        yield ProgressBar(show_eta=False, id="job-bar")
        for key in ("rates", "times", "chunks", "shares", "answer"):
            yield Static(id=f"job-{key}")

    def on_mount(self) -> None:
        self.border_title = "Job"
        self.watch_snapshot(self.snapshot)
