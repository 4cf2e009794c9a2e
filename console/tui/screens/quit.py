"""The quit confirmation, shown when q is pressed while a job is running.

Dismisses with True (quit) or False (stay); the app decides what quitting
means. Calls nothing. Pushed by `console.tui.app.ConsoleApp.action_quit`.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

__all__ = ["QuitScreen"]


class QuitScreen(ModalScreen[bool]):
    """"A job is running. Quit anyway?"."""

    BINDINGS = [
        Binding("y", "answer(True)", "Quit"),
        Binding("n,escape", "answer(False)", "Stay"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question
        """The sentence asked."""

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box"):
            yield Static(self.question, id="quit-question", markup=False)
            with Horizontal(id="quit-buttons"):
                yield Button("Quit (y)", variant="error", id="quit-yes")
                yield Button("Stay (n)", variant="primary", id="quit-no")

    def on_mount(self) -> None:
        self.query_one("#quit-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "quit-yes")

    def action_answer(self, quit_: bool) -> None:
        self.dismiss(quit_)
