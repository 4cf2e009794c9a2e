"""The dashboard driven by Pilot on a FakeControl: what it shows, and what each key asks of the control.

Each test polls by hand (`app.poll()`) instead of waiting for the timer, so
nothing sleeps; `build_app` sets the timer to 60 s and a clock that steps a second per read.
The coroutines run under `asyncio.run` (see `run_async`), so no async plugin is needed.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, Coroutine, List, Tuple

from textual.widgets import Input, Static

from console.snapshot import ClusterSnapshot, NodeSnapshot
from console.tui.app import ConsoleApp
from console.tui.screens import JobPicker, NodeScreen, QuitScreen, TracebackScreen
from console.tui.widgets import FailuresPanel, JobChart, JobPanel, NodeTable

from snapshot_apps.canned import FAILURE, JOB, SNAPSHOT, WS1
from snapshot_apps.dashboard import FakeControl, build_app

SIZE = (120, 40)


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body with `asyncio.run`, keeping its fixtures."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def record_notes(app: ConsoleApp) -> List[Tuple[str, str]]:
    """Make `app.notify` record (message, severity) and return the list it fills."""
    notes: List[Tuple[str, str]] = []
    app.notify = lambda message, *, severity="information", **kw: notes.append((message, severity))
    return notes


def row_texts(table: NodeTable) -> List[List[str]]:
    """The table's cells as plain text, in screen order."""
    return [[str(cell) for cell in table.get_row(row.key)] for row in table.ordered_rows]


def static_text(app: ConsoleApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


@run_async
async def test_node_table_shows_each_node_with_state_words() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        rows = row_texts(app.query_one(NodeTable))
        assert [r[0] for r in rows] == ["ws-1", "pi-3", "win-1"]
        assert rows[0][1:3] == ["linux/x86_64", "busy"]
        assert rows[1][1:3] == ["linux/armv7l", "lost"]
        assert rows[1][3].startswith(" n/a")
        assert rows[2][1:3] == ["windows/AMD64", "ready"]
        assert rows[2][5:] == ["63% of 8.0G", "2/4", "19", "402", "1"]
        assert "ws-1 (10.0.0.11:22)" in app.query_one(NodeTable).border_subtitle
        await pilot.press("down")
        assert "no answer within 10 s" in app.query_one(NodeTable).border_subtitle


@run_async
async def test_a_new_snapshot_updates_only_the_cells_that_changed() -> None:
    control = FakeControl()
    app = build_app(control)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(NodeTable)
        await pilot.press("down", "down")
        updates = []
        original = table.update_cell

        def spy(row: str, column: str, value: object, **kw: Any) -> None:
            updates.append((row, column))
            original(row, column, value, **kw)

        table.update_cell = spy
        busier = WS1._replace(chunks_done=43, errors=2)
        nodes = (busier,) + SNAPSHOT.nodes[1:]
        control.current = SNAPSHOT._replace(t=SNAPSHOT.t + 1, nodes=nodes)
        app.poll()
        await pilot.pause()
        assert sorted(updates) == [("ws-1", "done"), ("ws-1", "errors")]
        assert row_texts(table)[0][7:] == ["43", "1.2k", "2"]
        assert table.row_count == 3 and table.selected_node == "win-1"
        assert app.query_one(NodeTable) is table


@run_async
async def test_job_panel_shows_progress_rates_and_shares() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        panel = app.query_one(JobPanel)
        assert static_text(app, "#job-title") == "factor-primes  running"
        assert static_text(app, "#job-rates") == "64,000 of 100,000 items · 1.6k items/s"
        assert static_text(app, "#job-chunks") == "chunks 64/100 done · 0 failed · 18 in flight · 18 queued"
        assert static_text(app, "#job-shares") == "share ws-1 66% · win-1 30% · pi-3 5%"
        assert panel.has_class("-running")
        assert static_text(app, "#job-answer") == ""
        app.control.current = SNAPSHOT._replace(job=JOB._replace(status="failed"))
        app.poll()
        assert panel.has_class("-failed") and not panel.has_class("-running")
        ended = JOB._replace(status="ok", answer="1,000 entries: {7: [7], …} (all in out.json)")
        app.control.current = SNAPSHOT._replace(job=ended)
        app.poll()
        await pilot.pause()
        assert static_text(app, "#job-answer") == "answer 1,000 entries: {7: [7], …} (all in out.json)"


@run_async
async def test_the_chart_shows_the_jobs_items_per_second_and_cpu() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        lines = str(app.query_one(JobChart).render()).splitlines()
        assert lines[0] == "items/s 1.6k, peak 1.7k"
        assert lines[4] == "CPU 92%, over 2m05s"
        assert len(lines) == 7 and set(lines[3].strip()) <= set(" ▁▂▃▄▅▆▇█") and "█" in lines[3]


@run_async
async def test_before_any_job_the_panel_says_how_to_start_one() -> None:
    app = build_app(FakeControl(SNAPSHOT._replace(job=None, failures=())), job_path="jobs/x.toml")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert static_text(app, "#job-title") == "No job yet"
        assert static_text(app, "#job-rates") == "Press s to start jobs/x.toml."
        assert app.query_one(FailuresPanel).row_count == 0


@run_async
async def test_failure_listed_and_enter_opens_its_traceback() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        panel = app.query_one(FailuresPanel)
        assert [str(c) for c in panel.get_row_at(0)] == ["win-1", "17", "1", FAILURE.error]
        panel.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, TracebackScreen)
        assert "ZeroDivisionError: integer division" in static_text(app, "#traceback-text")
        assert "factor.py" in static_text(app, "#traceback-text")
        await pilot.press("escape")
        assert not isinstance(app.screen, TracebackScreen)


@run_async
async def test_drain_and_reconnect_keys_aim_at_the_cursor_row() -> None:
    control = FakeControl()
    app = build_app(control)
    async with app.run_test(size=SIZE) as pilot:
        notes = record_notes(app)
        await pilot.press("d", "down", "r", "b")
        assert control.calls == [("drain", ("ws-1",)), ("reconnect", ("pi-3",)), ("bootstrap", (None,))]
        assert [severity for _, severity in notes] == ["information"] * 3


@run_async
async def test_reconnect_of_a_pending_node_bootstraps_it() -> None:
    pending = NodeSnapshot(name="new-1", transport="ssh", address=None, tags=(), state="pending")
    control = FakeControl(ClusterSnapshot(t=0.0, nodes=(pending,)))
    app = build_app(control)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        assert control.calls == [("bootstrap", (["new-1"],))]


@run_async
async def test_control_errors_become_notifications_not_tracebacks() -> None:
    control = FakeControl()
    control.errors["drain"] = RuntimeError("ws-1: not connected; press r to reconnect it.")
    control.errors["cancel_job"] = ValueError()
    app = build_app(control)
    async with app.run_test(size=SIZE) as pilot:
        notes = record_notes(app)
        await pilot.press("d", "c")
        assert notes == [
            ("ws-1: not connected; press r to reconnect it.", "error"),
            ("cancel_job failed: ValueError", "error"),
        ]
        assert app.is_running


@run_async
async def test_a_failing_snapshot_is_reported_once_and_the_last_one_kept() -> None:
    control = FakeControl()
    app = build_app(control)
    async with app.run_test(size=SIZE):
        notes = record_notes(app)
        control.errors["snapshot"] = RuntimeError("cluster thread died: see the log")
        app.poll()
        app.poll()
        assert notes == [("cluster thread died: see the log", "error")]
        assert app.snapshot is SNAPSHOT


@run_async
async def test_start_key_opens_the_picker_with_job_path_and_enter_starts_it() -> None:
    control = FakeControl()
    app = build_app(control, job_path="jobs/examples/factor.toml")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, JobPicker)
        assert app.screen.query_one(Input).value == "jobs/examples/factor.toml"
        await pilot.press("enter")
        assert not isinstance(app.screen, JobPicker)
        assert control.calls == [("start_job", ("jobs/examples/factor.toml",))]


@run_async
async def test_picker_takes_a_typed_path_and_escape_starts_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    control = FakeControl()
    control.errors["start_job"] = RuntimeError("other.toml: no such file")
    app = build_app(control)
    async with app.run_test(size=SIZE) as pilot:
        notes = record_notes(app)
        await pilot.press("s", "escape")
        assert control.calls == []
        await pilot.press("s")
        await pilot.press("tab", *"other.toml", "enter")
        assert control.calls == [("start_job", ("other.toml",))]
        assert notes == [("other.toml: no such file", "error")]


@run_async
async def test_quit_asks_first_while_a_job_runs() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("n")
        assert not isinstance(app.screen, QuitScreen) and app.return_code is None
        await pilot.press("q", "y")
        assert app.return_code == 0


@run_async
async def test_quit_is_immediate_without_a_running_job() -> None:
    done = SNAPSHOT._replace(job=JOB._replace(status="ok"))
    app = build_app(FakeControl(done))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        assert app.return_code == 0


@run_async
async def test_filter_box_narrows_the_table_and_swallows_action_keys() -> None:
    control = FakeControl()
    app = build_app(control)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(NodeTable)
        await pilot.press("slash", *"state:lost")
        assert [r[0] for r in row_texts(table)] == ["pi-3"]
        assert control.calls == [] and app.screen is app.screen_stack[0]
        await pilot.press("escape")
        assert app.focused is table
        await pilot.press("slash", "enter")
        assert app.focused is table
        app.query_one(Input).value = "tag:windows fast"
        await pilot.pause()
        assert table.row_count == 0 and table.selected_node is None
        notes = record_notes(app)
        await pilot.press("d")
        assert notes == [("No node selected: move the cursor to a node first.", "warning")]
        app.query_one(Input).value = ""
        await pilot.pause()
        assert [r[0] for r in row_texts(table)] == ["ws-1", "pi-3", "win-1"]


@run_async
async def test_sort_key_cycles_and_the_cursor_follows_its_node() -> None:
    app = build_app()
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(NodeTable)
        await pilot.press("down", "down")
        assert table.selected_node == "win-1"
        await pilot.press("o")
        assert table.sort_by == "name"
        assert [r[0] for r in row_texts(table)] == ["pi-3", "win-1", "ws-1"]
        assert table.selected_node == "win-1"
        await pilot.press("o")
        assert [r[0] for r in row_texts(table)] == ["pi-3", "ws-1", "win-1"]
        assert "sort state" in table.border_title


@run_async
async def test_node_screen_opens_with_enter_and_follows_snapshots() -> None:
    control = FakeControl()
    app = build_app(control)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        assert isinstance(app.screen, NodeScreen) and app.screen.node_name == "ws-1"
        assert "ws-1  busy" in static_text(app, "#node-heading")
        log = app.screen.query_one("#node-log")
        assert list(log.lines)[-1] == "chunk 41 done in 7.88 s"
        lost = WS1._replace(state="lost", error="ws-1: connection reset", log=WS1.log + ("bye",))
        control.current = SNAPSHOT._replace(nodes=(lost,) + SNAPSHOT.nodes[1:])
        app.poll()
        await pilot.pause()
        assert "ws-1  lost" in static_text(app, "#node-heading")
        assert "error: ws-1: connection reset" in static_text(app, "#node-heading")
        assert list(log.lines)[-2:] == ["chunk 41 done in 7.88 s", "bye"]
        await pilot.press("d", "r")
        assert control.calls == [("drain", ("ws-1",)), ("reconnect", ("ws-1",))]
        await pilot.press("escape")
        assert isinstance(app.query_one(NodeTable), NodeTable) and not isinstance(app.screen, NodeScreen)


@run_async
async def test_commands_in_the_palette() -> None:
    app = build_app()
    async with app.run_test(size=SIZE):
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for title in ("Bootstrap all nodes", "Reconnect node", "Start job", "Cancel job", "Drain node", "Quit"):
            assert title in titles


@run_async
async def test_nodes_with_nothing_known_render_na() -> None:
    bare = NodeSnapshot(name="new-1", transport="local", address=None, tags=(), state="connecting")
    vague = JOB._replace(items_total=None, chunks_total=None, eta_s=None)
    app = build_app(FakeControl(ClusterSnapshot(t=0.0, nodes=(bare,), job=vague)))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        assert "python n/a" in static_text(app, "#node-heading")
        await pilot.press("escape")
        assert row_texts(app.query_one(NodeTable))[0][1] == "n/a"
        assert not app.query_one("#job-bar").display


@run_async
async def test_rows_out_of_view_catch_up_when_scrolled_into_view() -> None:
    many = tuple(WS1._replace(name=f"n{i:03d}") for i in range(100))
    control = FakeControl(ClusterSnapshot(t=0.0, nodes=many))
    app = build_app(control)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(NodeTable)
        last = many[-1]._replace(errors=7)
        control.current = ClusterSnapshot(t=1.0, nodes=many[:-1] + (last,))
        app.poll()
        await pilot.pause()
        assert str(table.get_row("n099")[-1]) == "0"
        await pilot.press("ctrl+end")
        await pilot.pause()
        assert str(table.get_row("n099")[-1]) == "7"


@run_async
async def test_node_table_redraws_once_a_second_but_at_once_on_a_state_change() -> None:
    """Metrics arrive once a second, so the table redraws at that rate; a state change shows at once."""
    control = FakeControl()
    now = [0.0]
    app = ConsoleApp(control, clock=lambda: now[0], poll_interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(NodeTable)

        def ws1_cpu() -> str:
            return row_texts(table)[0][3]

        before = ws1_cpu()
        hotter = WS1._replace(cpu_percent=12.0)
        control.current = SNAPSHOT._replace(nodes=(hotter,) + SNAPSHOT.nodes[1:])
        now[0] = 0.5
        app.poll()
        await pilot.pause()
        assert ws1_cpu() == before
        assert app.snapshot is control.current
        now[0] = 1.1
        app.poll()
        await pilot.pause()
        assert ws1_cpu().split()[0] == "12%"
        lost = hotter._replace(state="lost")
        control.current = SNAPSHOT._replace(nodes=(lost,) + SNAPSHOT.nodes[1:])
        now[0] = 1.2
        app.poll()
        await pilot.pause()
        assert row_texts(table)[0][2] == "lost"
