"""The Textual dashboard: `ConsoleApp`, and `run_dashboard` for `console` / `console ui [JOB]`.

The app holds one reactive `snapshot`, refreshed by `poll()` every
`poll_interval` seconds from `ClusterControl.snapshot()`; widgets bind to it
and redraw in place. Keys call the other `ClusterControl` methods, which return
at once; an exception from one is shown with `notify`, never as a traceback.
`s` always opens the job picker with `job_path` preselected, so starting that
job takes one Enter (a confirmation, never an automatic start).
It must use nothing of the cluster but the `ClusterControl` protocol, and it
neither bootstraps on start nor closes the control: its caller owns both.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Iterable, Optional

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.reactive import var
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Input

from console.control import ClusterControl
from console.snapshot import ClusterSnapshot
from console.tui.screens import JobPicker, NodeScreen, QuitScreen, TracebackScreen
from console.tui.screens.job_picker import find_job_files
from console.tui.widgets import FailuresPanel, JobChart, JobPanel, NodeTable

__all__ = ["ConsoleApp", "run_dashboard"]

_CLUSTER_ACTIONS = frozenset(
    {"bootstrap_all", "reconnect_node", "start_job", "cancel_job", "drain_node"}
)
"""Actions that steer the cluster: off while a modal screen is up."""
TABLE_REFRESH_S = 1.0
"""Seconds between node-table redraws when no node changed state."""
_TABLE_ACTIONS = frozenset({"cycle_sort", "focus_filter", "focus_table"})
"""Actions on the main screen's table: only there."""


class ConsoleApp(App[int]):
    """Live view of the cluster, and the keys that steer it."""

    CSS_PATH = "app.tcss"
    TITLE = "Cluster console"
    BINDINGS = [
        Binding("b", "bootstrap_all", "Bootstrap all"),
        Binding("r", "reconnect_node", "Reconnect node"),
        Binding("s", "start_job", "Start job"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("d", "drain_node", "Drain node"),
        Binding("o", "cycle_sort", "Sort"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "focus_table", "Table", show=False),
        Binding("q", "quit", "Quit"),
    ]

    snapshot: var[Optional[ClusterSnapshot]] = var(None)
    """The newest snapshot from the control; None until the first poll answers."""
    table_snapshot: var[Optional[ClusterSnapshot]] = var(None)
    """What the node table draws: `snapshot` at most once a second (node metrics arrive at that
    rate, and redrawing DataTable is most of the app's cost), at once when a node's or the job's state changes."""

    def __init__(
        self,
        control: ClusterControl,
        job_path: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: float = 0.25,
    ) -> None:
        super().__init__()
        self.control = control
        """The cluster, seen through `ClusterControl` only."""
        self.job_path = job_path
        """Job file preselected in the picker (the last one started, once one is)."""
        self.poll_interval = poll_interval
        """Seconds between snapshots."""
        self.poll_seconds: Deque[float] = deque(maxlen=10_000)
        """How long each poll took, snapshot plus widget updates, by `clock`."""
        self._clock = clock
        self._poll_error: Optional[str] = None
        self._job_error: Optional[str] = None
        """The console error of the last job, once notified."""
        self._table_at = float("-inf")
        self._table_states: tuple = ()

    def compose(self) -> ComposeResult:
        hint = f"Press s to start {self.job_path}." if self.job_path else "Press s to start a job."
        yield Header()
        yield Input(
            placeholder="/ filter: name, state or tag (lost, tag:pi, os:windows, name:ws)",
            id="node-filter",
            compact=True,
        )
        yield NodeTable(id="nodes").data_bind(snapshot=ConsoleApp.table_snapshot)
        with Horizontal(id="bottom"):
            yield JobPanel(hint, id="job").data_bind(ConsoleApp.snapshot)
            yield JobChart(id="chart").data_bind(ConsoleApp.snapshot)
            yield FailuresPanel(id="failures").data_bind(ConsoleApp.snapshot)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(self.poll_interval, self.poll)
        self.query_one(NodeTable).focus()

    def poll(self) -> None:
        """Take a snapshot from the control and hand it to the widgets."""
        start = self._clock()
        try:
            snapshot = self.control.snapshot()
        except Exception as exc:
            message = str(exc) or f"snapshot failed: {type(exc).__name__}"
            if message != self._poll_error:
                self._poll_error = message
                self.notify(message, severity="error")
            return
        self._poll_error = None
        self.snapshot = snapshot
        error = snapshot.job.error if snapshot.job else None
        if error and error != self._job_error:
            self.notify(error, title="The job stopped", severity="error", timeout=60)
        self._job_error = error
        states = (snapshot.job.status if snapshot.job else None,
                  tuple((node.name, node.state) for node in snapshot.nodes))
        if start - self._table_at >= TABLE_REFRESH_S or states != self._table_states:
            self.table_snapshot = snapshot
            self._table_at, self._table_states = start, states
        self.poll_seconds.append(self._clock() - start)

    def watch_snapshot(self, snapshot: Optional[ClusterSnapshot]) -> None:
        if snapshot is not None:
            subtitle = f"{snapshot.nodes_up} of {len(snapshot.nodes)} nodes up"
            if subtitle != self.sub_title:
                self.sub_title = subtitle

    @property
    def job_running(self) -> bool:
        """Whether the latest snapshot shows a running job."""
        job = self.snapshot.job if self.snapshot else None
        return job is not None and job.status == "running"

    def selected_node(self) -> Optional[str]:
        """The node an action aims at: the node screen's, else the table's cursor row."""
        if isinstance(self.screen, NodeScreen):
            return self.screen.node_name
        return self.query_one(NodeTable).selected_node

    def check_action(self, action: str, parameters: tuple) -> Optional[bool]:
        if action in _CLUSTER_ACTIONS:
            return not isinstance(self.screen, ModalScreen)
        if action in _TABLE_ACTIONS:
            return self.screen is self.screen_stack[0]
        return True

    def _call(self, method: Callable[..., object], *args: object) -> bool:
        """Call a control method; show its exception as an error notification."""
        try:
            method(*args)
        except Exception as exc:
            message = str(exc) or f"{method.__name__} failed: {type(exc).__name__}"
            self.notify(message, severity="error")
            return False
        return True

    def _node_or_warn(self) -> Optional[str]:
        name = self.selected_node()
        if name is None:
            self.notify("No node selected: move the cursor to a node first.", severity="warning")
        return name

    def action_bootstrap_all(self) -> None:
        """Connect to every node and start its agent."""
        if self._call(self.control.bootstrap, None):
            self.notify("Bootstrapping every node.")

    def action_reconnect_node(self) -> None:
        """Bootstrap the selected node if it never came up, else reconnect it."""
        name = self._node_or_warn()
        if name is None:
            return
        nodes = self.snapshot.nodes if self.snapshot else ()
        node = next((n for n in nodes if n.name == name), None)
        if node is None or node.state in ("pending", "failed"):
            if self._call(self.control.bootstrap, [name]):
                self.notify(f"Bootstrapping {name}.")
        elif self._call(self.control.reconnect, name):
            self.notify(f"Reconnecting {name}; its chunks go back to the queue.")

    def action_start_job(self) -> None:
        """Open the job picker; start the file chosen."""
        self.push_screen(JobPicker(find_job_files(Path.cwd()), self.job_path), self._start_job)

    def _start_job(self, path: Optional[str]) -> None:
        if path and self._call(self.control.start_job, path):
            self.job_path = path
            self.notify(f"Starting {path}.")

    def action_cancel_job(self) -> None:
        """Cancel the running job."""
        if self._call(self.control.cancel_job):
            self.notify("Cancelling the job.")

    def action_drain_node(self) -> None:
        """Let the selected node finish its chunks and send it no more."""
        name = self._node_or_warn()
        if name is not None and self._call(self.control.drain, name):
            self.notify(f"Draining {name}: it finishes what it holds and gets nothing more.")

    def action_cycle_sort(self) -> None:
        """Sort the node table by the next column."""
        self.query_one(NodeTable).cycle_sort()

    def action_focus_filter(self) -> None:
        """Move to the filter box."""
        self.query_one("#node-filter", Input).focus()

    def action_focus_table(self) -> None:
        """Back to the node table."""
        self.query_one(NodeTable).focus()

    async def action_quit(self) -> None:
        """Quit, asking first while a job is running."""
        if not self.job_running:
            self.exit(0)
            return
        job = self.snapshot.job
        question = (
            f"Job {job.name} is running ({job.chunks_done} chunks done). Quit anyway? "
            "The job is cancelled; its finished chunks stay in the journal for --resume."
        )
        self.push_screen(QuitScreen(question), lambda quit_: self.exit(0) if quit_ else None)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "node-filter":
            self.query_one(NodeTable).filter_text = event.value

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "node-filter":
            self.action_focus_table()

    def on_node_table_node_selected(self, event: NodeTable.NodeSelected) -> None:
        self.push_screen(NodeScreen(event.node))

    def on_failures_panel_failure_selected(self, event: FailuresPanel.FailureSelected) -> None:
        self.push_screen(TracebackScreen(event.failure))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Bootstrap all nodes", "Connect to every node and start its agent (b)",
                            self.action_bootstrap_all)
        yield SystemCommand("Reconnect node", "Bootstrap or reconnect the selected node (r)",
                            self.action_reconnect_node)
        yield SystemCommand("Start job", "Pick a job file and start it (s)", self.action_start_job)
        yield SystemCommand("Cancel job", "Stop the running job (c)", self.action_cancel_job)
        yield SystemCommand("Drain node", "Send the selected node no more chunks (d)",
                            self.action_drain_node)
        yield SystemCommand("Sort nodes", "Sort the node table by the next column (o)",
                            self.action_cycle_sort)


def run_dashboard(control: ClusterControl, job_path: Optional[str] = None) -> int:
    """Run the dashboard until the operator quits; the exit code (0 normally).

    The caller bootstraps the cluster first if it wants to, and closes `control` after.
    """
    app = ConsoleApp(control, job_path=job_path)
    app.run()
    return app.return_code or 0
