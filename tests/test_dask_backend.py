"""The same jobs on an existing Dask cluster: a real `dask scheduler` and two real `dask worker` processes
on loopback, started here as separate processes (never a LocalCluster in the test's own process).

Needs the optional extra (pip install -e ".[dask]"); skips with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers import ROOT, communicate, results, run_console, wait_for, write_job
from test_ssh_cluster import expected_factorisation

pytestmark = pytest.mark.dask

HANG_ONCE = ("import os, time\nfrom pathlib import Path\n\ndef hang_once_on_7(x):\n"
             "    marker = Path(os.environ['FAULT_DIR']) / 'dask-hang-7'\n"
             "    if x == 7 and not marker.exists():\n        marker.write_text('x')\n        time.sleep(3.5)\n"
             "    return x * x\n")



@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """(address, worker processes, fault dir): a scheduler and two single-thread workers with nannies."""
    pytest.importorskip("distributed", reason="the Dask tests need the [dask] extra: pip install -e '.[dask]'")
    home = tmp_path_factory.mktemp("dask")
    faults = tmp_path_factory.mktemp("dask-faults")
    scheduler_file = home / "scheduler.json"
    env = dict(os.environ, FAULT_DIR=str(faults), DASK_DISTRIBUTED__WORKER__DAEMON="False")
    logs = open(home / "dask.log", "ab")
    processes = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                                   "--port", "0", "--dashboard-address", ":0", "--scheduler-file",
                                   str(scheduler_file)], cwd=home, env=env, stdout=logs, stderr=logs,
                                  start_new_session=True)]
    try:
        assert wait_for(scheduler_file.exists, 60), "the Dask scheduler did not start"
        address = json.loads(scheduler_file.read_text())["address"]
        for index in (1, 2):
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                 "--name", f"w{index}", "--dashboard-address", ":0", "--local-directory", str(home / f"w{index}")],
                cwd=home, env=env, stdout=logs, stderr=logs, start_new_session=True))
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, processes, faults
    finally:
        for proc in processes:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        logs.close()


def engine(dask_cluster) -> str:
    return "dask://" + dask_cluster[0][len("tcp://"):]


def start_run(job: Path, dask_cluster) -> subprocess.Popen:
    """`console run JOB --engine ...` in the background, output captured."""
    return subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(job), "--engine", engine(dask_cluster)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wide(**extra):
    return dict(COLUMNS="1000", **extra)


def test_factorize_on_dask_is_exact(dask_cluster, tmp_path):
    """The example job file, unchanged, on the Dask cluster: the exact factorisation."""
    out = tmp_path / "out.json"
    proc = run_console("run", "jobs/examples/factorize.toml", "--engine", engine(dask_cluster), "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "ok" and doc["result"] == expected_factorisation()
    assert doc["chunks"] == {"total": 20, "done": 20, "failed": 0} and set(doc["nodes"]) == {"dask"}


def test_a_chunk_that_raises_is_retried_then_reported(dask_cluster, tmp_path):
    job = write_job(tmp_path, function="faulty:boom_on_13", items=range(30), chunk_size=5, retries=2)
    proc = run_console("run", str(job), "--engine", engine(dask_cluster))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = results(job)
    assert doc["chunks"] == {"total": 6, "done": 5, "failed": 1} and doc["retried_attempts"] == 2
    [failure] = doc["failures"]
    assert failure["error"] == "ZeroDivisionError: division by zero" and "boom_on_13" in failure["traceback"]
    assert doc["result"] == [x * x for x in range(30) if not 10 <= x < 15]


def test_a_worker_killed_mid_job_costs_nothing_but_time(dask_cluster, tmp_path):
    """SIGKILL one worker process while it runs chunks: Dask reschedules them, the result is exact."""
    job = write_job(tmp_path, function="faulty:slow_square", items=range(200), chunk_size=4)
    console = start_run(job, dask_cluster)
    journal = Path(str(job.with_suffix(".results.json")) + ".journal")
    assert wait_for(lambda: journal.exists() and len(journal.read_text().splitlines()) > 5, 60)
    nanny = psutil.Process(dask_cluster[1][1].pid)
    victims = [p for p in nanny.children(recursive=True) if "python" in p.name().lower()]
    assert victims, "no worker process under the nanny"
    for victim in victims:
        victim.send_signal(signal.SIGKILL)
    output, _ = communicate(console, 120)
    assert console.returncode == 0, output
    doc = results(job)
    assert doc["result"] == [x * x for x in range(200)] and doc["chunks"]["done"] == 50


def test_a_hanging_chunk_is_timed_out_and_retried(dask_cluster, tmp_path):
    (tmp_path / "hang.py").write_text(HANG_ONCE)
    job = write_job(tmp_path, function="hang:hang_once_on_7", files=["hang.py"], items=range(20), chunk_size=4,
                    timeout=2)
    proc = run_console("run", str(job), "--engine", engine(dask_cluster))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = results(job)
    # At least the hanging attempt was timed out; on a loaded machine a chunk queued behind it may be too
    # (Dask cannot stop the hung task's thread, so the clock of a chunk sent to that worker runs meanwhile).
    assert doc["result"] == [x * x for x in range(20)] and doc["retried_attempts"] >= 1 and not doc["failures"]


def test_ctrl_c_exits_130_and_cancels_the_tasks(dask_cluster, tmp_path):
    from distributed import Client

    job = write_job(tmp_path, function="faulty:slow_square", items=range(2000), chunk_size=4)
    console = start_run(job, dask_cluster)
    journal = Path(str(job.with_suffix(".results.json")) + ".journal")
    assert wait_for(lambda: journal.exists() and len(journal.read_text().splitlines()) > 3, 60)
    console.send_signal(signal.SIGINT)
    output, _ = communicate(console, 60)
    assert console.returncode == 130, output
    assert results(job)["status"] == "cancelled"
    with Client(dask_cluster[0], timeout=30) as client:
        assert wait_for(lambda: not client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)), 30)


def test_resume_on_dask_from_a_journal_the_agents_wrote(dask_cluster, tmp_path):
    """Half the chunks run on the local agent, the journal is kept; --resume --engine dask finishes it."""
    job = write_job(tmp_path, function="faulty:square", items=range(100), chunk_size=10, reduce="sum")
    first = run_console("run", str(job))
    assert first.returncode == 0
    journal = Path(str(job.with_suffix(".results.json")) + ".journal")
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:6]) + "\n")
    proc = run_console("run", str(job), "--resume", "--engine", engine(dask_cluster))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = results(job)
    assert doc["result"] == sum(x * x for x in range(100)) and doc["resumed_chunks"] == 5


def test_an_unreachable_scheduler_is_one_sentence(tmp_path):
    """Nothing listens at the address: the refused connection is the sentence (not Client's retries until its
    timeout), exit status 3."""
    pytest.importorskip("distributed", reason="the Dask tests need the [dask] extra")
    job = write_job(tmp_path, function="faulty:square", items=range(4), chunk_size=2)
    proc = run_console("run", str(job), "--engine", "dask://127.0.0.1:9", env=wide(), timeout=90)
    output = " ".join(proc.stdout.split())
    assert proc.returncode == 3, output
    assert "dask (tcp://127.0.0.1:9): cannot reach the scheduler" in output


def test_requirements_on_a_dask_cluster_are_one_sentence(tmp_path):
    """Dask workers import from their own environments: a job with requires is refused before anything runs."""
    pytest.importorskip("distributed", reason="the Dask tests need the [dask] extra")
    job = write_job(tmp_path, function="faulty:square", items=range(4), chunk_size=2)
    job.write_text(job.read_text().replace("[input]", 'requires = ["numpy"]\n\n[input]'))
    proc = run_console("run", str(job), "--engine", "dask://127.0.0.1:9", env=wide(), timeout=90)
    output = " ".join(proc.stderr.split())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{job}: requires ships wheels to the console's own nodes; a Dask cluster's workers" in output


def test_dashboard_lists_the_dask_workers_with_live_figures(dask_cluster, tmp_path):
    from console.backends.dask import DaskBackend
    from console.cluster import Cluster
    from console.tui.app import ConsoleApp
    from console.tui.widgets import NodeTable
    from test_tui_live import SIZE, job_ended, until
    from test_tui_pilot import row_texts

    job = write_job(tmp_path, function="faulty:slow_square", items=range(120), chunk_size=2)
    seen = []

    async def body(cluster, app):
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, app, lambda s: len(s.nodes) == 2 and all(n.state == "ready" for n in s.nodes), 60)
            await pilot.press("s", "enter")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and sum(int(r[7]) for r in row_texts(app.query_one(NodeTable))) < 4:
                app.poll()
                await pilot.pause(0.2)
            seen.extend(row_texts(app.query_one(NodeTable)))
            await until(pilot, app, job_ended, 120)

    cluster = Cluster(backend=DaskBackend(dask_cluster[0]))
    cluster.bootstrap()
    try:
        asyncio.run(body(cluster, ConsoleApp(cluster, job_path=str(job), poll_interval=60)))
    finally:
        cluster.close()
    assert sorted(row[0] for row in seen) == ["w1", "w2"]
    assert sum(int(row[7]) for row in seen) >= 4, seen  # chunks done, per worker
    assert json.loads(job.with_suffix(".results.json").read_text())["result"] == [x * x for x in range(120)]


def test_resume_on_the_agents_from_a_journal_dask_wrote(dask_cluster, tmp_path):
    """The other way round: half the chunks on Dask, the rest with --resume on the local agent."""
    job = write_job(tmp_path, function="faulty:square", items=range(100), chunk_size=10, reduce="sum")
    first = run_console("run", str(job), "--engine", engine(dask_cluster))
    assert first.returncode == 0, first.stdout
    journal = Path(str(job.with_suffix(".results.json")) + ".journal")
    journal.write_text("\n".join(journal.read_text().splitlines()[:4]) + "\n")
    proc = run_console("run", str(job), "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = results(job)
    assert doc["result"] == sum(x * x for x in range(100)) and doc["resumed_chunks"] == 3


def test_a_chunk_that_keeps_killing_workers_fails_with_the_reason(dask_cluster, tmp_path):
    """Every attempt of item 3 kills its worker: Dask gives up (KilledWorker) and the chunk fails for good
    with that reason; the other chunks are exact. (Last in the module: the nannies restart the workers.)"""
    (tmp_path / "killer.py").write_text("import os\n\ndef kill_on_3(x):\n    if x == 3:\n        os._exit(1)\n"
                                        "    return x * x\n")
    job = write_job(tmp_path, function="killer:kill_on_3", files=["killer.py"], items=range(8), chunk_size=2,
                    retries=0, timeout=600)
    proc = run_console("run", str(job), "--engine", engine(dask_cluster), env=wide(), timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = results(job)
    failed = {f["chunk"] for f in doc["failures"]}
    # Dask also suspects a chunk queued on a worker when it dies: with retries = 0 such a chunk may fail too.
    assert 1 in failed and all(f["error"].startswith("the chunk kept killing Dask workers") for f in doc["failures"])
    assert doc["result"] == [x * x for x in range(8) if x // 2 not in failed]


def test_mismatched_versions_are_refused_with_a_sentence(dask_cluster, tmp_path, monkeypatch):
    """get_versions(check=True) raising (the cluster runs other versions) fails the engine with one sentence."""
    import distributed

    from console.backends.dask import DaskBackend
    from console.cluster import Cluster
    from console.jobspec import load_job

    def mismatched(self, check=False, packages=None):
        raise ValueError("Mismatched versions found\n\n+---------+--------+\n| Package | Client |")

    monkeypatch.setattr(distributed.Client, "get_versions", mismatched)
    job = write_job(tmp_path, function="faulty:square", items=range(4), chunk_size=2)
    cluster = Cluster(backend=DaskBackend(dask_cluster[0]))
    try:
        run = cluster.start_job(load_job(job))
        cluster.bootstrap()
        assert cluster.wait_job(60) == "failed"
    finally:
        cluster.close()
    assert run.document["reason"] == "no node is usable"
    assert run.document["node_errors"]["dask"] == (
        f"dask ({dask_cluster[0]}): the cluster's versions do not match this console's (Mismatched versions "
        "found); install the same dask and distributed everywhere.")


def test_the_python_api_on_the_dask_cluster(dask_cluster):
    """connect(engine=...): a user's module reaches the workers by upload_file, a lambda by value, and a
    call's exception comes back as its own type with the worker's traceback."""
    from apicalls import OddItem, reject_odd, square

    from console import connect
    from console.remote import RemoteTraceback

    with connect(engine=engine(dask_cluster), retries=0) as executor:
        assert list(executor.map(square, range(200), chunksize=9)) == [x * x for x in range(200)]
        assert executor.submit(lambda x: x + 1, 41).result(timeout=60) == 42
        with pytest.raises(OddItem) as raised:
            executor.submit(reject_odd, 3).result(timeout=60)
        assert isinstance(raised.value.__cause__, RemoteTraceback) and "raise OddItem(x)" in str(raised.value.__cause__)
