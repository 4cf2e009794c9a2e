"""Draw the README's timeline: the factorisation example over three SSH nodes in network namespaces.

Builds three sshd hosts (tests/netcluster.py; needs root and sshd), runs
`console run jobs/examples/factorize.toml` on them, and draws the results with
`console timeline` into docs/timeline-factorize.png ([plot] extra).

    python3 bench/timeline_picture.py [--output docs/timeline-factorize.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import netcluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "timeline-factorize.png")
    args = parser.parse_args()
    reason = netcluster.skip_reason()
    if reason:
        raise SystemExit(f"cannot build the namespace nodes: {reason}")
    with tempfile.TemporaryDirectory() as work, netcluster.net_cluster(Path(work), n=3) as cluster:
        inventory = cluster.write_inventory(Path(work) / "inventory.toml")
        results = Path(work) / "factorize.results.json"
        for argv in (["run", "jobs/examples/factorize.toml", "--inventory", str(inventory), "--output", str(results)],
                     ["timeline", str(results), "--output", str(args.output)]):
            subprocess.run([sys.executable, "-m", "console.cli", *argv], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
