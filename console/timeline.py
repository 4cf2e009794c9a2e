"""`console timeline RESULTS.json`: where a job's time went, as a task-stream picture.

One lane per node and worker, each chunk attempt a bar from its start to its
end (seconds from the job's start, as the results file's "attempts" records
them), coloured by what became of it: done, failed, timed out, lost with its
node, a losing duplicate. Needs matplotlib, the optional `[plot]` extra; the
figure is built by `timeline_figure` (tested on its data) and saved as a PNG.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

from console.errors import UsageError

__all__ = ["OUTCOME_COLOURS", "lanes", "timeline_figure", "write_timeline"]

OUTCOME_COLOURS = {
    "done": "#2e8b57", "duplicate": "#9fd3b5", "error": "#d62728", "mistake": "#8b0000", "refused": "#8b0000",
    "timeout": "#ff7f0e", "died": "#9467bd", "lost": "#7f7f7f", "cancelled": "#c7c7c7",
}
"""Bar colour per attempt outcome."""
INSTALL = ('console timeline draws with matplotlib, an optional extra: pip install -e ".[plot]" '
           '(or pip install matplotlib).')


def lanes(attempts: List[Dict[str, Any]]) -> List[str]:
    """The figure's lanes, "node/worker" or "node cut short", in node then worker order."""
    def key(lane: str) -> Tuple[str, int, str]:
        node, _, worker = lane.replace(" cut short", "/").partition("/")
        return (node, int(worker) if worker.isdigit() else 1 << 30, worker)

    return sorted({_lane(a) for a in attempts}, key=key)


def _lane(attempt: Dict[str, Any]) -> str:
    """"node/worker"; an attempt cut short before its worker answered (a losing copy, a lost node) has none."""
    worker = attempt.get("worker")
    return f"{attempt['node']}/{worker}" if worker not in (None, "") else f"{attempt['node']} cut short"


def read_results(path: Path) -> Dict[str, Any]:
    """A results file with its attempts; UsageError naming the file otherwise."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror or exc}).") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not a results file (not JSON: {exc}).") from None
    if not isinstance(document, dict) or not isinstance(document.get("attempts"), list):
        raise UsageError(f"{path} records no chunk attempts; run the job again with this console to get them.")
    return document


def timeline_figure(document: Dict[str, Any]) -> Any:
    """The task-stream figure of a results document (a matplotlib Figure)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise UsageError(INSTALL) from None
    attempts = document["attempts"]
    names = lanes(attempts)
    row = {lane: index for index, lane in enumerate(names)}
    figure = Figure(figsize=(10, 1.2 + 0.35 * max(len(names), 1)), layout="constrained")
    axes = figure.add_subplot()
    by_outcome: Dict[str, List[Tuple[int, float, float]]] = {}
    for attempt in attempts:
        start, end = float(attempt["start_s"]), float(attempt["end_s"])
        by_outcome.setdefault(attempt["outcome"], []).append((row[_lane(attempt)], start, max(end - start, 0.002)))
    for outcome, bars in sorted(by_outcome.items()):
        for lane_index in sorted({lane for lane, _, _ in bars}):
            spans = [(start, width) for lane, start, width in bars if lane == lane_index]
            axes.broken_barh(spans, (lane_index - 0.4, 0.8), facecolors=OUTCOME_COLOURS.get(outcome, "#333333"),
                             edgecolor="white", linewidth=0.3, label=outcome)
    axes.set_yticks(range(len(names)), names)
    axes.set_ylim(-0.6, len(names) - 0.4)
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the job started")
    axes.set_xlim(0, max([float(a["end_s"]) for a in attempts] + [float(document.get("elapsed_s") or 0), 0.1]))
    axes.set_title(f"{document.get('job', 'job')}: {document.get('status', '')}, "
                   f"{len(attempts)} chunk attempts in {len(names)} lanes")
    axes.legend(handles=[Patch(color=OUTCOME_COLOURS.get(o, "#333333"), label=o) for o in sorted(by_outcome)],
                loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    axes.grid(axis="x", alpha=0.3)
    return figure


def write_timeline(results: Path, output: Path) -> int:
    """Draw RESULTS' timeline into OUTPUT (a PNG); the number of lanes."""
    document = read_results(results)
    figure = timeline_figure(document)
    try:
        figure.savefig(output, dpi=110)
    except OSError as exc:
        raise UsageError(f"cannot write {output} ({exc.strerror or exc}).") from None
    return len(lanes(document["attempts"]))
