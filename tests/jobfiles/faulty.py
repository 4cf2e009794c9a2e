"""Job functions for the fault tests: each misbehaves in one exact way.

Shipped to the agent through a job file's `files`, the way a user's own module
is. "Once" faults leave a marker file in $FAULT_DIR so the retry succeeds.
"""

import os
import sys
import time
from pathlib import Path


def square(x):
    return x * x


def slow_square(x):
    time.sleep(0.05)
    return x * x


def chunk_squares(items):
    return [x * x for x in items]


def boom_on_13(x):
    if x == 13:
        return x / 0
    return x * x


def _first_time(name):
    marker = Path(os.environ["FAULT_DIR"]) / name
    if marker.exists():
        return False
    marker.write_text("x")
    return True


def hang_once_on_7(x):
    if x == 7 and _first_time("hang-7"):
        time.sleep(3600)
    return x * x


def exit_once_on_5(x):
    if x == 5 and _first_time("exit-5"):
        os._exit(3)
    return x * x


def calls_exit(x):
    """The `exit` builtin, which `site` defines: a worker forked by a forker started without `site` has it too."""
    exit(3)


def noisy(x):
    print("noise on stdout " * 20)
    sys.stdout.flush()
    os.write(1, b"raw bytes on fd 1\n")
    return x * x


def total_of(values):
    return sum(sum(v) for v in values)
