"""The machine's own cost of more processes: the console's shape with nothing of the console in it.

N "trios" of bare stdlib processes: a thread of this process per trio sends a
batch of small items to its agent process, which hands each to its worker
process over a pipe and sends the answers back in one reply. The same total
of items goes through 10 trios or through 100, in batches as large as the
scheduler's credit for short chunks, so whatever is lost going from 10 to 100
is the cost of this machine switching among ten times the processes (caches,
the kernel's scheduler), which the console's run at the same sizes pays too.

    python3 bench/trios.py [--sizes 10,100] [--items 300000] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from console.scheduler import MOST_AHEAD  # noqa: E402

_FRAMES = r'''
import pickle, struct, sys
def frame(f):
    head = f.read(4)
    if len(head) < 4:
        sys.exit(0)
    return f.read(struct.unpack("!I", head)[0])
def send(f, obj):
    data = pickle.dumps(obj)
    f.write(struct.pack("!I", len(data)) + data)
    f.flush()
'''
WORKER = _FRAMES + r'''
while True:
    x = pickle.loads(frame(sys.stdin.buffer))
    send(sys.stdout.buffer, (x, x * x, "ok", 0.0))
'''
AGENT = _FRAMES + r'''
import os, subprocess
worker = subprocess.Popen([sys.executable, "-c", os.environ["TRIO_WORKER"]], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
while True:
    items = pickle.loads(frame(sys.stdin.buffer))
    for x in items:
        send(worker.stdin, x)
    send(sys.stdout.buffer, [pickle.loads(frame(worker.stdout)) for _ in items])
'''


def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("!I", len(data)) + data)
    stream.flush()


def _frame(stream: IO[bytes]) -> bytes:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError("a trio's agent exited")
    return stream.read(struct.unpack("!I", head)[0])


def run(trios: int, items: int, batch: int = MOST_AHEAD) -> float:
    """Items per second through `trios` trios, every one up before the clock starts."""
    env = dict(os.environ, TRIO_WORKER=WORKER)
    agents = [subprocess.Popen([sys.executable, "-c", AGENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env=env) for _ in range(trios)]
    left = [items]
    lock = threading.Lock()
    errors: List[BaseException] = []

    def feed(agent: subprocess.Popen) -> None:
        try:
            while True:
                with lock:
                    count = min(batch, left[0])
                    left[0] -= count
                if not count:
                    return
                _send(agent.stdin, list(range(count)))
                pickle.loads(_frame(agent.stdout))
        except BaseException as exc:  # reported once every thread is done
            errors.append(exc)

    try:
        for agent in agents:  # each answers an empty batch once its worker runs
            _send(agent.stdin, [])
            _frame(agent.stdout)
        started = time.perf_counter()
        threads = [threading.Thread(target=feed, args=(agent,)) for agent in agents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    finally:
        for agent in agents:
            agent.stdin.close()
        for agent in agents:
            agent.wait(10)
    if errors:
        raise errors[0]
    return items / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rates = {size: [] for size in sizes}
    for _ in range(args.reps):
        for size in sizes:
            rates[size].append(run(size, args.items))
    for size in sizes:
        print(f"{size} trios: median {statistics.median(rates[size]):,.0f} items/s")
    ratios = [b / a for a, b in zip(rates[sizes[0]], rates[sizes[-1]])]
    print(f"{sizes[-1]} / {sizes[0]} trios: median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
