"""The dashboard's formatting helpers and widget logic, tested as plain objects (no app running)."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.snapshot import ClusterSnapshot, NodeSnapshot
from console import format as f
from console.tui.screens.job_picker import find_job_files
from console.tui.screens.node import node_heading
from console.tui.screens.traceback import failure_heading
from console.tui.widgets.core_bars import core_lines
from console.tui.widgets.failures_panel import failure_cells, failure_key
from console.tui.widgets.job_panel import job_lines, job_progress
from console.tui.widgets.node_columns import COLUMNS, SORTS, Cell, node_cells, sort_value

from snapshot_apps.canned import FAILURE, JOB, PI3, SNAPSHOT, WIN1, WS1

BARE = NodeSnapshot(name="new-1", transport="ssh", address=None, tags=(), state="pending")
"""A node the console knows nothing about yet: every optional figure is None."""


def test_sparkline_scales_0_to_100_and_keeps_newest_right() -> None:
    assert f.sparkline([0, 50, 100], 3) == "▁▅█"
    assert f.sparkline([0, 100], 4) == "  ▁█"
    assert f.sparkline([], 5) == "     "
    assert f.sparkline(None, 2) == "  "


def test_sparkline_averages_a_long_history_into_its_width() -> None:
    assert f.sparkline([0.0] * 30 + [100.0] * 30, 2) == "▁█"
    assert len(f.sparkline([float(i) for i in range(240)], 10)) == 10


def test_sparkline_clamps_and_skips_bad_samples() -> None:
    assert f.sparkline([-5, None, 250], 2) == "▁█"


def test_core_strip_one_block_per_core_grouped_past_width() -> None:
    assert f.core_strip((0.0, 100.0, 50.0), 10) == "▁█▅"
    assert len(f.core_strip(tuple(float(i) for i in range(64)), 8)) == 8
    assert f.core_strip(None) == "n/a"
    assert f.core_strip(()) == "n/a"


@pytest.mark.parametrize(
    "value, text",
    [(None, "n/a"), (0, "0B"), (512, "512B"), (1536, "1.5K"), (17_179_869_184, "16G"), (8 * 1024**3, "8.0G")],
)
def test_human_bytes(value, text) -> None:
    assert f.human_bytes(value) == text


@pytest.mark.parametrize(
    "value, text",
    [(None, "n/a"), (0, "0"), (9.46, "9.5"), (950, "950"), (1234.5, "1.2k"), (123_456, "123k"), (4.1e6, "4.1M")],
)
def test_rate(value, text) -> None:
    assert f.rate(value) == text


@pytest.mark.parametrize(
    "value, text", [(None, "n/a"), (-3, "0s"), (42, "42s"), (62, "1m02s"), (3725, "1h02m")]
)
def test_duration(value, text) -> None:
    assert f.duration(value) == text


def test_small_cells_say_na_for_none() -> None:
    assert f.percent(None) == "n/a"
    assert f.percent(87.5) == " 88%"
    assert f.memory(None, 1024) == "n/a"
    assert f.memory(41.0, None) == "41%"
    assert f.memory(41.0, 17_179_869_184) == "41% of 16G"
    assert f.os_arch(None, None) == "n/a"
    assert f.os_arch("windows", None) == "windows"
    assert f.workers(0, None) == "n/a"
    assert f.workers(7, 8) == "7/8"
    assert f.hbar(None, 4) == "░░░░"
    assert f.hbar(50, 4) == "██░░"


def test_first_line_skips_blank_lines() -> None:
    assert f.first_line("\n  ValueError: x  \nmore") == "ValueError: x"
    assert f.first_line(None) == ""


@pytest.mark.parametrize(
    "query, names",
    [
        ("", ["ws-1", "pi-3", "win-1"]),
        ("lost", ["pi-3"]),
        ("state:busy", ["ws-1"]),
        ("tag:pi", ["pi-3"]),
        ("pi", ["pi-3"]),
        ("os:windows", ["win-1"]),
        ("armv7", ["pi-3"]),
        ("name:w", ["ws-1", "win-1"]),
        ("WIN", ["win-1"]),
        ("linux fast", ["ws-1"]),
        ("state:ready tag:pi", []),
    ],
)
def test_node_filter(query, names) -> None:
    assert [n.name for n in SNAPSHOT.nodes if f.node_matches(n, query)] == names


def test_node_summary_leads_with_the_error() -> None:
    assert f.node_summary(PI3) == ("pi-3 (10.0.0.23:22) lost: pi-3 (10.0.0.23:22): no answer within 10 s "
                                   "(attempt 2 of 3).")
    assert "load 7.9 7.5 6.8" in f.node_summary(WS1)
    assert "n/a" in f.node_summary(BARE)


def test_work_shares_largest_first_with_others_summed() -> None:
    assert f.work_shares(SNAPSHOT.nodes) == [("ws-1", 42 / 64), ("win-1", 19 / 64), ("pi-3", 3 / 64)]
    assert f.work_shares(SNAPSHOT.nodes, top=1) == [("ws-1", 42 / 64), ("2 others", 22 / 64)]
    assert f.work_shares([BARE]) == []


def test_new_lines_appends_only_what_is_new() -> None:
    assert f.new_lines(["a", "b"], ["a", "b"]) == (False, [])
    assert f.new_lines([], ["a"]) == (False, ["a"])
    assert f.new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == (False, ["d", "e"])
    assert f.new_lines(["a", "b"], ["x", "y"]) == (True, ["x", "y"])
    assert f.new_lines(["a"], []) == (True, [])


def test_node_cells_for_each_canned_node() -> None:
    assert len(node_cells(WS1)) == len(COLUMNS)
    assert node_cells(WS1)[:3] == ("ws-1", "linux/x86_64", "busy")
    assert node_cells(WS1)[5:] == ("41% of 16G", "7/8", "42", "1.2k", "0")
    assert node_cells(PI3)[3].startswith(" n/a ")
    assert node_cells(WIN1)[1] == "windows/AMD64"


def test_node_cells_fit_their_columns_and_never_raise_on_none() -> None:
    for node in (WS1, PI3, WIN1, BARE):
        for (key, _, width), text in zip(COLUMNS, node_cells(node)):
            assert width is None or len(text) <= width, (node.name, key, text)
    assert node_cells(BARE)[1:] == ("n/a", "pending", " n/a           ", "n/a", "n/a", "n/a", "0", "0", "0")


def test_sort_values() -> None:
    nodes = list(SNAPSHOT.nodes)

    def order(by):
        return [n.name for i, n in sorted(enumerate(nodes), key=lambda p: sort_value(p[1], by, p[0]))]

    assert set(SORTS) >= {"inventory", "name", "state", "cpu", "errors"}
    assert order("inventory") == ["ws-1", "pi-3", "win-1"]
    assert order("name") == ["pi-3", "win-1", "ws-1"]
    assert order("state") == ["pi-3", "ws-1", "win-1"]
    assert order("cpu") == ["ws-1", "win-1", "pi-3"]
    assert order("errors") == ["win-1", "ws-1", "pi-3"]


def test_job_lines_for_a_running_job() -> None:
    lines = job_lines(SNAPSHOT, "hint")
    assert lines["title"] == "factor-primes  running"
    assert lines["rates"] == "64,000 of 100,000 items · 1.6k items/s"
    assert lines["times"] == "elapsed 2m05s · ETA 22s"
    assert lines["chunks"] == "chunks 64/100 done · 0 failed · 18 in flight · 18 queued"
    assert lines["shares"] == "share ws-1 66% · win-1 30% · pi-3 5%"


def test_job_lines_before_a_job_and_with_unknown_totals() -> None:
    assert job_lines(None, "Press s")["rates"] == "Press s"
    assert job_lines(ClusterSnapshot(t=0.0, nodes=()), "Press s")["title"] == "No job yet"
    vague = JOB._replace(items_total=None, chunks_total=None, eta_s=None)
    lines = job_lines(ClusterSnapshot(t=0.0, nodes=(BARE,), job=vague), "")
    assert lines["times"] == "elapsed 2m05s · ETA n/a"
    assert lines["shares"] == "share n/a"
    assert job_progress(vague) == (None, 0.0)
    assert job_progress(JOB._replace(items_total=None)) == (100.0, 64.0)


def test_failure_rows() -> None:
    assert failure_cells(FAILURE) == ("win-1", "17", "1",
                                      "ZeroDivisionError: integer division or modulo by zero [chunk 17]")
    final = FAILURE._replace(attempt=3, final=True, error="")
    assert failure_cells(final)[2:] == ("3 final", "(no message)")
    assert failure_key(FAILURE) != failure_key(final)
    assert "chunk 17 on win-1, attempt 1" in failure_heading(FAILURE)


def test_core_lines_one_per_core_then_memory() -> None:
    lines = core_lines(WS1, 40)
    assert len(lines) == 8 + 2
    assert lines[0].startswith("cpu0 ") and lines[0].endswith(" 95%")
    assert all(len(line) <= 40 for line in lines)
    assert lines[-1] == "     6.4G used of 16G"
    assert core_lines(PI3, 40)[:2] == ["cpu  n/a (the node sent no per-core figures)", "mem  n/a"]
    assert core_lines(None, 40) == ["n/a"]


def test_node_heading_shows_error_and_na() -> None:
    assert node_heading(PI3, "pi-3").splitlines()[-1] == ("error: pi-3 (10.0.0.23:22): no answer within 10 s "
                                                          "(attempt 2 of 3).")
    assert "python n/a" in node_heading(BARE, "new-1")
    assert node_heading(None, "gone") == "gone: not in the latest snapshot"


def test_find_job_files_lists_examples_first_and_skips_non_jobs(tmp_path: Path) -> None:
    (tmp_path / "jobs" / "examples").mkdir(parents=True)
    (tmp_path / "jobs" / "examples" / "sum.toml").write_text("")
    (tmp_path / "mine.toml").write_text("")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "inventory.toml").write_text("")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.toml").write_text("")
    (tmp_path / "a" / "b" / "c" / "d").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "d" / "deep.toml").write_text("")
    found = find_job_files(tmp_path)
    local = [p for p in found if not Path(p).is_absolute()]
    assert local == ["jobs/examples/sum.toml", "mine.toml"]


def test_cell_renders_its_text_plainly_in_its_style() -> None:
    from rich.console import Console
    from rich.style import Style

    console = Console(width=20, color_system=None)
    plain = Cell("[b]ws-1[/b]")
    assert str(plain) == "[b]ws-1[/b]"
    assert console.measure(plain).maximum == 11
    assert [s.text for s in console.render(plain)] == ["[b]ws-1[/b]"]
    bold = Cell("lost", lambda: Style(bold=True))
    assert [(s.text, s.style) for s in console.render(bold)] == [("lost", Style(bold=True))]


def test_column_chart_scales_to_the_top_in_eighth_blocks() -> None:
    assert f.column_chart([0, 4, 8], 3, 2, top=8) == ["  █", " ██"]
    assert f.column_chart([1, 2], 3, 1) == ["▄█"]
    assert f.column_chart([5] * 100, 4, 1) == ["████"], "buckets averaged into the width"
    assert f.column_chart([], 4, 2) == ["", ""] and f.column_chart([1], 0, 2) == []


def test_history_keeps_the_whole_job_in_bounded_samples() -> None:
    from console.rates import History

    history = History(size=4, every=1.0)
    for t in range(20):
        history.add(float(t), float(t), None)
    assert len(history.samples) <= 4
    assert history.samples[0][0] == 0.0 and history.samples[-1][0] >= 12.0


def test_node_heading_shows_the_jobs_packages_on_the_node() -> None:
    ready = BARE._replace(packages="numpy 2.0.2, sympy 1.13.3")
    assert node_heading(ready, "new-1").splitlines()[-1] == "packages: numpy 2.0.2, sympy 1.13.3"
    assert "packages" not in node_heading(BARE, "new-1")
