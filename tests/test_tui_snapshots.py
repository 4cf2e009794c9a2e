"""SVG snapshots of the dashboard at 120x40 on canned data: busy ws-1, lost pi-3, win-1 with a failure.

Regenerate with `pytest tests/test_tui_snapshots.py --snapshot-update` and look
at the SVGs in `tests/__snapshots__/` before keeping them.
"""

from __future__ import annotations

from snapshot_apps.dashboard import build_app

SIZE = (120, 40)


def test_main_screen(snap_compare) -> None:
    """Node table, job panel and failures panel, cursor on ws-1."""
    assert snap_compare(build_app(job_path="jobs/examples/factorize.toml"), terminal_size=SIZE)


def test_node_screen_of_a_busy_node(snap_compare) -> None:
    """Enter on ws-1: per-core bars, memory, recent chunks, agent log."""
    assert snap_compare(build_app(), terminal_size=SIZE, press=["enter"])


def test_node_screen_of_a_lost_pi(snap_compare) -> None:
    """Enter on pi-3: its error sentence, and n/a where it sent no figures."""
    assert snap_compare(build_app(), terminal_size=SIZE, press=["down", "enter"])


def test_traceback_modal(snap_compare) -> None:
    """Tab to the failures panel, Enter on win-1's chunk 17."""
    assert snap_compare(build_app(), terminal_size=SIZE, press=["tab", "enter"])
