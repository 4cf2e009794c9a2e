"""Folding chunk values into the job's result, and writing the results file.

Chunk values arrive already folded per chunk by the workers (a number for
"sum", a dict for "merge" and "dict", a list otherwise). "list" concatenates in item
order; a custom "module:function" reducer gets the list of chunk values in
item order and returns the result. The file is written whole to a temporary
name and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from console.atomicfile import write_atomically

__all__ = ["reduce_values", "write_results"]


def reduce_values(reduce: str, values: Mapping[int, Any],
                  custom: Optional[Callable[[List[Any]], Any]] = None) -> Any:
    """The job's result from `{first item index: chunk value}`."""
    ordered = [values[start] for start in sorted(values)]
    if reduce == "sum":
        return sum(ordered)
    if reduce in ("merge", "dict"):
        merged: Dict[Any, Any] = {}
        for part in ordered:
            merged.update(part)
        return merged
    if reduce == "list":
        return [item for part in ordered for item in part]
    assert custom is not None, "a custom reducer must be resolved before reducing"
    return custom(ordered)


def write_results(path: Path, document: Dict[str, Any]) -> None:
    """Write the results JSON atomically (values JSON cannot hold become strings); a failed write
    leaves no temporary file behind."""
    write_atomically(path, (json.dumps(document, indent=1, default=str) + "\n").encode("utf-8"))
