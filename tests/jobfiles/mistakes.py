"""Job functions that disagree with their job file, for the job-mistake tests; each records its calls.

Every call appends its item (or its chunk's items) to $FAULT_DIR/calls when that is set, so a test can
tell whether an item ran twice.
"""

import os
from typing import Any, List


def _count(what: Any) -> None:
    directory = os.environ.get("FAULT_DIR")
    if directory:
        with open(os.path.join(directory, "calls"), "a") as calls:
            calls.write(f"{what}\n")


def label(x: int) -> str:
    """A string where reduce = "sum" wants a number."""
    _count(x)
    return f"item-{x}"


def pair(x: int) -> List[int]:
    """A list where reduce = "merge" wants a dict."""
    _count(x)
    return [x, x * x]


def lazy(x: int) -> Any:
    """A generator: it cannot be pickled back."""
    _count(x)
    return (i for i in range(x))


def square(x: int) -> int:
    _count(x)
    return x * x


def chunk_label(items: List[int]) -> str:
    """A chunk function returning a string where reduce = "sum" wants a number."""
    _count(items)
    return ",".join(map(str, items))


def strict_total(values: List[Any]) -> int:
    """A custom reducer that wants dicts, given the plain lists of a per-item function."""
    return sum(value["total"] for value in values)
