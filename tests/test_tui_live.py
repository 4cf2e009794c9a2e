"""The dashboard on a real cluster: local agents, real pools, keys pressed with Pilot,
and the real `console` under tmux.

Each wait is bounded: the app is polled by hand every 0.2 s until the job ends
or the limit passes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.cluster import Cluster
from console.inventory import DEFAULT_INVENTORY, Node, load_inventory
from console.tui.app import ConsoleApp
from console.tui.screens import TracebackScreen
from console.tui.widgets import FailuresPanel, NodeTable

from helpers import ROOT, write_job
from test_tui_pilot import row_texts, static_text

SIZE = (120, 40)


async def until(pilot, app: ConsoleApp, done, limit: float = 60.0) -> None:
    """Poll the app until `done(snapshot)` or `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        app.poll()
        await pilot.pause(0.2)
        if app.snapshot is not None and done(app.snapshot):
            app.poll()
            await pilot.pause()
            return
    raise AssertionError(f"gave up after {limit} s; last snapshot: {app.snapshot}")


def job_ended(snapshot) -> bool:
    return snapshot.job is not None and snapshot.job.status != "running"


def run_live(nodes, job_path: Path, body) -> None:
    cluster = Cluster(nodes)
    cluster.bootstrap()
    try:
        asyncio.run(body(cluster, ConsoleApp(cluster, job_path=str(job_path), poll_interval=60)))
    finally:
        cluster.close()


def test_start_a_job_with_a_key_and_watch_it_finish(tmp_path):
    """On the local default: s, Enter starts the job; the table and the job panel show it done."""
    job = write_job(tmp_path, function="faulty:square", range_=[0, 400], chunk_size=20, reduce="sum")

    async def body(cluster, app):
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, app, lambda s: s.nodes[0].state == "ready")
            await pilot.press("s")
            await pilot.press("enter")
            await until(pilot, app, job_ended)
            [row] = row_texts(app.query_one(NodeTable))
            assert row[0] == "local" and row[2] == "ready"
            assert row[6] == f"0/{os.cpu_count()}" and row[7] == "20"  # workers busy/total, chunks done
            assert static_text(app, "#job-title") == "job  ok"
            assert static_text(app, "#job-rates").startswith("400 of 400 items")
            assert "20/20 done · 0 failed" in static_text(app, "#job-chunks")
            assert static_text(app, "#job-shares") == "share local 100%"

    run_live(load_inventory(DEFAULT_INVENTORY).nodes, job, body)
    assert json.loads(job.with_suffix(".results.json").read_text())["result"] == sum(x * x for x in range(400))


def test_a_failed_chunk_shows_in_the_panel_and_opens_its_traceback(tmp_path):
    """Item 13 raises: the failures panel lists it, Enter shows the node's traceback."""
    job = write_job(tmp_path, function="faulty:boom_on_13", items=range(20), chunk_size=5, retries=1)

    async def body(cluster, app):
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, app, lambda s: s.nodes[0].state == "ready")
            await pilot.press("s", "enter")
            await until(pilot, app, job_ended)
            assert static_text(app, "#job-title") == "job  failed"
            panel = app.query_one(FailuresPanel)
            rows = [[str(c) for c in panel.get_row_at(i)] for i in range(panel.row_count)]
            assert rows == [["local", "2", "1", "ZeroDivisionError: division by zero"],
                            ["local", "2", "2 final", "ZeroDivisionError: division by zero"]]
            panel.focus()
            await pilot.press("enter")
            assert isinstance(app.screen, TracebackScreen)
            text = static_text(app, "#traceback-text")
            assert "boom_on_13" in text and "ZeroDivisionError" in text

    run_live([Node("local", transport="local", workers=2)], job, body)


def test_drain_a_node_and_the_other_finishes_the_job(tmp_path):
    """Two local nodes; `d` on the first drains it: it takes no new chunk, the second does the rest."""
    job = write_job(tmp_path, function="faulty:slow_square", items=range(120), chunk_size=2)

    async def body(cluster, app):
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, app, lambda s: all(n.state == "ready" for n in s.nodes))
            await pilot.press("s", "enter")
            await until(pilot, app, lambda s: s.nodes[0].chunks_done >= 2)
            app.query_one(NodeTable).focus()
            await pilot.press("d")
            await until(pilot, app, lambda s: s.nodes[0].state == "draining", 5)
            held = app.snapshot.nodes[0].chunks_done + app.snapshot.nodes[0].in_flight
            await until(pilot, app, job_ended)
            assert row_texts(app.query_one(NodeTable))[0][2] == "draining"
            assert app.snapshot.nodes[0].chunks_done <= held
            assert app.snapshot.nodes[1].chunks_done == 60 - app.snapshot.nodes[0].chunks_done

    run_live([Node("one", transport="local", workers=1), Node("two", transport="local", workers=1)], job, body)
    assert json.loads(job.with_suffix(".results.json").read_text())["result"] == [x * x for x in range(120)]


class TmuxPane:
    """A command running in a real 120x40 terminal (a detached tmux session), and what its pane shows."""

    def __init__(self, command: str, hold: bool = False) -> None:
        """`hold` keeps the pane open for 30 s after the command ends, to read what it left."""
        self.session = f"cc{int(time.time() * 1000) % 100000}"
        # The pause lets a freshly started tmux server settle the pane at 120x40 before the app reads its size.
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", "120", "-y", "40",
                        f"sleep 1; {command}" + ("; sleep 30" if hold else "")], check=True)

    def text(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-t", self.session, "-p"], capture_output=True,
                              text=True).stdout

    def wait(self, text: str, limit: float) -> str:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            screen = self.text()
            if text in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{text!r} never showed; the pane:\n{self.text()}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.session, *keys], check=True)

    def wait_closed(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and subprocess.run(
                ["tmux", "has-session", "-t", self.session], capture_output=True).returncode == 0:
            time.sleep(0.25)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.session], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_real_console_under_tmux_runs_the_example(tmp_path):
    """`console ui JOB` in a real terminal: s, Enter, and the pane shows the job done with its answer."""
    from jobs.randsum import expected

    pane = TmuxPane(f"cd {tmp_path} && PYTHONPATH={ROOT} {sys.executable} -m console.cli ui "
                    f"{ROOT / 'jobs/examples/randsum.toml'}")
    try:
        pane.wait("ready", 30)
        pane.keys("s")
        pane.wait("randsum.toml", 10)
        pane.keys("Enter")
        pane.wait("randsum  ok", 90)
        screen = pane.wait(f"answer {expected(range(40))}", 30)  # shown once the results file is written
        assert "4,000,000 of 4,000,000" not in screen  # items are seeds, not draws
        assert "40 of 40 items" in screen and "20/20 done · 0 failed" in screen, screen
        assert "share local 100%" in screen
        pane.keys("q")
        pane.wait_closed(15)
    finally:
        pane.close()
    result = json.loads((tmp_path / "randsum.results.json").read_text())
    assert result["status"] == "ok" and result["result"] == expected(range(40))


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_console_run_in_a_real_terminal_draws_the_live_view_and_the_summary_table(tmp_path):
    """`console run JOB` on a terminal: the live bar and node lines, then the summary as a drawn table with the
    answer under it (off a terminal the same is plain lines: test_run_local.py)."""
    from jobs.randsum import expected

    pane = TmuxPane(f"cd {tmp_path} && PYTHONPATH={ROOT} {sys.executable} -m console.cli run "
                    f"{ROOT / 'jobs/examples/randsum.toml'}", hold=True)
    try:
        screen = pane.wait("results: randsum.results.json", 120)
        assert "40/40 items" in screen and "ETA" in screen, screen
        assert "randsum: ok in" in screen and "┃ node " in screen and "│ local " in screen, screen
        assert f"answer: {expected(range(40))}" in screen, screen
    finally:
        pane.close()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_python_apis_progress_view_in_a_real_terminal():
    """connect(progress=True) in a terminal: the live view of `console run` while the script runs."""
    from jobs.randsum import expected

    pane = TmuxPane(f"cd {ROOT} && PYTHONPATH={ROOT} {sys.executable} examples/pool_randsum.py "
                    f"{ROOT / 'inventory.toml'} 40", hold=True)
    try:
        screen = pane.wait("random integers:", 120)
        assert "40/40 items" in screen and "1 up" in screen, screen
        assert any(line.split()[:2] == ["local", "ready"] for line in screen.splitlines()), screen
        assert f"sum of 4,000,000 random integers: {expected(range(40))}" in screen
    finally:
        pane.close()


@pytest.mark.sshd
def test_dashboard_over_three_ssh_nodes(net_cluster_3, tmp_path):
    """The dashboard on the namespace cluster: three nodes come up, a job spreads over all three."""
    inventory = net_cluster_3.write_inventory(tmp_path / "inventory.toml")
    job = write_job(tmp_path, function="faulty:slow_square", items=range(600), chunk_size=3)

    async def body(cluster, app):
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, app, lambda s: all(n.state == "ready" for n in s.nodes), 60)
            rows = row_texts(app.query_one(NodeTable))
            assert [r[0] for r in rows] == ["node1", "node2", "node3"]
            assert all(r[1].startswith("linux/") and r[2] == "ready" for r in rows)
            await pilot.press("s", "enter")
            await until(pilot, app, job_ended, 90)
            assert static_text(app, "#job-title") == "job  ok"
            assert all(n.chunks_done > 0 for n in app.snapshot.nodes), [
                (n.name, n.state, n.chunks_done, n.errors, n.log[-8:]) for n in app.snapshot.nodes]
            shares = static_text(app, "#job-shares")
            assert all(name in shares for name in ("node1", "node2", "node3"))

    run_live(load_inventory(inventory).nodes, job, body)
    assert json.loads(job.with_suffix(".results.json").read_text())["result"] == [x * x for x in range(600)]
