"""Every failure the operator can act on, one class each.

The CLI prints `str(exc)` (a sentence naming the file, node or chunk and what
to do) and exits with the class's `exit_code`; a traceback only with --debug.
"""

__all__ = [
    "ConsoleError",
    "UsageError",
    "InventoryError",
    "JobFileError",
    "NodeError",
    "HostKeyError",
    "NodeBusy",
    "ConsoleFault",
]


class ConsoleError(Exception):
    """Base of the errors the operator can fix; the message says how."""

    exit_code = 2


class UsageError(ConsoleError):
    """A bad command line: an option, a node name or a path that does not exist."""


class InventoryError(ConsoleError):
    """inventory.toml is malformed or names something impossible."""


class JobFileError(ConsoleError):
    """The job file is malformed, or its function or input cannot be used."""


class NodeError(ConsoleError):
    """One node could not be reached, prepared or kept: the other nodes carry on."""

    exit_code = 3


class HostKeyError(NodeError):
    """A node's host key is unknown or has changed: refused until the operator decides."""


class NodeBusy(NodeError):
    """A node that was reached but answered too slowly (it, or the console, was busy): worth another try even
    before it was ever up, where any other NodeError is not."""


class ConsoleFault(ConsoleError):
    """The console's own side failed (its journal or results file, the job's reducer, or a bug of ours):
    the job ends at once, and what was journalled is kept for --resume."""

    exit_code = 4
