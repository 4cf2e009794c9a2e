"""The Python API (`console.connect`) against multiprocessing.Pool(2).map, whole processes, side by side.

Each side is a fresh `python` process running the same work, timed from
outside (interpreter start, imports, the cluster's or the pool's start, the
work, shutdown), interleaved over repetitions; the median ratio
pool_time / api_time is printed with its spread (1.0: as fast as Pool.map).

- tasks: 120 tasks of ~50 ms, `cluster.map(spin, ...)` (chunksize "auto") against `pool.map(spin, ...)`;
- trivial: 1,000,000 trivial items, `cluster.map(square, range(N), chunksize="auto")` against
  `pool.map(square, range(N))`;
- submits: 10,000 `cluster.submit(square, x)` calls, then their results, against the same on
  `concurrent.futures.ProcessPoolExecutor(2)` (Pool's counterpart for one call at a time).

The API side runs on the local node with 2 workers.

    python3 bench/api.py [--reps 5] [--tasks 120] [--task-ms 50] [--trivial 1000000] [--submits 10000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WORKERS = 2
SIDE = """
import sys
sys.path.insert(0, {here!r})
from burn import spin, square
kind, side, n, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fn, items = (spin, [steps] * n) if kind == "tasks" else (square, range(n))
if __name__ == "__main__":
    if side == "pool" and kind == "submits":
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor({workers}) as pool:
            total = sum(f.result() for f in [pool.submit(fn, x) for x in items])
    elif side == "pool":
        import multiprocessing
        with multiprocessing.Pool({workers}) as pool:
            total = sum(pool.map(fn, items))
    else:
        from console import connect
        with connect(sys.argv[5]) as cluster:
            if kind == "submits":
                total = sum(f.result() for f in [cluster.submit(fn, x) for x in items])
            else:
                total = sum(cluster.map(fn, items, chunksize="auto"))
    print(total)
"""


def timed(script: Path, kind: str, side: str, n: int, steps: int, inventory: Path) -> tuple:
    """(seconds, printed total) of one whole process."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), kind, side, str(n), str(steps), str(inventory)],
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{side} {kind} failed:\n{proc.stderr}")
    return seconds, proc.stdout.strip()


def main() -> None:
    from throughput import spread, steps_for

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=120)
    parser.add_argument("--task-ms", type=float, default=50.0)
    parser.add_argument("--trivial", type=int, default=1_000_000)
    parser.add_argument("--submits", type=int, default=10_000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    script = work / "side.py"
    script.write_text(SIDE.format(here=str(HERE), workers=WORKERS))
    inventory = work / "inventory.toml"
    inventory.write_text(f'[[node]]\nname = "local"\ntransport = "local"\nworkers = {WORKERS}\n')
    steps = steps_for(args.task_ms)
    cases = {"tasks": (args.tasks, steps), "trivial": (args.trivial, 0), "submits": (args.submits, 0)}
    ratios: dict = {kind: [] for kind in cases}
    print(f"{args.tasks} tasks of ~{args.task_ms:.0f} ms, {args.trivial:,} trivial items and {args.submits:,} "
          f"submits, {WORKERS} workers, {args.reps} interleaved repetitions, whole processes")
    for rep in range(args.reps):
        for kind, (n, per) in cases.items():
            pool, pool_total = timed(script, kind, "pool", n, per, inventory)
            api, api_total = timed(script, kind, "api", n, per, inventory)
            if pool_total != api_total:
                raise SystemExit(f"{kind}: Pool summed {pool_total}, the API {api_total}")
            ratios[kind].append(pool / api)
            print(f"  rep {rep + 1} {kind}: Pool {pool:.2f}s, API {api:.2f}s")
    for kind in cases:
        print(f"{kind}: ratio Pool/API {spread(ratios[kind])}")


if __name__ == "__main__":
    main()
