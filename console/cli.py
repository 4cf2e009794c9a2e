"""The `console` command: parse the command line, run the chosen subcommand.

Errors the operator can cause (`ConsoleError`) print as one sentence and exit
with their code; a traceback only with --debug. Exit status: 0 every chunk
done, 1 some chunks failed for good, 2 bad command line, inventory or job file,
3 no node usable, 4 the console's own side failed (journal or results file
unwritable, the reducer raised, a bug of ours), 130 interrupted.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, List, NoReturn, Optional, TextIO, Union

from console import forkerahead
from console.errors import ConsoleError, HostKeyError, UsageError

if TYPE_CHECKING:
    import argparse

    from rich.table import Table

    from console.forkerahead import ForkerAhead
    from console.headless import PlainView
    from console.inventory import Inventory
    from console.jobspec import JobSpec
    from console.liveview import LiveView
    from console.localnode import ServedHere

__all__ = ["main", "run", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_NODES, EXIT_CONSOLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

DESCRIPTION = """\
Run a CPU-heavy Python job across the machines of an inventory and watch it.
With no subcommand, opens the dashboard on the default inventory.
"""

EPILOG = """\
exit status: 0 all chunks done; 1 some chunks failed for good (the results
file lists them); 2 bad command line, inventory or job file, or the job's
function and its job file disagree (the sentence says how); 3 no node usable;
4 the console's own side failed (its journal or results file could not be
written, the reducer raised, or a bug): the sentence says what, --resume
continues; 130 interrupted (the results file says "cancelled", --resume
continues).

examples:
  console run jobs/examples/factorize.toml
  console run jobs/examples/primes.toml --output primes.json --json
  console run jobs/examples/factorize.toml --resume
  console bootstrap --inventory lab.toml
  console trust pi-3
  console timeline factorize.results.json -o factorize.png
"""

RUN_HELP = """\
Run JOB (a job.toml) headless: live progress on a terminal, plain lines
otherwise, then a summary table. Results go to the job's [output] path (or
--output) as JSON. Every finished chunk is journalled first to
OUTPUT.journal, so a run that was killed continues with --resume.
"""


def _version() -> str:
    """What --version prints, looked up only when asked (importlib.metadata would cost every start ~10 ms)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("cluster-console")
    except PackageNotFoundError:
        mine = "(not installed: run from a checkout)"
    return "console %s, Python %s" % (mine, sys.version.split()[0])


COMMANDS = ("run", "bootstrap", "status", "trust", "timeline", "ui")


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The full command line, with help for every option; with `only`, of that subcommand alone (the one a
    command line names: building the others' parsers and help took ~4 ms of every start)."""
    import argparse
    from pathlib import Path

    def fill(text: str) -> str:
        import textwrap  # not for `console run`, which shows none of these

        return textwrap.fill(text, 78)

    class Version(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
            print(_version())
            parser.exit()

    parser = argparse.ArgumentParser(prog="console", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action=Version, nargs=0, help="print the console's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def inventory_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--inventory", "-i", type=Path, default=None, metavar="FILE",
                       help="inventory file (default: ./inventory.toml, else this machine alone)")

    def wanted(name: str) -> bool:
        return only is None or only == name

    def described(name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
        """A subcommand whose help is its description, wrapped, and its examples."""
        return sub.add_parser(name, help=summary, description=fill(description), epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    if wanted("run"):
        run = sub.add_parser("run", help="run a job headless", description=RUN_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
        run.add_argument("job", type=Path, metavar="JOB", help="the job file (job.toml)")
        inventory_option(run)
        run.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                         help="results file (default: the job's [output] path)")
        run.add_argument("--json", action="store_true",
                         help="print the results document as JSON on stdout (progress goes to stderr)")
        run.add_argument("--engine", metavar="URL", default=None,
                         help="run on an existing Dask cluster, e.g. dask://host:8786, instead of the inventory's "
                              "nodes (needs the [dask] extra)")
        run.add_argument("--resume", action="store_true",
                         help="skip chunks already in OUTPUT.journal from an earlier run of the same job")

    for name, summary, description, example in (
        ("bootstrap", "prepare the inventory's nodes (connect, probe, deploy, start, stop)",
         "Connect to every node (or the named ones) in parallel, find its OS, architecture and Python, "
         "upload the agent bundle when the node lacks it, start the agent, check its protocol version, "
         "and stop it. Prints one row per node; a node that fails shows why. With --job, also send each node "
         "the wheels of the job's requirements for its platform that it lacks.",
         "console bootstrap --inventory lab.toml pi-3 ws-1\n         console bootstrap --job jobs/numpyjob.toml\n"
         "see also: console status, console trust"),
        ("status", "probe the inventory's nodes without starting anything",
         "Connect to every node (or the named ones) in parallel and show OS, architecture, Python, cores "
         "and whether the current agent bundle is already there. With --job, also whether each node has the "
         "wheels of the job's requirements for its platform.",
         "console status --job jobs/numpyjob.toml\nsee also: console bootstrap"),
    ):
        if not wanted(name):
            continue
        nodes_command = described(name, summary, description, f"example: {example}")
        inventory_option(nodes_command)
        nodes_command.add_argument("nodes", nargs="*", metavar="NODE", help="node names (default: all)")
        nodes_command.add_argument("--job", type=Path, default=None, metavar="JOB",
                                   help="a job file: show (status) or send (bootstrap) its requirements' wheels")

    if wanted("trust"):
        trust = described(
            "trust", "pin a node's SSH host key into the inventory's known_hosts",
            "Fetch the host key the node presents, show its fingerprint and, once you confirm, append it to "
            "the node's known_hosts file (the inventory's known_hosts, else ~/.ssh/known_hosts). Compare the "
            "fingerprint with the node's own 'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub' before you "
            "say yes. A key that differs from one already pinned is never replaced.",
            "example: console trust pi-3\nsee also: console bootstrap")
        inventory_option(trust)
        trust.add_argument("node", metavar="NODE", help="node name")
        trust.add_argument("--yes", "-y", action="store_true", help="pin without asking")

    if wanted("timeline"):
        timeline = described(
            "timeline", "draw where a job's time went, from its results file",
            "Draw a task-stream picture of a finished job: one lane per node and worker, each chunk attempt a "
            "bar from its start to its end, coloured by what became of it (done, failed, timed out, lost with "
            "its node, a losing duplicate). Needs matplotlib: pip install -e \".[plot]\".",
            "example: console timeline factorize.results.json -o factorize.png")
        timeline.add_argument("results", type=Path, metavar="RESULTS", help="a results file written by console run")
        timeline.add_argument("--output", "-o", type=Path, default=None, metavar="PNG",
                              help="the picture to write (default: RESULTS with .png)")

    if wanted("ui"):
        ui = sub.add_parser("ui", help="open the dashboard (the default)")
        ui.add_argument("job", type=Path, nargs="?", metavar="JOB", help="job file to offer first")
        inventory_option(ui)
        ui.add_argument("--engine", metavar="URL", default=None, help="watch an existing Dask cluster (dask://host:8786)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `console` script."""
    argv = sys.argv[1:] if argv is None else argv
    ahead = forkerahead.start(argv)  # first: its interpreter starts on the other core while this one imports
    try:
        return _main(argv, ahead)
    finally:
        if ahead is not None:
            ahead.close()


def _main(argv: List[str], ahead: Optional[ForkerAhead]) -> int:
    args = build_parser(argv[0] if argv[:1] and argv[0] in COMMANDS else None).parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args, ahead)
        commands = {"bootstrap": cmd_bootstrap, "status": cmd_status, "trust": cmd_trust, "timeline": cmd_timeline}
        return commands.get(args.command, cmd_ui)(args)
    except ConsoleError as exc:
        if args.debug:
            raise
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def cmd_run(args: argparse.Namespace, ahead: Optional[ForkerAhead] = None) -> int:
    """`console run JOB`: the job headless, results to a file; its local node forks from `ahead`'s forker."""
    inventory = _inventory(args)
    from console import localnode

    served = localnode.start(inventory, args.engine, ahead)  # its workers come up while the rest is imported
    try:
        return _run(args, inventory, served)
    finally:
        served.close()


def _run(args: argparse.Namespace, inventory: Inventory, served: ServedHere) -> int:
    from console.cluster import NO_USABLE_NODE, open_cluster
    from console.headless import summarize
    from console.jobspec import load_job

    spec = load_job(args.job, args.output)
    shown = _view(sys.stderr if args.json else sys.stdout)
    cluster = open_cluster(inventory, args.engine, served)
    try:
        run = cluster.start_job(spec, resume=args.resume)
        cluster.bootstrap()
        interrupted = False
        try:
            snapshot = shown.watch(cluster.snapshot, run.written.wait)
        except KeyboardInterrupt:
            interrupted = True
            cluster.cancel_job()
            run.written.wait()
            snapshot = cluster.snapshot()
        document = run.document
        assert document is not None
        shown.summary(summarize(document, snapshot))
    finally:
        cluster.close()
    if document.get("console_error"):
        if run.console_traceback:
            print(run.console_traceback, file=sys.stderr)
        return EXIT_CONSOLE
    shown.line(f"results: {spec.output}")
    if args.json:
        import json

        print(json.dumps(document, default=str))
    if interrupted:
        return EXIT_INTERRUPTED
    if document.get("reason") == NO_USABLE_NODE:
        return EXIT_NO_NODES
    if document.get("mistake"):
        return EXIT_USAGE
    return EXIT_OK if document["status"] == "ok" else EXIT_FAILED


def _view(stream: TextIO) -> Union[PlainView, LiveView]:
    """How `console run` shows itself on `stream`: live through rich on a terminal, plain lines elsewhere
    (without importing rich)."""
    if stream.isatty():
        from rich.console import Console

        from console.liveview import LiveView

        return LiveView(Console(file=stream))
    from console.headless import PlainView

    return PlainView(stream)


def _report_table(reports: list, title: str) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    packages = any(r.packages for r in reports)
    columns = ("node", "address", "OS/arch", "python", "cores", "bundle", "metrics") + (
        ("packages",) if packages else ()) + ("time", "result")
    for column in columns:
        table.add_column(column, justify="right" if column in ("cores", "time") else "left", no_wrap=True)
    for r in reports:
        os_arch = f"{r.os}/{r.arch}" if r.os else "n/a"
        result = Text("failed", style="bold red") if r.error else Text("ok", style="green")
        cells = [r.node, r.address, os_arch, r.python or "n/a", str(r.cores or "n/a"), r.bundle or "n/a",
                 r.metrics or "n/a"] + ([r.packages or "n/a"] if packages else [])
        table.add_row(*cells, f"{r.seconds:.1f}s", result)
    return table


def _print_reports(reports: list, title: str) -> int:
    from rich.console import Console
    from rich.text import Text

    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(_report_table(reports, title))
    for report in reports:
        if report.error:
            out.print(Text(report.error, style="red"), soft_wrap=True)
        if report.packages_note:
            out.print(Text(report.packages_note, style="yellow"), soft_wrap=True)
    failed = sum(1 for r in reports if r.error)
    if failed == len(reports):
        return EXIT_NO_NODES
    return EXIT_FAILED if failed else EXIT_OK


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """`console bootstrap [NODE...]`: bring every node's agent up once, in parallel."""
    from console.bringup import bootstrap_nodes

    inventory = _inventory(args)
    reports = bootstrap_nodes(inventory.select(args.nodes), _job_option(args), inventory.packages)
    return _print_reports(reports, f"bootstrap: {inventory.path}")


def cmd_status(args: argparse.Namespace) -> int:
    """`console status [NODE...]`: probe every node, start nothing."""
    from console.bringup import status_nodes

    inventory = _inventory(args)
    reports = status_nodes(inventory.select(args.nodes), _job_option(args), inventory.packages)
    return _print_reports(reports, f"status: {inventory.path}")


def _job_option(args: argparse.Namespace) -> Optional[JobSpec]:
    """The job file of --job, read and checked, or None."""
    if args.job is None:
        return None
    from console.jobspec import load_job

    return load_job(args.job)


def cmd_trust(args: argparse.Namespace) -> int:
    """`console trust NODE`: show the node's host key and pin it on confirmation."""
    from rich.console import Console

    from console.ssh import fetch_host_key, fingerprint, known_hosts_path, pin_host_key, pinned_key

    inventory = _inventory(args)
    [node] = inventory.select([args.node])
    if node.transport == "local":
        raise UsageError(f"{node.name} is the local node; it has no host key to trust.")
    target, key = fetch_host_key(node)
    known_hosts = known_hosts_path(node)
    out = Console()
    out.print(f"{node.name} ({target.hostname}:{target.port}) presents {key.get_name()} {fingerprint(key)}",
              markup=False, highlight=False, soft_wrap=True)
    existing = pinned_key(known_hosts, target, key.get_name())
    if existing is not None and existing == key:
        out.print(f"already trusted in {known_hosts}.", markup=False, highlight=False)
        return EXIT_OK
    if existing is not None:
        raise HostKeyError(
            f"{node.name}: {known_hosts} pins a different {key.get_name()} key ({fingerprint(existing)}); "
            f"if the node was reinstalled, run 'ssh-keygen -R {target.host_key_name} -f {known_hosts}' first."
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"not a terminal, so nobody can confirm; check the fingerprint above and "
                             f"run 'console trust {node.name} --yes'.")
        answer = input(f"Trust this key and pin it in {known_hosts}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.print("not trusted; nothing written.")
            return EXIT_USAGE
    pin_host_key(known_hosts, target, key)
    out.print(f"pinned in {known_hosts}.", markup=False, highlight=False)
    return EXIT_OK


def cmd_timeline(args: argparse.Namespace) -> int:
    """`console timeline RESULTS [-o PNG]`: the job's task-stream picture."""
    from rich.console import Console

    from console.timeline import write_timeline

    output = args.output or args.results.with_suffix(".png")
    lanes = write_timeline(args.results, output)
    Console().print(f"{output}: {lanes} lane(s)", markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    """`console` / `console ui [JOB]`: the dashboard."""
    from console.cluster import open_cluster
    from console.tui.app import run_dashboard

    inventory = _inventory(args)
    cluster = open_cluster(inventory, getattr(args, "engine", None))
    try:
        cluster.bootstrap()
        job = getattr(args, "job", None)
        return run_dashboard(cluster, str(job) if job else None)
    finally:
        cluster.close()


def _inventory(args: argparse.Namespace) -> Inventory:
    """The inventory the command line names, else the default one."""
    from console.inventory import default_inventory, load_inventory

    return load_inventory(getattr(args, "inventory", None) or default_inventory())


def run() -> NoReturn:
    """The `console` script: main(), then exit without tearing the interpreter down.

    Once main() returns, every file the command wrote is closed and every node let go; what an interpreter's
    teardown adds is freeing some 27,000 objects one by one, 20 ms after a job's last result here. Threads are
    waited for and exit handlers run as at a normal exit, and the output is flushed."""
    code = main()
    for thread in threading.enumerate():
        if not thread.daemon and thread is not threading.current_thread():
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`| head`), a stream closed: nothing to lose
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
