"""Flat as nodes are added: the console dispatching to 10 and to 100 local agents (1 worker each).

Each repetition brings every cluster up afresh and runs the same job of
one-item trivial chunks on each (100,000 by default: some 5 s of dispatch, so
the job's start on each node is not most of the figure), interleaved, once every agent is up: the
job runs on the warm pools the agents started with, as a `console run` does
(a second job on the same agents would spawn a fresh pool per agent, and
spawning 100 interpreters on a few cores is not dispatch).
Each run is a process of its own (spawned), so its RSS is one console's running
that one job, not what earlier runs left in the heap.
Prints per cluster size: chunks per second over the whole job and from 20 %
to 80 % of it done (the dispatch rate once every node runs, apart from the
job's start on each node and its tail), the time to the first 1 % done, CPU
seconds per 1,000 chunks of the console's own process and of the agents and
their workers (which share this machine's cores with it), and the console's
RSS. The dispatch rate with 100 agents should be no lower than with 10.
Each local run is followed by bench/trios.py at the same size: what this
machine itself loses going from 10 to 100 process trios of the same shape.

`--ssh N` adds N SSH nodes in network namespaces (root, sshd), 1 worker each.

    python3 bench/scale.py [--reps 3] [--chunks 100000] [--sizes 10,100] [--ssh 30]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from console.cluster import Cluster  # noqa: E402
from console.inventory import Node, load_inventory  # noqa: E402
from console.jobspec import load_job  # noqa: E402
import trios  # noqa: E402

TRIO_ITEMS = 300_000
"""Items through the bare process trios after each local run (about a second at 10 trios here)."""


BRING_UP_AT_ONCE = 10
"""Nodes brought up at a time: 30 SSH "machines" sharing this machine's 2 cores, all handshaking and starting
their workers at once, left some first commands waiting past their 10 s (the node then fails); the bring-up
is not what is measured."""


def bring_up(nodes: list) -> Cluster:
    cluster = Cluster(nodes)
    names = [node.name for node in nodes]
    for first in range(0, len(names), BRING_UP_AT_ONCE):
        cluster.bootstrap(names[first:first + BRING_UP_AT_ONCE])
        _wait_ready(cluster, names[:first + BRING_UP_AT_ONCE])
    return cluster


def _wait_ready(cluster: Cluster, names: list) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        states = [cluster.sessions[name].state for name in names]
        if all(state == "ready" for state in states):
            return
        if "failed" in states:
            break
        time.sleep(0.2)
    errors = "; ".join(f"{name}: {s.state} ({s.error})" for name, s in cluster.sessions.items() if s.state != "ready")
    cluster.close()
    raise SystemExit(f"not every node came up: {errors}")


def tree_cpu(process: psutil.Process) -> float:
    """CPU seconds used so far by a process's descendants: the local agents and their workers, with the workers
    an agent has ended and reaped (a job's pool goes with the job). An SSH node's agent is sshd's child, not
    counted."""
    used = 0.0
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            used += times.user + times.system + times.children_user + times.children_system
    return used


class Progress:
    """Chunks done over time, sampled every 5 ms on a thread of its own while a job runs."""

    def __init__(self, cluster: Cluster) -> None:
        self.samples: List[Tuple[float, int]] = []
        self._cluster = cluster
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "Progress":
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            job = self._cluster.job
            if job is not None:
                self.samples.append((time.perf_counter(), job.scheduler.counts["done"]))

    def when(self, done: int) -> float:
        """Seconds from the job's start until `done` chunks were done (the first sample at or past it)."""
        return next(t for t, d in self.samples if d >= done) - self.started

    def steady_rate(self, chunks: int) -> float:
        """Chunks per second from 20 % to 80 % of the job done: the dispatch rate once every node runs, without
        the job's start on each node and its tail."""
        return 0.6 * chunks / (self.when(int(0.8 * chunks)) - self.when(int(0.2 * chunks)))


def one_run(cluster: Cluster, job: Path, chunks: int) -> tuple:
    """(chunks per second over the whole job, chunks per second from 20 % to 80 % done, seconds to the first
    1 % done, console CPU seconds per 1,000 chunks, the agents' and workers' CPU seconds per 1,000 chunks (None
    for SSH nodes), console RSS MB)."""
    me = psutil.Process()
    cpu, agents_cpu = me.cpu_times(), tree_cpu(me)
    with Progress(cluster) as progress:
        cluster.start_job(load_job(job))
        status = cluster.wait_job(600)
    seconds = time.perf_counter() - progress.started
    assert status == "ok", cluster.job.document if cluster.job else status
    after = me.cpu_times()
    used = (after.user - cpu.user) + (after.system - cpu.system)
    local = all(session.node.transport == "local" for session in cluster.sessions.values())
    agents_used = (tree_cpu(me) - agents_cpu) / chunks * 1000 if local else None
    return (chunks / seconds, progress.steady_rate(chunks), progress.when(chunks // 100), used / chunks * 1000,
            agents_used, me.memory_info().rss / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--ssh", type=int, default=0, help="also N SSH nodes in network namespaces")
    args = parser.parse_args()
    sizes: list = [int(s) for s in args.sizes.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    job = work / "trivial.toml"
    job.write_text(f'[job]\nname = "trivial"\nfunction = "burn:square"\nfiles = ["{HERE / "burn.py"}"]\n'
                   f'chunk_size = 1\nreduce = "sum"\n[input]\nrange = [0, {args.chunks}]\n'
                   f'[output]\npath = "{work / "trivial.json"}"\n')
    with contextlib.ExitStack() as stack:
        node_sets = {size: [Node(f"a{i:03d}", transport="local", workers=1) for i in range(size)] for size in sizes}
        if args.ssh:
            sys.path.insert(0, str(HERE.parent / "tests"))
            import netcluster

            hosts = stack.enter_context(netcluster.net_cluster(work / "ns", n=args.ssh))
            inventory = hosts.write_inventory(work / "ssh.toml",
                                              overrides={f"node{i + 1}": {"workers": 1} for i in range(args.ssh)})
            node_sets[f"{args.ssh} ssh"] = list(load_inventory(inventory).nodes)
            sizes.append(f"{args.ssh} ssh")
        run_sizes(args, sizes, node_sets, job)


def measured_run(nodes: list, job: Path, chunks: int) -> Tuple[float, tuple]:
    """(seconds to bring the cluster up, `one_run`'s figures): the target of a process of its own."""
    started = time.perf_counter()
    cluster = bring_up(nodes)
    up = time.perf_counter() - started
    try:
        return up, one_run(cluster, job, chunks)
    finally:
        cluster.close()


def run_sizes(args: argparse.Namespace, sizes: list, node_sets: dict, job: Path) -> None:
    figures = {size: [] for size in sizes}
    trio_rates = {size: [] for size in sizes if isinstance(size, int)}
    spawn = multiprocessing.get_context("spawn")
    for rep in range(args.reps):
        for size in sizes:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as fresh:
                up, measured = fresh.submit(measured_run, node_sets[size], job, args.chunks).result()
            figures[size].append(measured)
            rate, steady, first, cpu, agents_cpu, rss = figures[size][-1]
            print(f"  rep {rep + 1}, {size} agents (up in {up:.1f} s): {rate:,.0f} chunks/s over the job, "
                  f"{steady:,.0f} from 20 % to 80 % done, first 1 % in {first:.2f} s; CPU s per 1,000 chunks "
                  f"{cpu:.2f} console, {_cpu(agents_cpu)} agents and workers; RSS {rss:.0f} MB")
            if size in trio_rates:
                trio_rates[size].append(trios.run(size, TRIO_ITEMS))
                print(f"  rep {rep + 1}, {size} bare process trios: {trio_rates[size][-1]:,.0f} items/s")
    summary = {}
    for size in sizes:
        rows = figures[size]
        summary[str(size)] = {"chunks_per_s": statistics.median(f[0] for f in rows),
                              "steady_chunks_per_s": statistics.median(f[1] for f in rows),
                              "first_percent_s": statistics.median(f[2] for f in rows),
                              "cpu_s_per_1000": statistics.median(f[3] for f in rows),
                              "agents_cpu_s_per_1000": _median(f[4] for f in rows),
                              "rss_mb": max(f[5] for f in rows)}
        if trio_rates.get(size):
            summary[str(size)]["trio_items_per_s"] = statistics.median(trio_rates[size])
        row = summary[str(size)]
        print(f"{size} agents: median {row['chunks_per_s']:,.0f} chunks/s over the job ({_spread(rows, 0)}), "
              f"{row['steady_chunks_per_s']:,.0f} from 20 % to 80 % done ({_spread(rows, 1)}), first 1 % in "
              f"{row['first_percent_s']:.2f} s; CPU s per 1,000 chunks {row['cpu_s_per_1000']:.2f} console, "
              f"{_cpu(row['agents_cpu_s_per_1000'])} agents and workers; RSS {row['rss_mb']:.0f} MB")
    local = [size for size in sizes if size in trio_rates]
    if len(local) >= 2:
        for what, at in (("dispatch rate from 20 % to 80 % done", 1), ("over the whole job", 0)):
            ratios = _ratios([f[at] for f in figures[local[0]]], [f[at] for f in figures[local[1]]])
            print(f"{local[1]} / {local[0]} agents, {what}: median {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
        ratios = _ratios(trio_rates[local[0]], trio_rates[local[1]])
        print(f"{local[1]} / {local[0]} bare process trios (this machine's own loss): median "
              f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    from record import record

    record("scale", summary)


def _ratios(before: List[float], after: List[float]) -> List[float]:
    return [b / a for a, b in zip(before, after)]


def _spread(rows: list, at: int) -> str:
    return f"min {min(f[at] for f in rows):,.0f}, max {max(f[at] for f in rows):,.0f}"


def _median(values: Iterable[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _cpu(seconds: Optional[float]) -> str:
    return "(not counted)" if seconds is None else f"{seconds:.2f}"


if __name__ == "__main__":
    main()
