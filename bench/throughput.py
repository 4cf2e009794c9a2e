"""Throughput of `console run`'s machinery against multiprocessing.Pool, side by side.

Both sides run the same ~50 ms CPU-bound chunks with 2 workers on this machine,
interleaved over several repetitions (the machine is shared and its speed
drifts), and the median ratio pool_time / console_time is printed with its
spread: 1.0 means as fast as Pool.map, 0.9 means 10% slower.

- cold: the cluster is started for the run (agent and pool start included);
- warm: the agent is already up (only the job's pool start is included).
Also times 20,000 trivial items in chunks of 100 (per-chunk overhead).

    python3 bench/throughput.py [--reps 5] [--chunks 120] [--chunk-ms 50]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import burn  # noqa: E402
from console.cluster import Cluster  # noqa: E402
from console.inventory import Node  # noqa: E402
from console.jobspec import load_job  # noqa: E402

WORKERS = 2


def steps_for(ms: float, samples: int = 5) -> int:
    """Loop steps that take about `ms` milliseconds here, from the median of `samples` timed spins (one spin
    alone may land in a slow or a fast moment of a shared machine)."""
    steps = 200_000
    seconds = []
    for _ in range(samples):
        started = time.perf_counter()
        burn.spin(steps)
        seconds.append(time.perf_counter() - started)
    return int(steps * ms / 1000 / statistics.median(seconds))


def job_file(directory: Path, name: str, items: list, chunk_size: int, function: str, reduce: str) -> Path:
    """A job file; `function` is "chunk_function = ..." or "function = ..."."""
    path = directory / f"{name}.toml"
    path.write_text(
        f'[job]\nname = "{name}"\n{function}\nfiles = ["{HERE / "burn.py"}"]\n'
        f'chunk_size = {chunk_size}\nreduce = "{reduce}"\n[input]\nitems = {items}\n'
        f'[output]\npath = "{directory / (name + ".json")}"\n'
    )
    return path


def run_console(cluster: Cluster, job: Path) -> float:
    started = time.perf_counter()
    run = cluster.start_job(load_job(job))
    if not cluster.sessions:
        cluster.bootstrap()
    assert cluster.wait_job(600) == "ok", run.document
    return time.perf_counter() - started


def run_cold(job: Path) -> float:
    cluster = Cluster([Node("local", transport="local", workers=WORKERS)])
    try:
        return run_console(cluster, job)
    finally:
        cluster.close()


def run_pool(chunks: list) -> float:
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        pool.map(burn.burn, chunks, chunksize=1)  # looked up now: a job's start re-reads burn.py
    return time.perf_counter() - started


def spread(values: list) -> str:
    return f"median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def burn_job(description: str) -> Tuple[argparse.Namespace, Path, tempfile.TemporaryDirectory]:
    """The command line of the burn benchmarks (--reps, --chunks, --chunk-ms), and the job file it describes,
    in a directory that lives as long as the returned TemporaryDirectory."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=120)
    parser.add_argument("--chunk-ms", type=float, default=50.0)
    args = parser.parse_args()
    args.steps = steps_for(args.chunk_ms)
    work = tempfile.TemporaryDirectory()
    job = job_file(Path(work.name), "burn", [args.steps] * args.chunks, 1, 'chunk_function = "burn:burn"', "sum")
    return args, job, work


def main() -> None:
    args, job, work = burn_job(__doc__)
    chunks = [[args.steps] for _ in range(args.chunks)]
    directory = Path(work.name)
    warm = Cluster([Node("local", transport="local", workers=WORKERS)])
    warm.bootstrap()
    cold_ratio, warm_ratio = [], []
    print(f"{args.chunks} chunks of ~{args.chunk_ms:.0f} ms on {WORKERS} workers, {args.reps} interleaved repetitions")
    try:
        for rep in range(args.reps):
            pool_a = run_pool(chunks)
            cold = run_cold(job)
            pool_b = run_pool(chunks)
            warmed = run_console(warm, job)
            cold_ratio.append(pool_a / cold)
            warm_ratio.append(pool_b / warmed)
            print(f"  rep {rep + 1}: Pool {pool_a:.2f}s vs console cold {cold:.2f}s; "
                  f"Pool {pool_b:.2f}s vs console warm {warmed:.2f}s")
        trivial = job_file(directory, "trivial", list(range(20000)), 100, 'function = "burn:square"', "sum")
        trivial_times = [run_console(warm, trivial) for _ in range(3)]
    finally:
        warm.close()
    print(f"throughput ratio Pool/console, cold: {spread(cold_ratio)}")
    print(f"throughput ratio Pool/console, warm: {spread(warm_ratio)}")
    print(f"20,000 trivial items in chunks of 100 (warm): {spread(trivial_times)} seconds")


if __name__ == "__main__":
    main()
