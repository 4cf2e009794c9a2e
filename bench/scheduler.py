"""Scheduler events per second with 3 and with 300 nodes, and a whole job past one room (pure logic, no I/O).

Every node holds `workers x prefetch` chunks; the loop answers chunks in the
order they were sent and counts how many events `Scheduler.handle` takes per
second. An event should cost the same whatever the number of nodes. `--big`
also runs a whole job of 1,000,000 chunks on 10,000 simulated nodes to its
end: events per second and the process's peak memory.

    python3 bench/scheduler.py [--events 20000] [--big]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from console.scheduler import ChunkFinished, NodeJoined, Scheduler, SendChunks  # noqa: E402


def events_per_second(nodes: int, events: int) -> float:
    scheduler = Scheduler(10_000_000, 10)
    out = scheduler.handle(*[NodeJoined(f"n{i}", 4, 0.0) for i in range(nodes)])
    pending = deque((o.node, c) for o in out if isinstance(o, SendChunks) for c in o.chunks)
    started = time.perf_counter()
    for n in range(events):
        node, order = pending.popleft()
        out = scheduler.handle(ChunkFinished(node, order.chunk, order.attempt, b"", 0.01, n * 1e-4))
        pending.extend((o.node, c) for o in out if isinstance(o, SendChunks) for c in o.chunks)
    return events / (time.perf_counter() - started)


def whole_job(nodes: int, chunks: int) -> tuple:
    """(events per second, peak RSS in MB) of a job of `chunks` one-item chunks on `nodes` nodes, to its end."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scheduler = Scheduler(chunks, 1)
    started = time.perf_counter()
    out = scheduler.handle(*[NodeJoined(f"n{i}", 4, 0.0) for i in range(nodes)])
    pending = deque((o.node, c) for o in out if isinstance(o, SendChunks) for c in o.chunks)
    events = nodes
    while pending:
        node, order = pending.popleft()
        out = scheduler.handle(ChunkFinished(node, order.chunk, order.attempt, b"", 0.01, events * 1e-5))
        pending.extend((o.node, c) for o in out if isinstance(o, SendChunks) for c in o.chunks)
        events += 1
    assert scheduler.status == "ok" and scheduler.items_done == chunks
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return events / seconds, peak / 1024, (peak - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="also a whole job: 1,000,000 chunks on 10,000 nodes")
    args = parser.parse_args()
    rates = {3: [], 300: []}
    for _ in range(args.reps):
        for nodes in rates:
            rates[nodes].append(events_per_second(nodes, args.events))
    for nodes, values in rates.items():
        print(f"{nodes:>3} nodes: median {statistics.median(values):,.0f} events/s "
              f"(min {min(values):,.0f}, max {max(values):,.0f})")
    ratios = [b / a for a, b in zip(rates[3], rates[300])]
    print(f"300 nodes / 3 nodes: median {statistics.median(ratios):.2f}")
    if args.big:
        rate, peak, grew = whole_job(10_000, 1_000_000)
        print(f"1,000,000 chunks on 10,000 nodes, to the end: {rate:,.0f} events/s; peak RSS {peak:,.0f} MB "
              f"({grew:,.0f} MB for the job)")


if __name__ == "__main__":
    main()
