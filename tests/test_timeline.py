"""Where the time went: chunk attempts in the results file, `console timeline` and its figure's data."""

import json

import pytest

from helpers import run_console, write_job

pytest.importorskip("matplotlib", reason='console timeline needs the [plot] extra: pip install -e ".[plot]"')

from console.timeline import lanes, timeline_figure  # noqa: E402


@pytest.fixture(scope="module")
def retried_job(tmp_path_factory):
    """A job on the local node's 2 workers whose item 13 raises on every attempt (retries = 1)."""
    directory = tmp_path_factory.mktemp("timeline")
    job = write_job(directory, function="faulty:boom_on_13", items=range(40), chunk_size=4, retries=1)
    proc = run_console("run", str(job), env={"COLUMNS": "1000"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return job, json.loads(job.with_suffix(".results.json").read_text())


def test_every_attempt_is_in_the_results_file(retried_job):
    _, doc = retried_job
    attempts = doc["attempts"]
    assert sorted((a["chunk"], a["attempt"]) for a in attempts if a["outcome"] == "done") == [
        (c, 1) for c in range(10) if c != 3]
    assert [(a["chunk"], a["attempt"], a["outcome"]) for a in attempts if a["chunk"] == 3] == [
        (3, 1, "error"), (3, 2, "error")]
    assert all(a["node"] == "local" and a["worker"] in ("0", "1") for a in attempts)
    assert all(0 <= a["start_s"] <= a["end_s"] <= doc["elapsed_s"] + 0.01 for a in attempts)


def test_console_timeline_writes_a_png(retried_job, tmp_path):
    job, _ = retried_job
    picture = tmp_path / "timeline.png"
    proc = run_console("timeline", str(job.with_suffix(".results.json")), "-o", str(picture))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{picture}: 2 lane(s)"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_has_a_lane_per_worker_and_a_bar_per_attempt(retried_job):
    _, doc = retried_job
    figure = timeline_figure(doc)
    [axes] = figure.axes
    assert [label.get_text() for label in axes.get_yticklabels()] == lanes(doc["attempts"]) == ["local/0", "local/1"]
    bars = {}
    for collection in axes.collections:
        bars[collection.get_label()] = bars.get(collection.get_label(), 0) + len(collection.get_paths())
    assert bars == {"done": 9, "error": 2}
    assert {t.get_text() for t in axes.get_legend().get_texts()} == {"done", "error"}


def test_lanes_follow_nodes_then_worker_numbers():
    attempts = [{"node": n, "worker": w} for n, w in (("b", "10"), ("a", "2"), ("b", ""), ("b", "9"), ("dask", ""))]
    assert lanes(attempts) == ["a/2", "b/9", "b/10", "b cut short", "dask cut short"]


def test_without_matplotlib_it_says_how_to_install_it(retried_job, tmp_path):
    job, _ = retried_job
    (tmp_path / "matplotlib").mkdir()
    (tmp_path / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    proc = run_console("timeline", str(job.with_suffix(".results.json")), env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "draws with matplotlib" in proc.stderr and 'pip install -e ".[plot]"' in proc.stderr


def test_a_file_without_attempts_is_one_sentence(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"job": "x", "status": "ok"}))
    proc = run_console("timeline", str(old))
    assert proc.returncode == 2 and f"{old} records no chunk attempts" in proc.stderr
    assert "Traceback" not in proc.stderr
