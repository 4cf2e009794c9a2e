"""The same job through the agent backend and through the Dask backend, side by side.

120 CPU-bound chunks of ~50 ms on 2 workers each: the local agent with a pool
of 2, and a Dask scheduler with 2 single-thread workers (started here as
separate processes, warm before timing). Both run from a started cluster
(warm), interleaved over repetitions; the median ratio agent time / Dask time
is printed with its spread (below 1.0: the Dask path is slower by that much).

    python3 bench/engines.py [--reps 5] [--chunks 120] [--chunk-ms 50]    (needs the [dask] extra)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from throughput import WORKERS, burn_job, spread  # noqa: E402

from console.backends.dask import DaskBackend  # noqa: E402
from console.cluster import Cluster  # noqa: E402
from console.inventory import Node  # noqa: E402
from console.jobspec import load_job  # noqa: E402


def timed(cluster: Cluster, job: Path) -> float:
    """Seconds from start_job to the results file of one run on an up cluster."""
    started = time.perf_counter()
    run = cluster.start_job(load_job(job))
    assert cluster.wait_job(600) == "ok", run.document
    return time.perf_counter() - started


def start_dask(directory: Path) -> tuple:
    """A scheduler and WORKERS single-thread workers as separate processes; (address, processes)."""
    scheduler_file = directory / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    processes = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)], **quiet)]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    processes.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                                       "--nworkers", str(WORKERS), "--dashboard-address", ":0"], **quiet))
    return address, processes


def main() -> None:
    args, job, work = burn_job(__doc__)
    address, processes = start_dask(Path(work.name))
    agents = Cluster([Node("local", transport="local", workers=WORKERS)])
    dask = Cluster(backend=DaskBackend(address))
    ratios = []
    try:
        agents.bootstrap()
        dask.bootstrap()
        timed(agents, job)
        timed(dask, job)
        print(f"{args.chunks} chunks of ~{args.chunk_ms:.0f} ms on {WORKERS} workers each, "
              f"{args.reps} interleaved repetitions (both warm)")
        for rep in range(args.reps):
            on_agents = timed(agents, job)
            on_dask = timed(dask, job)
            ratios.append(on_agents / on_dask)
            print(f"  rep {rep + 1}: agents {on_agents:.2f}s, Dask {on_dask:.2f}s")
    finally:
        agents.close()
        dask.close()
        for proc in processes:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in processes:
            proc.wait(30)
    print(f"speed ratio agents time / Dask time: {spread(ratios)}")


if __name__ == "__main__":
    main()
