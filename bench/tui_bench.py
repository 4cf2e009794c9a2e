"""Benchmark the dashboard: 300 simulated nodes, a fresh snapshot each poll, the app run headless.

Drives `ConsoleApp.poll()` itself every `--interval` seconds (the app's own timer
is parked), lets the app repaint after each poll, and prints the process's CPU
use (process time over wall time) and the CPU cost of one poll+refresh cycle
(mean / p95), with the simulated cluster's own snapshot-building cost shown
apart. Every figure of every node moves on every call: the worst case. Touches
no network and no real cluster; run by hand, `python bench/tui_bench.py --seconds 15`.
`--live N` runs N real local agents (1 worker each) through a job instead and
prints the console process's CPU with the dashboard open against the same
cluster with no UI, measured in turn over the same job.
Most of a cycle is DataTable repainting the rows in view (any `update_cell`
invalidates its whole render cache), so the cost follows the terminal's height,
not the node count; the last line prints this machine's cost of one cell.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console.snapshot import (  # noqa: E402
    ChunkRecord,
    ClusterSnapshot,
    FailureRecord,
    JobSnapshot,
    NodeSnapshot,
)
from console.tui.app import ConsoleApp  # noqa: E402

KINDS = (
    ("linux", "x86_64", 16, ("linux", "fast")),
    ("linux", "aarch64", 8, ("linux", "arm")),
    ("linux", "armv7l", 4, ("pi", "arm")),
    ("windows", "AMD64", 8, ("windows",)),
)


class SimControl:
    """A `ClusterControl` over `n` made-up nodes whose figures move on every `snapshot()` call."""

    def __init__(self, n: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.n = n
        self.clock = clock
        self.start = clock()
        self.history: List[Deque[float]] = [deque(maxlen=60) for _ in range(n)]
        self.last_sample = -1
        self.failures: Deque[FailureRecord] = deque(maxlen=50)
        self.snapshot_seconds: List[float] = []

    def snapshot(self) -> ClusterSnapshot:
        began = time.perf_counter()
        t = self.clock() - self.start
        second = int(t)
        sample = second != self.last_sample
        self.last_sample = second
        nodes = []
        total_items = 0
        for i in range(self.n):
            os_name, arch, cores, tags = KINDS[i % len(KINDS)]
            cpu = 50.0 + 45.0 * math.sin(t * 0.7 + i)
            if sample:
                self.history[i].append(cpu)
            state = "lost" if i % 37 == 5 else "draining" if (second // 5 + i) % 97 == 0 else "busy"
            items = int(t * (40 + i % 50)) if state != "lost" else 1000
            total_items += items
            nodes.append(NodeSnapshot(
                name=f"node-{i:03d}", transport="ssh", address=f"10.0.{i // 250}.{i % 250}:22",
                tags=tags, state=state,
                error="no answer within 10 s (attempt 2 of 3)" if state == "lost" else None,
                os=os_name, arch=arch, python="3.11.7", cores=cores, workers=cores,
                workers_busy=0 if state == "lost" else cores - (second + i) % 2,
                cpu_percent=None if state == "lost" else cpu,
                cpu_per_core=None if state == "lost" else tuple(
                    50.0 + 45.0 * math.sin(t + i + c) for c in range(cores)),
                cpu_history=tuple(self.history[i]),
                mem_percent=40.0 + (i % 30), mem_total=cores * 2 * 1024**3,
                in_flight=cores * 2, chunks_done=items // 100, items_done=items,
                errors=(second + i) // 50 % 4, items_per_s=40.0 + i % 50 + math.sin(t + i),
                recent_chunks=(ChunkRecord(chunk=second, items=100, seconds=2.5, outcome="done"),),
                log=(f"chunk {second} done",),
            ))
        if sample and second % 2 == 0:
            self.failures.append(FailureRecord(
                chunk=second, node=f"node-{second % self.n:03d}", error="ValueError: bad item",
                traceback="Traceback (most recent call last):\nValueError: bad item\n",
                attempt=1, final=False, t=t))
        job = JobSnapshot(
            name="bench", status="running", items_total=10**9, items_done=total_items,
            chunks_total=10**7, chunks_queued=5000, chunks_in_flight=self.n * 16,
            chunks_done=total_items // 100, chunks_failed=len(self.failures), elapsed_s=t,
            items_per_s=total_items / max(t, 1e-3), eta_s=None)
        snapshot = ClusterSnapshot(t=time.time(), nodes=tuple(nodes), job=job,
                                   failures=tuple(self.failures))
        self.snapshot_seconds.append(time.perf_counter() - began)
        return snapshot

    def bootstrap(self, nodes: Optional[Sequence[str]] = None) -> None:
        """Nothing to do in a simulation."""

    def start_job(self, job_path: str) -> None:
        """Nothing to do in a simulation."""

    def cancel_job(self) -> None:
        """Nothing to do in a simulation."""

    def drain(self, node: str) -> None:
        """Nothing to do in a simulation."""

    def reconnect(self, node: str) -> None:
        """Nothing to do in a simulation."""

    def close(self) -> None:
        """Nothing to do in a simulation."""


def rich_cell_cost(samples: int = 2000) -> float:
    """Seconds rich takes here to render one padded `Text` cell: DataTable's unit of repaint work."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.style import Style
    from rich.text import Text
    from textual.renderables.styled import Styled

    console = Console(width=120)
    options = console.options.update_dimensions(14, 1).update(no_wrap=True)
    cell = Text("linux/x86_64")
    began = time.perf_counter()
    for _ in range(samples):
        styled = Styled(Padding(cell, (0, 1)), pre_style=Style(), post_style=Style())
        console.render_lines(styled, options)
    return (time.perf_counter() - began) / samples


def p95(values: Sequence[float]) -> float:
    """The 95th percentile of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


async def run(seconds: float, nodes: int, interval: float, size: Tuple[int, int]) -> Dict[str, float]:
    """Run the app for `seconds` and return the figures."""
    control = SimControl(nodes)
    app = ConsoleApp(control, clock=time.perf_counter, poll_interval=3600.0)
    cycles: List[float] = []
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        control.snapshot_seconds.clear()
        app.poll_seconds.clear()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        next_tick = wall0
        while time.perf_counter() - wall0 < seconds:
            began = time.process_time()
            app.poll()
            await pilot.pause()
            cycles.append(time.process_time() - began)
            next_tick += interval
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    build = control.snapshot_seconds
    return {
        "seconds": wall,
        "polls": len(cycles),
        "cpu_percent": 100.0 * cpu / wall,
        "ui_cpu_percent": 100.0 * (cpu - sum(build)) / wall,
        "cycle_mean_ms": 1000.0 * statistics.mean(cycles),
        "cycle_p95_ms": 1000.0 * p95(cycles),
        "poll_mean_ms": 1000.0 * statistics.mean(app.poll_seconds),
        "poll_p95_ms": 1000.0 * p95(app.poll_seconds),
        "snapshot_build_mean_ms": 1000.0 * statistics.mean(build),
    }


async def run_live(seconds: float, nodes: int, size: Tuple[int, int]) -> Dict[str, float]:
    """The console's process CPU over `seconds` with no UI, then over `seconds` with the dashboard open (its own
    poll timer), while `nodes` local agents run a job of ~50 ms chunks."""
    import tempfile

    from console.cluster import Cluster
    from console.inventory import Node

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import job_file, steps_for

    work = tempfile.TemporaryDirectory()
    job = job_file(Path(work.name), "live", [steps_for(50)] * int(seconds * 200), 1,
                   'chunk_function = "burn:burn"', "sum")
    cluster = Cluster([Node(f"n{i:03d}", transport="local", workers=1) for i in range(nodes)])
    try:
        cluster.bootstrap()
        deadline = time.monotonic() + 300
        while sum(s.state == "ready" for s in cluster.sessions.values()) < nodes and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        cluster.start_job(job)
        await asyncio.sleep(2.0)  # every node joined and busy
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        bare = 100.0 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        app = ConsoleApp(cluster)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            app.poll_seconds.clear()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            await asyncio.sleep(seconds)
            shown = 100.0 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        up = sum(n.state in ("ready", "busy") for n in cluster.snapshot().nodes)
        return {"bare_cpu_percent": bare, "ui_cpu_percent": shown, "nodes_up": up,
                "poll_mean_ms": 1000.0 * statistics.mean(app.poll_seconds), "polls": len(app.poll_seconds)}
    finally:
        cluster.close()
        work.cleanup()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, run the bench, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to run (default 15)")
    parser.add_argument("--nodes", type=int, default=300, help="simulated nodes (default 300)")
    parser.add_argument("--interval", type=float, default=0.25,
                        help="seconds between polls (default 0.25)")
    parser.add_argument("--size", default="120x40", help="terminal size, COLSxROWS (default 120x40)")
    parser.add_argument("--live", type=int, default=0, metavar="N",
                        help="N real local agents running a job instead of simulated nodes")
    args = parser.parse_args(argv)
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    if args.live:
        live = asyncio.run(run_live(args.seconds, args.live, (cols, rows)))
        print(f"{args.live} local agents ({live['nodes_up']:.0f} up) running a job, {args.seconds:g} s each way, "
              f"{cols}x{rows}")
        print(f"console process CPU, no UI:          {live['bare_cpu_percent']:5.1f} % of one core")
        print(f"console process CPU, dashboard open: {live['ui_cpu_percent']:5.1f} % of one core "
              f"({live['polls']:.0f} polls, {live['poll_mean_ms']:.2f} ms each, wall)")
        return 0
    figures = asyncio.run(run(args.seconds, args.nodes, args.interval, (cols, rows)))
    print(f"{args.nodes} nodes, a fresh snapshot every {args.interval:g} s, {cols}x{rows}, "
          f"{figures['seconds']:.1f} s, {figures['polls']:.0f} polls")
    print(f"process CPU:            {figures['cpu_percent']:5.1f} % of one core "
          f"({figures['ui_cpu_percent']:.1f} % without building the simulated snapshots)")
    print("poll+refresh cycle CPU: mean {cycle_mean_ms:6.2f} ms   p95 {cycle_p95_ms:6.2f} ms".format(**figures))
    print("  of which poll():      mean {poll_mean_ms:6.2f} ms   p95 {poll_p95_ms:6.2f} ms"
          " (snapshot + widget updates, wall)".format(**figures))
    print("  snapshot build:       mean {snapshot_build_mean_ms:6.2f} ms"
          " (the simulation, not the UI)".format(**figures))
    print(f"machine yardstick:      rich renders one Text table cell in {1e6 * rich_cell_cost():.0f} µs"
          " (the node table's cells cost ~60% of that; a repaint is (rows in view + 1) x 10 cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
