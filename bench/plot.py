"""Draw bench/results.json (written by bench/endtoend.py and bench/scale.py) into docs/bench.png.

Left: the console's speed against multiprocessing.Pool's, whole processes (median ratio, min to max);
right: dispatch rate and the console's CPU as agents are added. Needs matplotlib ([plot] or [bench]).

    python3 bench/plot.py [--output docs/bench.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from record import RESULTS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "bench.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    results = json.loads(RESULTS.read_text())
    figure = Figure(figsize=(11, 4), layout="constrained")
    ratios, scaling = figure.subplots(1, 2)
    cases = results.get("endtoend", {})
    labels = {"tasks": "120 x 50 ms,\n1 a chunk", "defaults": "120 x 50 ms,\ndefaults", "two": "two items",
              "trivial": "5M trivial", "ssh": "120 x 50 ms,\nSSH node"}
    names = [name for name in labels if name in cases]
    medians = [cases[n]["ratio"] for n in names]
    errors = [[cases[n]["ratio"] - cases[n]["ratio_min"] for n in names],
              [cases[n]["ratio_max"] - cases[n]["ratio"] for n in names]]
    ratios.bar([labels[n] for n in names], medians, yerr=errors, color="#2e8b57", capsize=4)
    ratios.tick_params(axis="x", labelsize=8)
    ratios.axhline(1.0, color="#555555", linewidth=1, linestyle="--")
    ratios.set_ylabel("Pool time / console time (1 = as fast)")
    ratios.set_title("console run vs multiprocessing.Pool(2), whole process")
    scale = results.get("scale", {})
    sizes = sorted((s for s in scale if s.isdigit()), key=int)
    scaling.plot([int(s) for s in sizes], [scale[s]["chunks_per_s"] for s in sizes], marker="o", color="#2e8b57",
                 label="chunks / s over the whole job")
    steady = [s for s in sizes if "steady_chunks_per_s" in scale[s]]
    scaling.plot([int(s) for s in steady], [scale[s]["steady_chunks_per_s"] for s in steady], marker="D",
                 color="#98df8a", label="chunks / s from 20 % to 80 % done")
    trios = [s for s in steady if "trio_items_per_s" in scale[s]]
    if trios:  # bench/trios.py's rates, scaled to meet the console's at the fewest agents
        scaled = scale[trios[0]]["steady_chunks_per_s"] / scale[trios[0]]["trio_items_per_s"]
        scaling.plot([int(s) for s in trios], [scale[s]["trio_items_per_s"] * scaled for s in trios],
                     linestyle="--", color="#555555", label="bare process trios, scaled: this machine's own slope")
    scaling.set_xlabel("local agents (1 worker each)")
    scaling.set_ylabel("chunks / s")
    cpu = scaling.twinx()
    cpu.plot([int(s) for s in sizes], [scale[s]["cpu_s_per_1000"] for s in sizes], marker="s", color="#d62728",
             label="console CPU s / 1,000 chunks")
    with_agents = [s for s in sizes if scale[s].get("agents_cpu_s_per_1000") is not None]
    cpu.plot([int(s) for s in with_agents], [scale[s]["agents_cpu_s_per_1000"] for s in with_agents], marker="^",
             color="#1f77b4", label="agents' and workers' CPU s / 1,000 chunks")
    cpu.set_ylabel("CPU s per 1,000 chunks")
    scaling.set_ylim(bottom=0)
    cpu.set_ylim(bottom=0)
    scaling.set_title("dispatch as agents are added")
    lines = scaling.get_lines() + cpu.get_lines()
    scaling.legend(lines, [line.get_label() for line in lines], loc="lower center")
    figure.savefig(args.output, dpi=100)
    print(f"{args.output}")


if __name__ == "__main__":
    main()
