"""Where the benchmarks keep their last figures: bench/results.json, one entry per benchmark, for bench/plot.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict

RESULTS = Path(__file__).resolve().parent / "results.json"


def record(name: str, figures: Dict[str, Any]) -> None:
    """Update `name`'s entry with these figures (a run of some cases keeps the others), and when."""
    everything = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    everything[name] = {**everything.get(name, {}), **figures, "taken": time.strftime("%Y-%m-%d %H:%M")}
    RESULTS.write_text(json.dumps(everything, indent=1) + "\n")
