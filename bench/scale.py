"""Flat as nodes are added: the console dispatching to 10 and to 100 local agents (1 worker each).

Both clusters are brought up once and kept; each repetition runs the same job
of one-item trivial chunks on each, interleaved, once every agent is up.
Prints per cluster size: chunks dispatched per second, the console's own CPU
seconds per 1,000 chunks (its process only, not the agents'), and its RSS.
The dispatch rate with 100 agents should be no lower than with 10.

`--ssh N` adds N SSH nodes in network namespaces (root, sshd), 1 worker each.

    python3 bench/scale.py [--reps 3] [--chunks 10000] [--sizes 10,100] [--ssh 30]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from console.cluster import Cluster  # noqa: E402
from console.inventory import Node, load_inventory  # noqa: E402
from console.jobspec import load_job  # noqa: E402


def bring_up(nodes: list) -> Cluster:
    cluster = Cluster(nodes)
    agents = len(nodes)
    cluster.bootstrap()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if all(s.state == "ready" for s in cluster.sessions.values()):
            return cluster
        time.sleep(0.2)
    raise SystemExit(f"only {sum(s.state == 'ready' for s in cluster.sessions.values())} of {agents} agents came up")


def one_run(cluster: Cluster, job: Path, chunks: int) -> tuple:
    """(chunks per second, console CPU seconds per 1,000 chunks, console RSS MB)."""
    me = psutil.Process()
    cpu = me.cpu_times()
    started = time.perf_counter()
    cluster.start_job(load_job(job))
    status = cluster.wait_job(600)
    seconds = time.perf_counter() - started
    assert status == "ok", cluster.job.document if cluster.job else status
    after = me.cpu_times()
    used = (after.user - cpu.user) + (after.system - cpu.system)
    return chunks / seconds, used / chunks * 1000, me.memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--ssh", type=int, default=0, help="also N SSH nodes in network namespaces")
    args = parser.parse_args()
    sizes: list = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    job = work / "trivial.toml"
    job.write_text(f'[job]\nname = "trivial"\nfunction = "burn:square"\nfiles = ["{HERE / "burn.py"}"]\n'
                   f'chunk_size = 1\nreduce = "sum"\n[input]\nrange = [0, {args.chunks}]\n'
                   f'[output]\npath = "{work / "trivial.json"}"\n')
    clusters = {}
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
        run_sizes(args, sizes, node_sets, clusters, job)


def run_sizes(args: argparse.Namespace, sizes: list, node_sets: dict, clusters: dict, job: Path) -> None:
    try:
        for size in sizes:
            started = time.perf_counter()
            clusters[size] = bring_up(node_sets[size])
            print(f"{size} agents up in {time.perf_counter() - started:.1f} s")
        figures = {size: [] for size in sizes}
        for rep in range(args.reps):
            for size in sizes:
                figures[size].append(one_run(clusters[size], job, args.chunks))
                rate, cpu, rss = figures[size][-1]
                print(f"  rep {rep + 1}, {size} agents: {rate:,.0f} chunks/s, {cpu:.2f} CPU s per 1,000 chunks, "
                      f"RSS {rss:.0f} MB")
    finally:
        for cluster in clusters.values():
            cluster.close()
    for size in sizes:
        rates = [r for r, _, _ in figures[size]]
        print(f"{size} agents: median {statistics.median(rates):,.0f} chunks/s (min {min(rates):,.0f}, max "
              f"{max(rates):,.0f}); {statistics.median(c for _, c, _ in figures[size]):.2f} console CPU s per "
              f"1,000 chunks; RSS {max(m for _, _, m in figures[size]):.0f} MB")
    from record import record

    record("scale", {str(size): {"chunks_per_s": statistics.median(r for r, _, _ in figures[size]),
                                 "cpu_s_per_1000": statistics.median(c for _, c, _ in figures[size]),
                                 "rss_mb": max(m for _, _, m in figures[size])} for size in sizes})
    if len(sizes) >= 2:
        ratios = [b[0] / a[0] for a, b in zip(figures[sizes[0]], figures[sizes[1]])]
        print(f"dispatch rate {sizes[1]} / {sizes[0]} agents: median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
