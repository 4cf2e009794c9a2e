"""End to end on the embedded default inventory: `console run` with a real agent and pool.

Every test runs the real CLI in a child process, the way a user does, and
checks the exact numbers in the results file.
"""

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from helpers import ROOT, communicate, is_agent, results, run_console, write_job
from jobs.factorize import factors


def is_prime(n):
    """Miller-Rabin with the first 12 primes as bases: exact for every n below 3.3e24."""
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n < 2:
        return False
    for p in bases:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_factorize_example_prints_summary_and_exact_results(tmp_path):
    """The README's first command: every number of the example factorised right."""
    out = tmp_path / "factorize.json"
    proc = run_console("run", "jobs/examples/factorize.toml", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "factorize: ok" in proc.stdout
    assert "local" in proc.stdout
    doc = json.loads(out.read_text())
    numbers = range(999999999999, 1000000001999, 2)
    assert doc["status"] == "ok"
    assert doc["chunks"] == {"total": 20, "done": 20, "failed": 0}
    assert sorted(int(k) for k in doc["result"]) == list(numbers)
    for n in numbers[:20]:
        assert doc["result"][str(n)] == factors(n)
    for n, found in doc["result"].items():
        product = 1
        for f in found:
            product *= f
        assert product == int(n), f"{n}: {found} multiply to {product}"
        assert found == sorted(found) and all(is_prime(f) for f in found), f"{n}: {found}"
    assert doc["nodes"]["local"]["items"] == 1000
    assert doc["failures"] == []


def test_user_module_with_chunk_function_matches_direct_call(tmp_path):
    """A user's own module shipped through `files`, called once per chunk."""
    module = tmp_path / "mycode.py"
    module.write_text("def weigh(items):\n    return [len(str(x)) * x for x in items]\n")
    job = write_job(tmp_path, function="mycode:weigh", files=["mycode.py"], items=range(1, 301),
                    chunk_size=7, chunk_function=True)
    proc = run_console("run", str(job))
    assert proc.returncode == 0, proc.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        import mycode
    finally:
        sys.path.remove(str(tmp_path))
    assert results(job)["result"] == mycode.weigh(list(range(1, 301)))


def test_chunk_that_raises_is_retried_then_reported(tmp_path):
    """Item 13 always raises: its chunk fails 3 times, every other chunk's result is kept, exit 1."""
    job = write_job(tmp_path, function="faulty:boom_on_13", items=range(30), chunk_size=5, retries=2)
    proc = run_console("run", str(job))
    assert proc.returncode == 1, proc.stderr
    doc = results(job)
    assert doc["status"] == "failed"
    assert doc["chunks"] == {"total": 6, "done": 5, "failed": 1}
    assert doc["result"] == [x * x for x in range(30) if not 10 <= x < 15]
    [failure] = doc["failures"]
    assert failure["chunk"] == 2 and failure["node"] == "local" and failure["attempt"] == 3
    assert failure["error"] == "ZeroDivisionError: division by zero"
    assert "faulty.py" in failure["traceback"] and "boom_on_13" in failure["traceback"]
    assert doc["retried_attempts"] == 2
    assert "chunk 2 failed for good on local (attempt 3): ZeroDivisionError" in proc.stdout


def test_hung_chunk_is_killed_at_timeout_and_retried(tmp_path):
    """Item 7 hangs on its first attempt: the worker is killed after 2 s and the retry succeeds."""
    job = write_job(tmp_path, function="faulty:hang_once_on_7", items=range(20), chunk_size=4, timeout=2)
    proc = run_console("run", str(job), env={"FAULT_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    doc = results(job)
    assert doc["result"] == [x * x for x in range(20)]
    assert doc["retried_attempts"] == 1 and doc["failures"] == []


def test_worker_that_exits_fails_only_its_chunk(tmp_path):
    """Item 5 calls os._exit on its first attempt: only that chunk is retried, the result is exact."""
    job = write_job(tmp_path, function="faulty:exit_once_on_5", items=range(40), chunk_size=5)
    proc = run_console("run", str(job), env={"FAULT_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    doc = results(job)
    assert doc["result"] == [x * x for x in range(40)]
    assert doc["retried_attempts"] == 1
    assert doc["chunks"] == {"total": 8, "done": 8, "failed": 0}


def test_job_that_prints_does_not_corrupt_the_stream(tmp_path):
    """print() and raw writes to fd 1 in the job land in the node's log, not the protocol nor the console's
    own output."""
    job = write_job(tmp_path, function="faulty:noisy", items=range(50), chunk_size=5)
    proc = run_console("run", str(job))
    assert proc.returncode == 0, proc.stderr
    assert results(job)["result"] == [x * x for x in range(50)]
    assert "noise" not in proc.stdout + proc.stderr and "raw bytes" not in proc.stdout + proc.stderr


def test_many_trivial_items_are_batched(tmp_path):
    """20,000 trivial items in chunks of 100: 200 chunks, all counted once, summed exactly."""
    job = write_job(tmp_path, function="faulty:square", range_=[0, 20000], chunk_size=100, reduce="sum")
    proc = run_console("run", str(job))
    assert proc.returncode == 0, proc.stderr
    doc = results(job)
    assert doc["result"] == sum(x * x for x in range(20000))
    assert doc["chunks"] == {"total": 200, "done": 200, "failed": 0}


def test_auto_chunk_size_gives_the_same_answer(tmp_path):
    """chunk_size = "auto" cuts chunks from measured times; the sum is still exact."""
    job = write_job(tmp_path, function="faulty:square", range_=[0, 5000], chunk_size="auto", reduce="sum")
    proc = run_console("run", str(job), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["result"] == sum(x * x for x in range(5000))
    assert doc["items"] == {"total": 5000, "done": 5000}


PROBE = """
import gc, os, sys

def probe(x):
    if x == 0 and not os.path.exists({mark!r}):
        open({mark!r}, "w").close()
        os._exit(3)
    def parent(pid):
        with open("/proc/%d/stat" % pid) as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    def name(pid):
        with open("/proc/%d/comm" % pid) as comm:
            return comm.read().strip()

    forker = os.getppid()
    return {{"forker": name(forker), "forker_parent": parent(forker), "own_group": os.getpgid(forker) == forker,
            "worker": name(os.getpid()), "frozen": gc.get_freeze_count() > 0,
            "console_modules": sorted(m for m in sys.modules if m.split(".")[0] == "console")}}
"""


def test_console_run_serves_its_local_node_itself_and_a_worker_spawned_later_runs_no_console_code(tmp_path):
    """`console run` serves its local node in its own process: no agent process, the pool's forker (a fresh
    interpreter named agent-forker) a child of the console, in a process group of its own (a terminal's Ctrl-C
    reaches the console alone). The worker that replaces one the job's os._exit killed is forked by the forker,
    is named agent-worker and imports no console module; what it shares with the forker is frozen out of its
    garbage collector (a full collection would copy it)."""
    (tmp_path / "probe.py").write_text(PROBE.format(mark=str(tmp_path / "exited")))
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[node]]\nname = "local"\ntransport = "local"\nworkers = 1\n')
    job = write_job(tmp_path, function="probe:probe", items=[0], chunk_size=1, files=[str(tmp_path / "probe.py")])
    console = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(job), "--inventory", str(inventory),
                                "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = communicate(console, 120)
    assert console.returncode == 0, stderr
    doc = json.loads(stdout.splitlines()[-1])
    [retried] = doc["result"]
    assert retried == {"forker": "agent-forker", "forker_parent": console.pid, "own_group": True,
                       "worker": "agent-worker", "frozen": True, "console_modules": []}
    assert doc["retried_attempts"] == 1


def test_console_run_off_a_terminal_prints_plain_lines_and_imports_no_rich(tmp_path):
    """Into a pipe: the summary is plain aligned text, no line wrapped, and rich is never imported (its
    import is 30 ms of a short job's start-up)."""
    job = write_job(tmp_path, items=range(3), chunk_size=1, reduce="sum")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "console.cli", "run", str(job)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="40"))
    assert proc.returncode == 0, proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "console.cluster" in imported and not [m for m in imported if m.split(".")[0] == "rich"]
    lines = proc.stdout.splitlines()
    title = lines.index(next(line for line in lines if line.startswith("job: ok in ")))
    assert lines[title + 1].split() == ["node", "chunks", "items", "busy", "s", "errors", "state"]
    assert lines[title + 2].split()[:3] == ["local", "3", "3"]
    assert lines[title + 3:title + 5] == ["answer: 5", "chunks: 3 done, 0 failed of 3; 0 attempt(s) retried"]
    assert lines[-1] == f"results: {job.with_suffix('.results.json')}"


HOOKED_JOB = """
import pathlib  # its ntpath's optional `from nt import ...` misses every finder, site's last one included
import sys

def probe(x):
    site_before = "site" in sys.modules
    import hooked_pkg  # only the import hook a .pth file installs finds it, as with an editable install
    import psutil  # from site-packages
    return {"site_before": site_before, "value": hooked_pkg.VALUE + x, "psutil": psutil.__name__}
"""

PTH_HOOK = """
import importlib.machinery, sys
from pathlib import Path  # as an editable install's finder does

class Finder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "hooked_pkg":
            return importlib.machinery.PathFinder.find_spec(name, [{hidden!r}])
        return None

def install():
    sys.meta_path.append(Finder)
"""


def test_a_job_imports_what_site_and_its_pth_hooks_provide_though_the_forker_starts_without_site(tmp_path):
    """The forker starts without site (python -S, nodeagent/sitelater.py): the worker finds site-packages
    through the agent's sys.path, and a package only a .pth file's import hook finds (an editable install)
    through site run on that first import; not on the misses of the standard library's own optional imports
    (the job imports pathlib first, whose ntpath tries `nt`), where the hook, which imports pathlib as an
    editable install's finder does, would fail on the half-imported module and the package be found by none."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "hooked_pkg.py").write_text("VALUE = 40\n")
    userbase = tmp_path / "userbase"
    user_site = userbase / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    user_site.mkdir(parents=True)
    (user_site / "pth_hook.py").write_text(PTH_HOOK.format(hidden=str(hidden)))
    (user_site / "hook.pth").write_text("import pth_hook; pth_hook.install()\n")
    (tmp_path / "hooked.py").write_text(HOOKED_JOB)
    job = write_job(tmp_path, function="hooked:probe", items=[2], chunk_size=1, files=[str(tmp_path / "hooked.py")])
    proc = run_console("run", str(job), "--json", env={"PYTHONUSERBASE": str(userbase)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["result"] == [
        {"site_before": False, "value": 42, "psutil": "psutil"}]


def agents_of(pid):
    """Agent processes started by the console with this pid (they outlive it only by a bug)."""
    return [p for p in psutil.process_iter(["name", "cmdline", "ppid"]) if is_agent(p) and p.info["ppid"] == pid]


def test_killed_console_leaves_no_agent_and_resumes_from_its_journal(tmp_path):
    """SIGKILL the console mid-job: its local node's forker and workers exit, and --resume finishes with each
    chunk counted once."""
    job = write_job(tmp_path, function="faulty:slow_square", items=range(200), chunk_size=5)
    journal = job.with_suffix(".results.json.journal")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    console = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(job)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    agents = agents_of(console.pid)
    assert agents, "the console started no forker"
    console.send_signal(signal.SIGKILL)
    console.wait(10)
    gone, alive = psutil.wait_procs(agents, timeout=10)
    assert not alive, f"agents left behind: {alive}"
    done_before = len(journal.read_text().splitlines()) - 1
    assert 5 <= done_before < 40

    proc = run_console("run", str(job), "--resume")
    assert proc.returncode == 0, proc.stderr
    doc = results(job)
    assert doc["result"] == [x * x for x in range(200)]
    assert doc["resumed_chunks"] == done_before
    assert doc["chunks"] == {"total": 40, "done": 40, "failed": 0}
    assert doc["nodes"]["local"]["chunks"] == 40 - done_before


def test_resume_refuses_a_journal_of_another_job(tmp_path):
    """Changing the input between runs makes --resume unsafe: one sentence, exit 2."""
    job = write_job(tmp_path, items=range(10))
    assert run_console("run", str(job)).returncode == 0
    write_job(tmp_path, items=range(11))
    proc = run_console("run", str(job), "--resume")
    assert proc.returncode == 2
    assert "was written for a different job" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_cancels_writes_what_is_done_and_exits_130(tmp_path):
    """SIGINT mid-job: status "cancelled", the chunks done so far in the file, exit 130, no agent left."""
    job = write_job(tmp_path, function="faulty:slow_square", items=range(400), chunk_size=5)
    journal = job.with_suffix(".results.json.journal")
    console = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(job)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (journal.exists() and len(journal.read_text().splitlines()) > 4):
        time.sleep(0.05)
    agents = agents_of(console.pid)
    console.send_signal(signal.SIGINT)
    out, err = communicate(console, 60)
    assert console.returncode == 130, out + err
    doc = results(job)
    assert doc["status"] == "cancelled"
    done = doc["chunks"]["done"]
    assert 4 <= done < 80
    assert "Traceback" not in err
    gone, alive = psutil.wait_procs(agents, timeout=10)
    assert not alive


def test_no_usable_node_with_auto_chunks_exits_3(tmp_path):
    """The only node cannot start: exit 3 with its reason, and a results file that says so."""
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[node]]\nname = "local"\ntransport = "local"\npython = "/nonexistent/python3"\n')
    job = write_job(tmp_path, range_=[0, 100], chunk_size="auto")
    proc = run_console("run", str(job), "--inventory", str(inventory))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot start the local agent with '/nonexistent/python3'" in proc.stdout
    doc = results(job)
    assert doc["status"] == "failed" and doc["reason"] == "no node is usable"
    assert doc["chunks"]["done"] == 0 and doc["result"] is None


def test_a_node_too_busy_to_answer_its_first_command_is_tried_again(tmp_path, monkeypatch):
    """The node's first bring-up times out (a node, or a console, too busy to answer in time): it is tried
    again rather than left out of the job, says so meanwhile, and runs the job; a node that cannot start at all
    is not tried again (above)."""
    from console.backends.agents import AgentBackend
    from console.cluster import Cluster
    from console.errors import NodeBusy
    from console.inventory import Node
    from console.jobspec import load_job

    real = AgentBackend.launcher
    calls = []

    def busy_once(backend, node, session):
        calls.append(node.name)
        if len(calls) == 1:
            raise NodeBusy(f"{node.name}: 'python3' did not finish in time.")
        return real(backend, node, session)

    monkeypatch.setattr(AgentBackend, "launcher", busy_once)
    job = write_job(tmp_path, items=range(10), chunk_size=2)
    cluster = Cluster([Node("local", transport="local", workers=1)])
    errors = set()
    try:
        cluster.bootstrap()
        session = cluster.sessions["local"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and session.state != "ready":
            errors.add((session.state, session.error))
            time.sleep(0.01)
        run = cluster.start_job(load_job(job))
        assert cluster.wait_job(60) == "ok"
    finally:
        cluster.close()
    assert len(calls) == 2
    assert ("connecting", "local: 'python3' did not finish in time. (trying again: attempt 1 of 3)") in errors
    assert run.document["result"] == [x * x for x in range(10)]
