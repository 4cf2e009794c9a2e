"""The headless output as plain objects: rendered into a string console, no cluster running."""

import io

from rich.console import Console

from console.format import duration
from console.headless import PlainReporter, plain_summary, progress_line, summarize
from console.liveview import render_live, render_summary
from console.snapshot import ClusterSnapshot, FailureRecord, JobSnapshot, NodeSnapshot

JOB = JobSnapshot(name="factorize", status="running", items_total=1000, items_done=450, chunks_total=20,
                  chunks_queued=7, chunks_in_flight=4, chunks_done=9, chunks_failed=1, elapsed_s=12.0,
                  items_per_s=37.5, eta_s=14.7)
WS1 = NodeSnapshot(name="ws-1", transport="ssh", address="10.0.0.11:22", tags=(), state="busy", workers=4,
                   workers_busy=4, cpu_percent=97.0, chunks_done=7, items_per_s=30.0)
PI3 = NodeSnapshot(name="pi-3", transport="ssh", address="10.0.0.23:22", tags=("pi",), state="lost",
                   error="pi-3 (10.0.0.23:22): no answer within 10 s.")
SNAPSHOT = ClusterSnapshot(t=0.0, nodes=(WS1, PI3), job=JOB, failures=(
    FailureRecord(3, "ws-1", "ZeroDivisionError: division by zero", "Traceback...", 3, True, 0.0),))


def render(renderable, width=100):
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def test_duration_and_progress_line():
    assert [duration(s) for s in (None, 4.4, 65, 3725)] == ["n/a", "4s", "1m05s", "1h02m"]
    assert progress_line(JOB, 1) == ("factorize: 450/1000 items (45%), 37.5 items/s, 1 node(s) up, "
                                     "1 chunk(s) failed, ETA 15s")


def test_live_view_has_the_bar_rates_and_a_line_per_node():
    text = render(render_live(SNAPSHOT))
    assert "450/1,000 items" in text and "37.5/s" in text and "ETA 15s" in text and "1 failed" in text
    lines = text.splitlines()
    ws1 = next(line for line in lines if line.startswith("ws-1"))
    assert ws1.split() == ["ws-1", "busy", "97%", "4/4", "7", "30.0", "0"]
    pi3 = next(line for line in lines if line.startswith("pi-3"))
    assert pi3.split() == ["pi-3", "lost", "n/a", "n/a", "0", "0", "0"]


def test_plain_reporter_says_each_change_once():
    lines = []
    reporter = PlainReporter(lines.append, every=2.0)
    reporter.report(SNAPSHOT, now=0.0)
    reporter.report(SNAPSHOT, now=1.0)
    assert lines == [
        "node pi-3 is lost: pi-3 (10.0.0.23:22): no answer within 10 s.",
        "chunk 3 failed for good on ws-1 (attempt 3): ZeroDivisionError: division by zero",
        progress_line(JOB, 1),
    ]
    reporter.report(SNAPSHOT, now=2.5)
    assert lines[-1] == progress_line(JOB, 1) and len(lines) == 4


def test_plain_reporter_shows_the_last_log_lines_of_a_node_that_is_lost():
    lines = []
    talkative = PI3._replace(log=tuple(f"line {i}" for i in range(8)))
    PlainReporter(lines.append).report(ClusterSnapshot(t=0.0, nodes=(WS1, talkative), job=JOB), now=0.0)
    assert lines[:6] == ["node pi-3 is lost: pi-3 (10.0.0.23:22): no answer within 10 s."] + [
        f"  pi-3 log: line {i}" for i in range(3, 8)]


def test_plain_reporter_says_a_loss_it_did_not_sample_in_the_lost_state():
    """Lost and already reconnecting between two reports: the count of losses says it happened, and why."""
    lines = []
    reporter = PlainReporter(lines.append, every=60.0)
    up = PI3._replace(state="ready", error=None)
    reporter.report(ClusterSnapshot(t=0.0, nodes=(up,)), now=0.0)
    reconnecting = up._replace(state="connecting", losses=1,
                                       last_loss="pi-3: the agent's stream closed (reconnecting: attempt 1 of 3)")
    reporter.report(ClusterSnapshot(t=1.0, nodes=(reconnecting,)), now=1.0)
    reporter.report(ClusterSnapshot(t=2.0, nodes=(reconnecting,)), now=2.0)
    reporter.report(ClusterSnapshot(t=3.0, nodes=(reconnecting._replace(state="ready"),)), now=3.0)
    assert lines == ["node pi-3 is ready",
                     "node pi-3 is lost: pi-3: the agent's stream closed (reconnecting: attempt 1 of 3)",
                     "node pi-3 is ready"]


def test_summary_names_failures_and_failed_nodes():
    document = {"job": "factorize", "status": "failed", "elapsed_s": 12.3,
                "chunks": {"total": 20, "done": 19, "failed": 1}, "retried_attempts": 2,
                "nodes": {"ws-1": {"chunks": 19, "items": 950, "busy_seconds": 40.25}},
                "failures": [{"chunk": 3, "node": "ws-1", "attempt": 3, "error": "ZeroDivisionError: x"}]}
    failed = NodeSnapshot(name="pi-3", transport="ssh", address="10.0.0.23:22", tags=(), state="failed",
                          error="pi-3 (10.0.0.23:22): no usable Python.")
    summary = summarize(document, ClusterSnapshot(0.0, (WS1, failed)))
    text = render(render_summary(summary), width=120)
    assert "factorize: failed in 12s" in text
    assert "chunks: 19 done, 1 failed of 20; 2 attempt(s) retried" in text
    assert "chunk 3 failed for good on ws-1 (attempt 3): ZeroDivisionError: x" in text
    assert "pi-3 (10.0.0.23:22): no usable Python." in text
    assert plain_summary(summary) == [
        "factorize: failed in 12s",
        "node  chunks  items  busy s  errors  state",
        "ws-1      19    950    40.2       0  busy",
        "chunks: 19 done, 1 failed of 20; 2 attempt(s) retried",
        "chunk 3 failed for good on ws-1 (attempt 3): ZeroDivisionError: x",
        "pi-3 (10.0.0.23:22): no usable Python.",
    ]


def test_plain_summary_puts_the_answer_after_the_table_and_wraps_nothing():
    document = {"job": "sum", "status": "ok", "elapsed_s": 1.0, "chunks": {"total": 1, "done": 1, "failed": 0},
                "retried_attempts": 0, "nodes": {"a-node-with-a-long-name": {"chunks": 1, "items": 12345,
                                                                           "busy_seconds": 0.04}},
                "failures": []}
    answer = "x" * 300
    job = JOB._replace(answer=answer)
    lines = plain_summary(summarize(document, ClusterSnapshot(0.0, (), job=job)))
    assert lines[1:4] == ["node                     chunks   items  busy s  errors  state",
                          "a-node-with-a-long-name       1  12,345     0.0       0  n/a",
                          f"answer: {answer}"]
