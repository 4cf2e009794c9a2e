"""The failures panel: one row per failed chunk attempt (node, chunk, attempt, first error line).

Reads `ClusterSnapshot.failures` (bounded, oldest first) and adds or removes
only the rows that changed; Enter posts `FailuresPanel.FailureSelected` with the
whole `FailureRecord`, whose traceback the app shows in a modal. Never calls the
cluster. Composed by `console.tui.app.ConsoleApp`.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from rich.text import Text
from textual.message import Message
from textual.reactive import var
from textual.widgets import DataTable

from console.snapshot import ClusterSnapshot, FailureRecord
from console import format as f

__all__ = ["FailuresPanel", "failure_key", "failure_cells"]


def failure_key(failure: FailureRecord) -> str:
    """A row key naming one attempt of one chunk on one node."""
    return f"{failure.chunk}:{failure.attempt}:{failure.node}:{failure.t!r}"


def failure_cells(failure: FailureRecord) -> Tuple[str, str, str, str]:
    """(node, chunk, attempt, error) as shown in the panel."""
    attempt = f"{failure.attempt}{' final' if failure.final else ''}"
    return failure.node, str(failure.chunk), attempt, f.first_line(failure.error) or "(no message)"


class FailuresPanel(DataTable):
    """Chunk attempts that failed, oldest first."""

    snapshot: var[Optional[ClusterSnapshot]] = var(None)
    """The latest cluster snapshot (bound to the app's)."""

    class FailureSelected(Message):
        """Enter was pressed on a failure."""

        def __init__(self, failure: FailureRecord) -> None:
            super().__init__()
            self.failure = failure
            """The failure, with its full traceback."""

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self._failures: Tuple[FailureRecord, ...] = ()
        self._rows: Dict[str, FailureRecord] = {}

    def watch_snapshot(self, snapshot: Optional[ClusterSnapshot]) -> None:
        failures = snapshot.failures if snapshot else ()
        if failures == self._failures and self.columns:
            return
        self._failures = failures
        if not self.columns:
            self.add_column("node", key="node")
            self.add_column("chunk", key="chunk")
            self.add_column("try", key="try")
            self.add_column("error", key="error")
        wanted = {failure_key(x): x for x in failures}
        at_end = self.row_count == 0 or self.cursor_row >= self.row_count - 1
        for key in [k for k in self._rows if k not in wanted]:
            del self._rows[key]
            self.remove_row(key)
        for key, failure in wanted.items():
            if key not in self._rows:
                self._rows[key] = failure
                self.add_row(*(Text(cell) for cell in failure_cells(failure)), key=key)
        if at_end and self.row_count:
            self.move_cursor(row=self.row_count - 1)
        self.border_title = Text(f"Failures · {len(failures)}" if failures else "Failures · none")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        failure = self._rows.get(event.row_key.value)
        if failure is not None:
            self.post_message(self.FailureSelected(failure))
