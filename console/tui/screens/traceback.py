"""The traceback modal: one failed chunk attempt with the node's full traceback.

Shows a `FailureRecord` as plain text (never parsed as markup) in a scrolling
box; Escape, Enter or q closes it. Reads nothing else and calls nothing.
Pushed by `console.tui.app.ConsoleApp` when Enter is pressed in the failures panel.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.snapshot import FailureRecord

__all__ = ["TracebackScreen", "failure_heading"]


def failure_heading(failure: FailureRecord) -> str:
    """"chunk 17 on win-1, attempt 3 (final)" and the error line."""
    final = " (final: not retried)" if failure.final else " (will be retried)"
    where = f"chunk {failure.chunk} on {failure.node}, attempt {failure.attempt}{final}"
    return f"{where}\n{failure.error}"


class TracebackScreen(ModalScreen[None]):
    """The full story of one failed attempt."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("enter", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, failure: FailureRecord) -> None:
        super().__init__()
        self.failure = failure
        """The failure shown."""

    def compose(self) -> ComposeResult:
        with Vertical(id="traceback-box"):
            yield Static(Text(failure_heading(self.failure)), id="traceback-heading")
            with VerticalScroll(id="traceback-scroll"):
                text = self.failure.traceback or "(no traceback: the worker died or timed out)"
                yield Static(Text(text.rstrip("\n")), id="traceback-text")
            yield Static("Esc closes", id="traceback-help")

    def on_mount(self) -> None:
        self.query_one("#traceback-box").border_title = "Traceback"
        self.query_one("#traceback-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
