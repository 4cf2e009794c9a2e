"""The `console` command: parse the command line, run the chosen subcommand.

Errors the operator can cause (`ConsoleError`) print as one sentence and exit
with their code; a traceback only with --debug. Exit status: 0 every chunk
done, 1 some chunks failed for good, 2 bad command line, inventory or job file,
3 no node usable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from rich.console import Console
from rich.text import Text

from console.errors import ConsoleError
from console.inventory import DEFAULT_INVENTORY, load_inventory

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_NODES, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

DESCRIPTION = """\
Run a CPU-heavy Python job across the machines of an inventory and watch it.
With no subcommand, opens the dashboard on the default inventory.
"""

EPILOG = """\
exit status: 0 all chunks done; 1 some chunks failed for good (the results
file lists them); 2 bad command line, inventory or job file; 3 no node usable;
130 interrupted (the results file says "cancelled", --resume continues).

examples:
  console run jobs/examples/factorize.toml
  console run jobs/examples/primes.toml --output primes.json --json
  console run jobs/examples/factorize.toml --resume
"""

RUN_HELP = """\
Run JOB (a job.toml) headless: rich progress on a terminal, plain lines
otherwise, then a summary table. Results go to the job's [output] path (or
--output) as JSON. Every finished chunk is journalled first to
OUTPUT.journal, so a run that was killed continues with --resume.
"""


def default_inventory() -> Path:
    """./inventory.toml when there is one, else the embedded default (this machine)."""
    here = Path("inventory.toml")
    return here if here.exists() else DEFAULT_INVENTORY


def build_parser() -> argparse.ArgumentParser:
    """The full command line, with help for every option."""
    parser = argparse.ArgumentParser(prog="console", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def inventory_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--inventory", "-i", type=Path, default=None, metavar="FILE",
                       help="inventory file (default: ./inventory.toml, else this machine alone)")

    run = sub.add_parser("run", help="run a job headless", description=RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    run.add_argument("job", type=Path, metavar="JOB", help="the job file (job.toml)")
    inventory_option(run)
    run.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                     help="results file (default: the job's [output] path)")
    run.add_argument("--json", action="store_true",
                     help="print the results document as JSON on stdout (progress goes to stderr)")
    run.add_argument("--resume", action="store_true",
                     help="skip chunks already in OUTPUT.journal from an earlier run of the same job")

    ui = sub.add_parser("ui", help="open the dashboard (the default)")
    ui.add_argument("job", type=Path, nargs="?", metavar="JOB", help="job file to offer first")
    inventory_option(ui)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `console` script."""
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    try:
        if args.command == "run":
            return cmd_run(args)
        return cmd_ui(args)
    except ConsoleError as exc:
        if args.debug:
            raise
        err.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def cmd_run(args: argparse.Namespace) -> int:
    """`console run JOB`: the job headless, results to a file."""
    from console.cluster import Cluster
    from console.headless import render_summary, watch
    from console.jobspec import load_job

    inventory = load_inventory(args.inventory or default_inventory())
    spec = load_job(args.job, args.output)
    shown = Console(stderr=args.json)
    cluster = Cluster(inventory.nodes)
    try:
        run = cluster.start_job(spec, resume=args.resume)
        cluster.bootstrap()
        interrupted = False
        try:
            snapshot = watch(cluster.snapshot, run.done_event.wait, shown)
        except KeyboardInterrupt:
            interrupted = True
            cluster.cancel_job()
            snapshot = cluster.snapshot()
        document = cluster.write_results()
    finally:
        cluster.close()
    shown.print(render_summary(document, snapshot))
    shown.print(f"results: {spec.output}", markup=False, highlight=False)
    if args.json:
        print(json.dumps(document, default=str))
    if interrupted:
        return EXIT_INTERRUPTED
    if document.get("reason") == "no node is usable":
        return EXIT_NO_NODES
    return EXIT_OK if document["status"] == "ok" else EXIT_FAILED


def cmd_ui(args: argparse.Namespace) -> int:
    """`console` / `console ui [JOB]`: the dashboard."""
    from console.cluster import Cluster
    from console.tui.app import run_dashboard

    inventory = load_inventory(getattr(args, "inventory", None) or default_inventory())
    cluster = Cluster(inventory.nodes)
    try:
        cluster.bootstrap()
        job = getattr(args, "job", None)
        return run_dashboard(cluster, str(job) if job else None)
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
