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

__all__ = ["reduce_values", "results_text", "write_results"]


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
    write_atomically(path, results_text(document).encode("utf-8"))


def results_text(document: Dict[str, Any]) -> str:
    """The results file's JSON: a line for each key, and within the lists and maps of records (`attempts`,
    `nodes`, `failures`) a line for each record. Every value is written by the C encoder: an indented dump
    goes through the pure-Python one, 3x slower (1.6 s against 0.56 for a result of 5,000,000 numbers)."""
    lines = []
    for key, value in document.items():
        if _records(value):
            inner = ([f"  {_json(name)}: {_json(record)}" for name, record in value.items()]
                     if isinstance(value, dict) else [f"  {_json(record)}" for record in value])
            brackets = "{}" if isinstance(value, dict) else "[]"
            text = brackets[0] + "\n" + ",\n".join(inner) + "\n " + brackets[1]
        else:
            text = _json(value)
        lines.append(f" {_json(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _records(value: Any) -> bool:
    """Whether `value` is a non-empty list of dicts, or a map of names to dicts."""
    if isinstance(value, dict):
        return bool(value) and all(type(k) is str and isinstance(v, dict) for k, v in value.items())
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _json(value: Any) -> str:
    return json.dumps(value, default=str)
