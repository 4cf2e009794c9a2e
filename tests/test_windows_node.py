"""Windows nodes, end to end, on emulated Windows PCs (tests/winnode.py).

One cluster for the module: node1 is a Linux host, node2 a Windows PC whose
user has Python 3.13 (on PATH) and 3.12, node3 a Windows PC whose user is
Zoë. Every request to node2 and node3 goes through Wine's cmd.exe the way
Windows' OpenSSH server runs it, and the agent runs on python.org's Windows
CPython. Needs root, sshd and Wine (skips with the reason otherwise).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netcluster
import winnode
from console.cluster import Cluster
from console.inventory import load_inventory
from console.jobspec import load_job
from console.tui.app import ConsoleApp
from console.tui.widgets import NodeTable
from helpers import ROOT, communicate, results, run_console, wait_for, write_job
from test_ssh_cluster import OLDEST, expected_factorisation, table_rows
from test_tui_live import SIZE, job_ended, run_live, until
from test_tui_pilot import row_texts, static_text

pytestmark = [pytest.mark.sshd, pytest.mark.windows]

NODE2 = winnode.WindowsSpec(pythons=("3.13", "3.12"))
ZOE = winnode.WindowsSpec(user="Zoë")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """node1 Linux, node2 Windows (3.13 and 3.12), node3 Windows with a non-ASCII profile."""
    reason = winnode.skip_reason()
    if reason:
        pytest.skip(reason)
    faults = tmp_path_factory.mktemp("faults")
    with netcluster.net_cluster(tmp_path_factory.mktemp("wincluster"), n=3,
                                windows={"node2": NODE2, "node3": ZOE},
                                session_env={"FAULT_DIR": f"Z:{faults}"}) as built:
        yield built


def inventory(cluster, tmp_path: Path, *nodes: str, **overrides) -> Path:
    """An inventory of these nodes; `overrides` maps a node to its extra keys."""
    return cluster.write_inventory(tmp_path / "inventory.toml", nodes=list(nodes), overrides=overrides)


def windows_pythons(cluster, node: str) -> list:
    """Windows Python processes on the node (the agent and its workers)."""
    return [(pid, cmd) for pid, cmd in cluster.processes_in(node) if "python.exe" in cmd.lower()]


def start_run(job: Path, inventory_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(job), "--inventory", str(inventory_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_bootstrap_and_status_show_the_windows_node(cluster, tmp_path):
    """windows/AMD64 with its Python, cores and fallback metrics; the second bootstrap uploads nothing."""
    shutil.rmtree(cluster.node("node2").cache_dir / "cluster-console", ignore_errors=True)
    inv = inventory(cluster, tmp_path, "node2")
    first = run_console("bootstrap", "--inventory", str(inv))
    assert first.returncode == 0, first.stdout + first.stderr
    [row] = table_rows(first.stdout)
    assert row[:3] == ["node2", f"{cluster.node('node2').host}:22", "windows/AMD64"]
    assert row[3].startswith("3.13.") and row[5] == "uploaded" and row[6] == "fallback" and row[-1] == "ok"
    assert int(row[4]) >= 1
    second = run_console("bootstrap", "--inventory", str(inv))
    assert [r[5] for r in table_rows(second.stdout)] == ["cached"]
    status = run_console("status", "--inventory", str(inv))
    assert status.returncode == 0, status.stdout
    [row] = table_rows(status.stdout)
    assert row[2] == "windows/AMD64" and row[3].startswith("3.13.") and "cached" in row
    bundles = list((cluster.node("node2").cache_dir / "cluster-console").glob("agent-*.zip"))
    assert len(bundles) == 1
    assert wait_for(lambda: not windows_pythons(cluster, "node2"), 10), windows_pythons(cluster, "node2")


def test_factorize_over_a_linux_and_a_windows_node(cluster, tmp_path):
    """The example's exact result, with both nodes' shares in the results file (node1 gets one worker, so the
    job lasts long enough for the Windows node, slower to come up under Wine, to join)."""
    inv = inventory(cluster, tmp_path, "node1", "node2", node1={"workers": 1})
    out = tmp_path / "out.json"
    proc = run_console("run", "jobs/examples/factorize.toml", "--inventory", str(inv), "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "ok" and doc["result"] == expected_factorisation()
    assert set(doc["nodes"]) == {"node1", "node2"}
    assert all(share["chunks"] > 0 for share in doc["nodes"].values()), doc["nodes"]
    assert sum(share["items"] for share in doc["nodes"].values()) == 1000


def test_user_module_in_files_runs_on_the_windows_node(cluster, tmp_path):
    """A module next to the job file, shipped through `files`, called once per chunk on Windows."""
    (tmp_path / "mycode.py").write_text("import sys\n\ndef weigh(items):\n"
                                        "    return [(len(str(x)) * x, sys.platform) for x in items]\n")
    job = write_job(tmp_path, function="mycode:weigh", files=["mycode.py"], items=range(1, 101),
                    chunk_size=7, chunk_function=True)
    proc = run_console("run", str(job), "--inventory", str(inventory(cluster, tmp_path, "node2")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results(job)["result"] == [[len(str(x)) * x, "win32"] for x in range(1, 101)]


def test_the_python_api_on_a_windows_node(cluster, tmp_path):
    """connect() over the Windows node: a user's module shipped as source runs there; a lambda shipped by value
    from another Python minor version fails on that node with its sentence, as a RuntimeError."""
    from apicalls import OddItem, reject_odd, square

    from console import connect

    with connect(inventory(cluster, tmp_path, "node2"), retries=0) as executor:
        assert list(executor.map(square, range(100), chunksize=7)) == [x * x for x in range(100)]
        with pytest.raises(OddItem):
            executor.submit(reject_odd, 1).result(timeout=120)
        if sys.version_info[:2] != (3, 13):
            with pytest.raises(RuntimeError,
                               match=r"shipped by value from Python 3\.\d+ and this node runs Python 3\.13"):
                executor.submit(lambda: 1).result(timeout=120)


NUMPY = "numpy>=1.26,<2.2"
"""numpy 2.2 and later call ucrtbase's crealf, which Wine 8 lacks; 2.1 is the newest that imports under Wine."""


def numpy_lab(cluster, tmp_path: Path, requires: str = NUMPY, nodes=("node1", "node2")) -> tuple:
    """A job calling numpy per item, and an inventory of `nodes` (node1's Python is 3.9 without numpy) plus the
    local node."""
    (tmp_path / "npjob.py").write_text("import time\n\nimport numpy as np\n\n\ndef dot(n):\n"
                                       "    time.sleep(0.15)  # long enough for every node to join\n"
                                       "    a = np.arange(n, dtype=np.int64)\n    return int(a @ a)\n")
    job = tmp_path / "np.toml"
    job.write_text(f'[job]\nfunction = "npjob:dot"\nfiles = ["npjob.py"]\nchunk_size = 4\nreduce = "sum"\n'
                   f'requires = ["{requires}"]\n[input]\nrange = [0, 120]\n[output]\npath = "{tmp_path / "np.json"}"\n')
    inv = inventory(cluster, tmp_path, *nodes, node1={"python": OLDEST, "workers": 1})
    inv.write_text(inv.read_text() + '\n[[node]]\nname = "local"\ntransport = "local"\nworkers = 1\n')
    return job, inv


NUMPY_ANSWER = sum(i * i for n in range(120) for i in range(n))


def packages_column(stdout: str) -> dict:
    """{node: its packages cell} from a bootstrap/status table printed with --job."""
    rows = [line.split() for line in stdout.splitlines() if line.split()[:1] in (["node1"], ["node2"], ["local"])]
    return {row[0]: " ".join(row[7:-2]) for row in rows}


def test_numpy_job_over_a_node_without_numpy_the_local_node_and_a_windows_node(cluster, tmp_path):
    """Each node imports numpy from the wheels for its own platform (cp39 manylinux on node1, whose Python has no
    numpy; cp311 manylinux here; cp313 win_amd64 under Wine). `console bootstrap --job` sends them, `status --job`
    then says every node is ready, and the run sends nothing; the Windows node alone gives the same answer."""
    job, inv = numpy_lab(cluster, tmp_path)
    assert subprocess.run([OLDEST, "-c", "import numpy"], capture_output=True).returncode != 0
    proc = run_console("bootstrap", "--inventory", str(inv), "--job", str(job), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sent = packages_column(proc.stdout)
    assert sent["node1"] == sent["node2"] == "sent 1" and sent["local"] in ("sent 1", "ready"), proc.stdout
    proc = run_console("status", "--inventory", str(inv), "--job", str(job), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert packages_column(proc.stdout) == dict.fromkeys(("node1", "node2", "local"), "ready"), proc.stdout
    proc = run_console("run", str(job), "--inventory", str(inv), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "np.json").read_text())
    assert doc["result"] == NUMPY_ANSWER
    assert doc["packages"] == {"node1": {"wheels": ["numpy 2.0.2"], "sent": 0},
                               "node2": {"wheels": ["numpy 2.1.3"], "sent": 0},
                               "local": {"wheels": ["numpy 2.1.3"], "sent": 0}}, doc["packages"]
    proc = run_console("run", str(job), "--inventory", str(inventory(cluster, tmp_path, "node2")), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "np.json").read_text())
    assert doc["result"] == NUMPY_ANSWER and doc["nodes"]["node2"]["items"] == 120
    assert doc["packages"] == {"node2": {"wheels": ["numpy 2.1.3"], "sent": 0}}


def test_a_requirement_without_a_wheel_for_one_node_leaves_it_out_and_the_others_finish(cluster, tmp_path):
    """numpy 2.1 needs Python 3.10: node1 (3.9) sits the job out with the sentence; Windows and local run it."""
    job, inv = numpy_lab(cluster, tmp_path, requires="numpy>=2.1,<2.2")
    proc = run_console("run", str(job), "--inventory", str(inv), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "np.json").read_text())
    assert doc["result"] == NUMPY_ANSWER
    assert set(doc["packages"]) == {"node2", "local"} and "node1" not in doc["nodes"]
    sentence = doc["node_errors"]["node1"]
    assert sentence.startswith("node1: no wheel of numpy<2.2,>=2.1 for its Python 3.9 (cp39) on manylinux_2_")
    assert "it sits this job out" in sentence and "--python-version 3.9" in sentence
    assert sentence in " ".join(proc.stdout.split())


def test_offline_the_numpy_job_takes_its_wheels_from_a_wheelhouse_alone(cluster, tmp_path):
    """The README's offline lab: wheels for each platform fetched into a folder beforehand; the inventory names
    that folder alone, the console runs with its proxies pointing nowhere and a fresh cache, and every node
    still gets numpy."""
    job, inv = numpy_lab(cluster, tmp_path)
    wheelhouse = tmp_path / "wheels"
    for python, platform in (("3.9", "manylinux_2_17_x86_64"), ("3.11", "manylinux_2_17_x86_64"),
                             ("3.13", "win_amd64")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(wheelhouse),
                        "--python-version", python, "--implementation", "cp", "--abi", "cp" + python.replace(".", ""),
                        "--platform", platform, NUMPY], check=True, capture_output=True, timeout=600)
    inv.write_text('[packages]\nwheelhouse = "wheels"\n\n' + inv.read_text())
    nowhere = "http://127.0.0.1:9"
    offline = {"http_proxy": nowhere, "https_proxy": nowhere, "HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere,
               "PIP_INDEX_URL": nowhere, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_console("run", str(job), "--inventory", str(inv), env=offline, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "np.json").read_text())
    assert doc["result"] == NUMPY_ANSWER
    assert {node: shipped["wheels"] for node, shipped in doc["packages"].items()} == {
        "node1": ["numpy 2.0.2"], "node2": ["numpy 2.1.3"], "local": ["numpy 2.1.3"]}, doc["packages"]
    assert doc["packages"]["local"]["sent"] == 1


def test_chunk_that_raises_on_windows_is_retried_then_reported(cluster, tmp_path):
    """Item 13 raises every time: three attempts, then the failure with the Windows node's traceback."""
    job = write_job(tmp_path, function="faulty:boom_on_13", items=range(30), chunk_size=5, retries=2)
    proc = run_console("run", str(job), "--inventory", str(inventory(cluster, tmp_path, "node2")))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = results(job)
    assert doc["chunks"] == {"total": 6, "done": 5, "failed": 1}
    assert doc["result"] == [x * x for x in range(30) if not 10 <= x < 15]
    [failure] = doc["failures"]
    assert failure["node"] == "node2" and failure["attempt"] == 3
    assert failure["error"] == "ZeroDivisionError: division by zero"
    assert "faulty.py" in failure["traceback"] and "boom_on_13" in failure["traceback"]
    assert doc["retried_attempts"] == 2


@pytest.mark.parametrize("function,timeout", [("faulty:hang_once_on_7", 3), ("faulty:exit_once_on_5", 30)])
def test_hung_or_exiting_worker_on_windows_loses_only_its_chunk(cluster, tmp_path, function, timeout):
    """A chunk that hangs past its timeout, or calls os._exit: its worker is replaced, the retry succeeds."""
    job = write_job(tmp_path, function=function, items=range(40), chunk_size=5, timeout=timeout)
    proc = run_console("run", str(job), "--inventory", str(inventory(cluster, tmp_path, "node2")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = results(job)
    assert doc["result"] == [x * x for x in range(40)]
    # The retry, or a tail copy on the other worker when nothing else is queued: either kills the stuck worker.
    assert doc["retried_attempts"] in (0, 1) and doc["failures"] == []
    assert doc["nodes"]["node2"]["chunks"] == 8
    assert "lost" not in proc.stdout, "the agent went down with the worker"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_console_killed_or_interrupted_leaves_no_python_on_windows(cluster, tmp_path, how):
    """Mid-job, the console is SIGKILLed or gets Ctrl-C: the agent and its workers end on the Windows node."""
    job = tmp_path / "primes.toml"
    job.write_text('[job]\nfunction = "jobs.primes:count_primes"\nchunk_size = 1\nreduce = "sum"\n'
                   '[input]\nrange = [1000000000, 1020000000, 10000]\n'
                   f'[output]\npath = "{tmp_path / "primes.json"}"\n')
    console = start_run(job, inventory(cluster, tmp_path, "node2"))
    try:
        assert wait_for(lambda: len(windows_pythons(cluster, "node2")) >= 3, 60), \
            "the agent and its two workers did not start"
    finally:
        console.send_signal(how)
        output, _ = communicate(console, 30)
    assert console.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 130), output
    assert wait_for(lambda: not windows_pythons(cluster, "node2"), 20), windows_pythons(cluster, "node2")


def test_more_workers_than_python_3_12_waits_on_at_once_on_windows(cluster, tmp_path):
    """Python before 3.13 waits on at most 63 handles at once: 64 workers and the pool's wake pipe are waited on
    in groups (nodeagent/pool.py wait_for_any), and run a job to the end."""
    minor = "3.12"
    inv = inventory(cluster, tmp_path, "node2", node2={"workers": 64, "python": NODE2.python_path(minor)})
    job = write_job(tmp_path, function="faulty:slow_square", items=range(400), chunk_size=2, reduce="sum")
    live = Cluster(load_inventory(inv).nodes)
    try:
        run = live.start_job(load_job(job))
        live.bootstrap()
        assert live.wait_job(180) == "ok"
        session = live.sessions["node2"]
        assert session.info["python"].startswith(minor + ".") and session.workers == 64
    finally:
        live.close()
    assert run.document["result"] == sum(x * x for x in range(400))
    assert run.document["nodes"]["node2"]["chunks"] == 200


def test_a_profile_path_with_non_ascii_characters(cluster, tmp_path):
    """The user Zoë: the bundle lands in C:\\users\\Zoë\\AppData\\Local, the agent starts from there, a job runs."""
    node3 = cluster.node("node3")
    shutil.rmtree(node3.cache_dir / "cluster-console", ignore_errors=True)
    inv = inventory(cluster, tmp_path, "node3")
    boot = run_console("bootstrap", "--inventory", str(inv))
    assert boot.returncode == 0, boot.stdout + boot.stderr
    [row] = table_rows(boot.stdout)
    assert row[2] == "windows/AMD64" and row[5] == "uploaded" and row[-1] == "ok"
    assert len(list((node3.dir / "wine/drive_c/users/Zoë/AppData/Local/cluster-console").glob("agent-*.zip"))) == 1
    job = write_job(tmp_path, function="faulty:square", items=range(50), chunk_size=5, reduce="sum")
    proc = run_console("run", str(job), "--inventory", str(inv))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results(job)["result"] == sum(x * x for x in range(50))


def test_a_jobs_prints_go_to_the_windows_nodes_log(cluster, tmp_path):
    """print() and raw writes to fd 1 in the workers land in the node's log, never in the protocol."""
    job = write_job(tmp_path, function="faulty:noisy", items=range(20), chunk_size=5)
    live = Cluster(load_inventory(inventory(cluster, tmp_path, "node2")).nodes)
    try:
        run = live.start_job(load_job(job))
        live.bootstrap()
        session = live.sessions["node2"]
        status = live.wait_job(180)
        if status != "ok":
            sessions = {id(s): s for s in (session, live.sessions["node2"])}.values()
            logs = [line for s in sessions for line in s.log_lines]
            pytest.fail(f"the job is {status}; node2 is {session.state} ({session.error}); its log:\n"
                        + "\n".join(logs) + f"\n{live.snapshot().job}")
        log = list(session.log_lines)
    finally:
        live.close()
    assert run.document["result"] == [x * x for x in range(20)]
    assert sum("noise on stdout" in line for line in log) == 20, log
    assert sum(line == "raw bytes on fd 1" for line in log) == 20, log


def cpu_shown(app: ConsoleApp) -> int:
    """The CPU percentage the node table shows for its first node (0 while it shows none)."""
    figure = row_texts(app.query_one(NodeTable))[0][3].split("%")[0].strip()
    return int(figure) if figure.isdigit() else 0


def test_dashboard_shows_the_windows_node_with_live_cpu(cluster, tmp_path):
    """Pilot over the emulated node: windows/AMD64 in the table, CPU well above idle while it works."""
    job = tmp_path / "primes.toml"
    job.write_text('[job]\nname = "primes"\nfunction = "jobs.primes:count_primes"\nchunk_size = 1\n'
                   'reduce = "sum"\n[input]\nrange = [1000000000, 1000240000, 10000]\n'
                   f'[output]\npath = "{tmp_path / "primes.json"}"\n')
    seen = []

    async def body(live, app: ConsoleApp):
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, app, lambda s: s.nodes[0].state == "ready", 60)
            [row] = row_texts(app.query_one(NodeTable))
            assert row[0] == "node2" and row[1] == "windows/AMD64"
            await pilot.press("s", "enter")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and cpu_shown(app) <= 60:
                app.poll()
                await pilot.pause(0.2)
            seen.append(row_texts(app.query_one(NodeTable))[0])
            await until(pilot, app, job_ended, 120)
            assert static_text(app, "#job-title") == "primes  ok"

    run_live(load_inventory(inventory(cluster, tmp_path, "node2")).nodes, job, body)
    assert int(seen[0][3].split("%")[0]) > 60, seen
    doc = json.loads((tmp_path / "primes.json").read_text())
    assert doc["status"] == "ok" and doc["items"] == {"total": 24, "done": 24}


def test_stop_command_ends_a_windows_agent_by_its_pid(cluster, tmp_path):
    """The fallback for an agent that outlived its session: cmd.exe's taskkill by the agent's own pid."""
    from console.bootstrap import launch_ssh, probe
    from console.ssh import NodeConnection

    class Quiet:
        def set_state(self, state, error=None):
            pass

        def log(self, line):
            pass

    node = load_inventory(inventory(cluster, tmp_path, "node2")).nodes[0]
    link = launch_ssh(node, Quiet())
    conn = NodeConnection(node)
    try:
        pid = link.hello()["pid"]
        assert wait_for(lambda: windows_pythons(cluster, "node2"), 10)
        conn.connect()
        status, out, err = conn.run(probe(conn).shell.stop_command(pid))
        assert status == 0, out + err
        assert wait_for(lambda: not windows_pythons(cluster, "node2"), 20), windows_pythons(cluster, "node2")
    finally:
        conn.close()
        link.close(graceful=False)
