"""The console's own faults are not node faults: a full, read-only or vanished disk, an unwritable results
file, a reducer that raises, a broken invariant. Each ends the job within seconds with one sentence and
exit status 4, the node is never blamed, the journal's whole lines survive, and --resume on a disk with
room finishes with the exact result.

The disk tests mount small tmpfs file systems (root; they skip otherwise). Each wait is for a state (the
journal holds N lines), bounded in time, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


from console import cli
from console.cluster import Cluster
from console.inventory import Node
from console.jobspec import load_job
from console.scheduler import InvalidTransition, Scheduler
from helpers import (
    ROOT, agents_started_after, communicate, pool_workers, results, run_console, tmpfs, wait_for, write_job,
)

WIDE = dict(os.environ, COLUMNS="1000")
"""Sentences naming long paths stay on one line."""
PAD = "def pad(x):\n    import time\n    time.sleep(0.02)\n    return 'x' * 3000\n"
"""A job function whose value makes each journal line about 4 KB."""


def pad_job(tmp_path: Path, items: int = 120) -> Path:
    (tmp_path / "padding.py").write_text(PAD)
    return write_job(tmp_path, function="padding:pad", files=["padding.py"], items=range(items), chunk_size=1)


def journal_lines(journal: Path) -> list:
    try:
        return journal.read_bytes().split(b"\n")
    except OSError:
        return []



def start(job: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(job), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=WIDE)


def finished_within(proc: subprocess.Popen, seconds: float) -> str:
    output, _ = communicate(proc, seconds)
    return " ".join(output.split())


def resume_elsewhere(job: Path, journal: Path, roomy: Path) -> dict:
    """Copy the journal to a disk with room and finish the job there with --resume."""
    roomy.mkdir(exist_ok=True)
    target = roomy / "out.json"
    shutil.copy(journal, Path(str(target) + ".journal"))
    proc = run_console("run", str(job), "--resume", "--output", str(target))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(target.read_text())


def test_a_full_disk_ends_the_job_with_a_sentence_and_resume_finishes_it(tmp_path):
    """The journal's disk fills mid-run: exit 4 in seconds naming the journal, no node blamed, no agent left,
    whole lines intact; --resume on a disk with room gives the exact result."""
    job = pad_job(tmp_path)
    started = time.time()
    with tmpfs(tmp_path / "small", "96k") as small:
        out = small / "out.json"
        proc = start(job, "--output", str(out))
        output = finished_within(proc, 60)
        assert proc.returncode == 4, output
        journal = Path(str(out) + ".journal")
        assert f"cannot write the journal {journal} (No space left on device); the job stopped" in output
        assert "lost" not in output and "reconnecting" not in output
        lines = journal_lines(journal)
        whole = [line for line in lines[:-1]]
        assert all(json.loads(line) for line in whole) and len(whole) > 5
        assert not list(small.glob(".*.tmp"))
        assert wait_for(lambda: not agents_started_after(started), 10)
        doc = resume_elsewhere(job, journal, tmp_path / "roomy")
    assert doc["result"] == ["x" * 3000] * 120
    assert doc["resumed_chunks"] == len(whole) - 1


def test_a_read_only_results_directory_is_refused_before_any_node_starts(tmp_path):
    """The results directory is on a read-only file system: exit 2 with the sentence, and no agent outlives
    the console (the local one starts early, while the console loads). (Linux refuses to make a file system
    read-only while a file on it is open for writing, so the mid-run cases are the full disk and the removed
    directory.)"""
    job = pad_job(tmp_path, items=4)
    started = time.time()
    with tmpfs(tmp_path / "disk", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        proc = run_console("run", str(job), "--output", str(disk / "out.json"), env={"COLUMNS": "1000"})
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, output
    assert (f"cannot write the journal {disk / 'out.json.journal'} (Read-only file system); choose a results "
            "file in a writable directory with --output.") in output
    assert wait_for(lambda: not agents_started_after(started), 10), agents_started_after(started)


def test_the_output_directory_removed_mid_run(tmp_path):
    """rm -r of the results directory while chunks run: the next journal write notices, exit 4 in seconds."""
    job = pad_job(tmp_path)
    out = tmp_path / "out" / "result.json"
    journal = Path(str(out) + ".journal")
    proc = start(job, "--output", str(out))
    assert wait_for(lambda: len(journal_lines(journal)) > 4), "no chunk was journalled"
    shutil.rmtree(out.parent)
    output = finished_within(proc, 30)
    assert proc.returncode == 4, output
    assert f"cannot write the journal {journal} (the file was removed)" in output


def test_a_results_file_that_cannot_be_written(tmp_path):
    """The results path is a directory: exit 4 with the sentence, no temporary file, the journal whole;
    --resume to another path finishes from the journal alone."""
    job = write_job(tmp_path, function="faulty:square", items=range(40), chunk_size=5, reduce="sum")
    blocked = tmp_path / "blocked.json"
    blocked.mkdir()
    proc = run_console("run", str(job), "--output", str(blocked), env={"COLUMNS": "1000"})
    output = " ".join(proc.stdout.split())
    assert proc.returncode == 4, output
    assert f"cannot write the results file {blocked} (Is a directory)" in output
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    journal = Path(str(blocked) + ".journal")
    assert len(journal.read_text().splitlines()) == 9
    doc = resume_elsewhere(job, journal, tmp_path / "roomy")
    assert doc["result"] == sum(x * x for x in range(40)) and doc["resumed_chunks"] == 8


def test_a_reducer_that_raises(tmp_path):
    """A custom reducer raises at the end (it took the first value alone when that was tried): exit 4 naming
    the reducer, its file and line; fixed, --resume only reduces."""
    (tmp_path / "red.py").write_text("def total(values):\n    return values if len(values) == 1 else len(values) / 0\n")
    job = write_job(tmp_path, function="faulty:square", items=range(20), chunk_size=5, reduce="red:total",
                    files=[str(Path(__file__).parent / "jobfiles" / "faulty.py"), "red.py"])
    proc = run_console("run", str(job), env={"COLUMNS": "1000"})
    output = " ".join(proc.stdout.split())
    assert proc.returncode == 4, output
    assert f"the reducer red:total of {job} raised ZeroDivisionError: division by zero" in output
    assert f"{tmp_path / 'red.py'}:2" in output
    assert results(job)["console_error"].startswith("the reducer red:total")
    (tmp_path / "red.py").write_text("def total(values):\n    return [sum(v) for v in values]\n")
    again = run_console("run", str(job), "--resume")
    assert again.returncode == 0, again.stdout
    doc = results(job)
    assert doc["result"] == [sum(x * x for x in range(i, i + 5)) for i in range(0, 20, 5)]
    assert doc["resumed_chunks"] == 4


def test_a_broken_invariant_ends_the_job_and_blames_no_node(tmp_path, monkeypatch, capsys):
    """The scheduler raises InvalidTransition on the 5th result: `console run` exits 4 at once with the
    sentence and our traceback, the node stays up, no agent is left, and --resume finishes the job."""
    job = write_job(tmp_path, function="faulty:slow_square", items=range(60), chunk_size=2)
    real = Scheduler._on_ChunkFinished
    seen = []

    def breaks_on_the_fifth(self, ev, out):
        seen.append(ev.chunk)
        if len(seen) == 5:
            raise InvalidTransition(f"chunk {ev.chunk}: done -> done is not a legal move")
        return real(self, ev, out)

    monkeypatch.setattr(Scheduler, "_on_ChunkFinished", breaks_on_the_fifth)
    started = time.time()
    code = cli.main(["run", str(job)])
    output = " ".join(capsys.readouterr().out.split())
    assert code == 4, output
    assert "internal error in the scheduler: InvalidTransition: chunk" in output
    assert "lost" not in output
    assert wait_for(lambda: not agents_started_after(started), 10)
    doc = results(job)
    assert doc["chunks"]["done"] == 4 and doc["items"]["done"] == 8
    monkeypatch.setattr(Scheduler, "_on_ChunkFinished", real)
    assert cli.main(["run", str(job), "--resume"]) == 0
    assert results(job)["result"] == [x * x for x in range(60)]


def test_counts_agree_with_the_journal_when_the_journal_fails(tmp_path, monkeypatch):
    """The 4th journal write fails: the results file, the snapshot and the journal all say 3 chunks done."""
    from console import journal as journal_module

    job = write_job(tmp_path, function="faulty:square", items=range(30), chunk_size=3)
    real_write = journal_module.JournalWriter.write
    writes = []

    def fails_on_the_fourth(self, *args):
        writes.append(args)
        if len(writes) == 4:
            raise journal_module.ConsoleFault("cannot write the journal (test)")
        return real_write(self, *args)

    monkeypatch.setattr(journal_module.JournalWriter, "write", fails_on_the_fourth)
    cluster = Cluster([Node("local", transport="local", workers=1)])
    try:
        run = cluster.start_job(load_job(job))
        cluster.bootstrap()
        assert cluster.wait_job(60) == "failed"
        snapshot = cluster.snapshot()
        assert cluster.sessions["local"].state in ("ready", "busy")
    finally:
        cluster.close()
    lines = Path(str(job.with_suffix(".results.json")) + ".journal").read_text().splitlines()
    assert len(lines) - 1 == 3
    assert run.document["chunks"]["done"] == 3 and run.document["items"]["done"] == 9
    assert snapshot.job.chunks_done == 3 and snapshot.job.items_done == 9
    assert run.document["console_error"] == "cannot write the journal (test)"


def test_a_long_lived_cluster_runs_the_code_on_disk(tmp_path):
    """The dashboard's cluster stays up; the job's module and reducer are edited between two runs: the second
    run uses the edited function on the node and the edited reducer in the console. Between the runs the
    node readies fresh workers (no job's code in them), and the second run runs on them."""
    module = tmp_path / "edited.py"
    module.write_text("def f(x):\n    return x * 2\n\ndef red(values):\n    return sum(map(sum, values))\n")
    job = write_job(tmp_path, function="edited:f", files=["edited.py"], items=range(10), chunk_size=5,
                    reduce="edited:red")
    cluster = Cluster([Node("local", transport="local", workers=1)])
    try:
        cluster.bootstrap()
        first = cluster.start_job(load_job(job))
        assert cluster.wait_job(60) == "ok"
        session = cluster.sessions["local"]
        wait_for(lambda: any("fresh workers started" in line for line in session.log_lines))
        fresh = pool_workers(session.info["pid"])
        assert len(fresh) == 1, list(session.log_lines)
        pids = tmp_path / "pids"
        module.write_text(f"import os\n\ndef f(x):\n    with open({str(pids)!r}, 'a') as out:\n"
                          "        out.write(f'{os.getpid()}\\n')\n    return x * 3\n\n"
                          "def red(values):\n    return -sum(map(sum, values))\n")
        second = cluster.start_job(load_job(job))
        assert cluster.wait_job(60) == "ok"
        assert set(map(int, pids.read_text().split())) == fresh, "the second run did not run on the fresh workers"
    finally:
        cluster.close()
    assert first.document["result"] == 90
    assert second.document["result"] == -135
