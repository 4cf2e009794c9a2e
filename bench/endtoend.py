"""`console run` against a script calling multiprocessing.Pool(2).map: whole processes, same work, interleaved.

Each case runs both sides as fresh processes, timed from outside (interpreter
start to exit), alternating over repetitions, each side first every other time; the process tree's peak memory
(the sum of its processes' RSS, sampled every 10 ms) is recorded too. Prints
the median ratio pool_time / console_time with its min and max (1.0: as fast
as Pool), the median difference in seconds, and the median peak memories.

- tasks: 120 items of ~50 ms, one item a chunk on both sides (chunk_size 1, Pool.map's chunksize=1);
- defaults: the same 120 items, each side's default chunking (chunk_size "auto"; Pool.map's default
  chunksize, len / (4 x workers) = 15 here);
- two: a two-item job, the fixed cost of starting up and shutting down;
- trivial: 5,000,000 trivial items, chunk_size "auto" (Pool.map's default chunksize);
- ssh: the tasks case on one warm SSH node in a network namespace (root, sshd; the node shares this
  machine's cores), against the same Pool.

The ~50 ms chunk is calibrated again before each repetition (this machine's speed drifts), and the
console's results file gives the time to the first result and the chunks' median length. Both sides
run once untimed first, and with bytecode written as usual (PYTHONDONTWRITEBYTECODE is dropped for the
children): an installed console has its .pyc files, and so has the standard library.

    python3 bench/endtoend.py [--reps 30] [--trivial 5000000] [--cases tasks,defaults,two,trivial,ssh]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WORKERS = 2
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
POOL = """
import sys
sys.path.insert(0, {here!r})
from burn import spin, square
fn, items, chunksize = {work}
if __name__ == "__main__":
    import multiprocessing
    with multiprocessing.Pool({workers}) as pool:
        print(sum(pool.map(fn, items, chunksize)))
"""


PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int) -> int:
    """The summed RSS of a process and its descendants, read from /proc: a few small reads, where psutil's
    children() reads every process's stat (~1 ms of the cores the measured runs use, every sample)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                rss += sum(tree_rss(int(child)) for child in f.read().split())
    except (OSError, ValueError):  # the process or one of its threads ended while read
        return 0
    return rss


def run_measured(argv: List[str]) -> Tuple[float, int]:
    """(seconds, peak RSS bytes of the whole process tree, sampled every 10 ms) of one run."""
    peak = 0
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CHILD_ENV)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate(timeout=900)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{stderr.decode(errors='replace')}")
    return seconds, peak


def job_file(directory: Path, name: str, function: str, items: str, chunk_size: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(f'[job]\nname = "{name}"\nfunction = "{function}"\nfiles = ["{HERE / "burn.py"}"]\n'
                    f'chunk_size = {chunk_size}\nreduce = "sum"\n[input]\n{items}\n'
                    f'[output]\npath = "{directory / (name + ".json")}"\n')
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30,
                        help="interleaved pairs per case (a process here runs fast or slow, up to 1.7x, for seconds "
                             "at a time: a 3 %% target needs some 30 pairs to be seen)")
    parser.add_argument("--trivial", type=int, default=5_000_000)
    parser.add_argument("--cases", default="tasks,defaults,two,trivial")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        run_cases(args, stack)


def ssh_inventory(work: Path, stack: contextlib.ExitStack) -> Path:
    """One sshd node in a namespace of its own, warm: `console bootstrap` has cached its bundle."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import netcluster

    reason = netcluster.skip_reason()
    if reason:
        raise SystemExit(f"the ssh case needs namespace nodes: {reason}")
    cluster = stack.enter_context(netcluster.net_cluster(work / "ns", n=1))
    inventory = cluster.write_inventory(work / "ssh-inventory.toml", overrides={"node1": {"workers": WORKERS}})
    subprocess.run([sys.executable, "-m", "console.cli", "bootstrap", "--inventory", str(inventory)], check=True,
                   stdout=subprocess.DEVNULL)
    return inventory


CASES = ("tasks", "defaults", "two", "trivial", "ssh")


def write_case(work: Path, case: str, steps: int, trivial: int) -> Tuple[Path, str]:
    """`case`'s job file and the Pool script's (function, items, chunksize), for chunks of `steps`."""
    if case in ("tasks", "ssh"):
        return (job_file(work, case, "burn:spin", f"items = {[steps] * 120}", "1"),
                f"(spin, [{steps}] * 120, 1)")
    if case == "defaults":
        return (job_file(work, case, "burn:spin", f"items = {[steps] * 120}", '"auto"'),
                f"(spin, [{steps}] * 120, None)")
    if case == "two":
        return job_file(work, case, "burn:square", "items = [3, 4]", "1"), "(square, [3, 4], None)"
    return (job_file(work, case, "burn:square", f"range = [0, {trivial}]", '"auto"'),
            f"(square, range({trivial}), None)")


def run_cases(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    from record import record
    from throughput import steps_for

    work = Path(tempfile.mkdtemp(prefix="bench-endtoend-"))
    inventory = work / "inventory.toml"
    inventory.write_text(f'[[node]]\nname = "local"\ntransport = "local"\nworkers = {WORKERS}\n')
    chosen = [c for c in args.cases.split(",") if c in CASES]
    inventories = {case: ssh_inventory(work, stack) if case == "ssh" else inventory for case in chosen}
    figures: Dict[str, Dict[str, list]] = {c: {"pool": [], "console": [], "pool_mem": [], "console_mem": [],
                                               "first": [], "chunk": []} for c in chosen}
    print(f"whole processes, {WORKERS} workers, {args.reps} interleaved repetitions; cases: {', '.join(chosen)}")

    def argvs(case: str, steps: int) -> Tuple[List[str], List[str], Path]:
        """(Pool's command, the console's, the console's results file) for chunks of `steps` now."""
        job, work_expr = write_case(work, case, steps, args.trivial)
        script = work / f"pool_{case}.py"
        script.write_text(POOL.format(here=str(HERE), work=work_expr, workers=WORKERS))
        return ([sys.executable, str(script)],
                [sys.executable, "-m", "console.cli", "run", str(job), "--inventory", str(inventories[case])],
                job.with_suffix(".json"))

    for case in chosen:
        for argv in argvs(case, steps_for(50))[:2]:
            run_measured(argv)  # untimed: caches, bytecode, the agent bundle
    for rep in range(args.reps):
        steps = steps_for(50)  # again each repetition: the machine's speed drifts, the chunks stay ~50 ms
        for case in chosen:
            pool_argv, console_argv, results = argvs(case, steps)
            if rep % 2:  # each side goes first every other repetition: the second of two runs found the
                console, console_mem = run_measured(console_argv)  # machine otherwise than the first
                pool, pool_mem = run_measured(pool_argv)
            else:
                pool, pool_mem = run_measured(pool_argv)
                console, console_mem = run_measured(console_argv)
            attempts = json.loads(results.read_text())["attempts"]
            first = min(a["end_s"] for a in attempts if a["outcome"] == "done")
            chunk = statistics.median(a["end_s"] - a["start_s"] for a in attempts if a["outcome"] == "done")
            for key, value in (("pool", pool), ("console", console), ("pool_mem", pool_mem),
                               ("console_mem", console_mem), ("first", first), ("chunk", chunk)):
                figures[case][key].append(value)
            print(f"  rep {rep + 1} {case}: Pool {pool:.3f}s {pool_mem / 2**20:.0f} MB; "
                  f"console {console:.3f}s {console_mem / 2**20:.0f} MB, first result {first:.3f}s into the job, "
                  f"chunks {chunk * 1000:.0f} ms")
    summary = {}
    for case in chosen:
        f = figures[case]
        ratios = [p / c for p, c in zip(f["pool"], f["console"])]
        gaps = [c - p for p, c in zip(f["pool"], f["console"])]
        summary[case] = {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                         "gap_s": statistics.median(gaps), "pool_s": statistics.median(f["pool"]),
                         "pool_mb": statistics.median(f["pool_mem"]) / 2**20,
                         "console_mb": statistics.median(f["console_mem"]) / 2**20,
                         "first_result_s": statistics.median(f["first"]),
                         "chunk_ms": statistics.median(f["chunk"]) * 1000}
        print(f"{case}: Pool/console median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max "
              f"{max(ratios):.3f}); console - Pool median {statistics.median(gaps):+.3f} s; Pool "
              f"{statistics.median(f['pool']):.3f} s; peak memory Pool {statistics.median(f['pool_mem']) / 2**20:.0f}"
              f" MB, console {statistics.median(f['console_mem']) / 2**20:.0f} MB; first result "
              f"{summary[case]['first_result_s']:.3f} s into the job; chunks {summary[case]['chunk_ms']:.0f} ms")
    record("endtoend", summary)


if __name__ == "__main__":
    main()
