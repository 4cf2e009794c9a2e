"""Bringing up 2 nodes against 20: `console bootstrap` over real sshd hosts in namespaces.

Nodes are handled in parallel, so 20 should take about as long as 2. All the
"nodes" share this machine's cores, so the 20-node run also pays for 20 sshd
logins, shells and agent starts on them; on a real cluster each node pays only
for its own. So besides wall times this prints the overlap, the sum of the
per-node times over the wall time: 20 means fully parallel, 1 means serial.
Runs as root (network namespaces); sizes are interleaved over repetitions.

    sudo python3 bench/bringup.py [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

sys.path.insert(0, str(ROOT))

import netcluster  # noqa: E402
from console.bringup import bootstrap_nodes  # noqa: E402
from console.inventory import load_inventory  # noqa: E402


def bootstrap(inventory: Path) -> tuple:
    """(wall seconds, sum of per-node seconds) of one `console bootstrap`."""
    nodes = load_inventory(inventory).nodes
    started = time.perf_counter()
    reports = bootstrap_nodes(nodes)
    wall = time.perf_counter() - started
    failed = [r.error for r in reports if r.error]
    if failed:
        sys.exit("bootstrap failed: " + " ".join(failed))
    return wall, sum(r.seconds for r in reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    reason = netcluster.skip_reason()
    if reason:
        sys.exit(reason)
    sizes = (2, 20)
    with tempfile.TemporaryDirectory() as work:
        clusters = {n: netcluster.NetCluster(Path(work) / f"c{n}", n=n).start() for n in sizes}
        try:
            inventories = {n: c.write_inventory(Path(work) / f"inv{n}.toml") for n, c in clusters.items()}
            first = {n: bootstrap(inventories[n]) for n in sizes}
            times = {n: [] for n in sizes}
            for _ in range(args.reps):
                for n in sizes:
                    times[n].append(bootstrap(inventories[n]))
        finally:
            for cluster in clusters.values():
                cluster.close()
    for n in sizes:
        walls = [wall for wall, _ in times[n]]
        overlap = [total / wall for wall, total in times[n]]
        print(f"{n:>2} nodes: first bootstrap (uploads) {first[n][0]:.2f}s; "
              f"cached: median {statistics.median(walls):.2f}s "
              f"(min {min(walls):.2f}, max {max(walls):.2f}); overlap median {statistics.median(overlap):.1f}")
    ratios = [b[0] / a[0] for a, b in zip(times[2], times[20])]
    print(f"20 nodes / 2 nodes: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
