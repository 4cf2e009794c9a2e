"""The agent as a real process on pipes, and the cluster around it.

No socket anywhere, nothing printed reaches the protocol, the agent exits with
its stdin, and a SIGKILLed agent costs the job nothing but time.
"""

import contextlib
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from console.rpyclink import start_local_agent
from console.cluster import Cluster
from console.inventory import Node
from console.jobspec import load_job
from helpers import FAULTY, is_forker, pool_workers, tmpfs, wait_for, write_job
from nodeagent.wire import PROTOCOL_VERSION
from nodeagent.wire import ChunkItems, JobSettings

SLOW_SQUARES = JobSettings("t", "faulty:slow_square", "item", "list", {"faulty.py": FAULTY.read_bytes()}, 30.0, 2)


@pytest.fixture
def link():
    lines = []
    agent = start_local_agent(sys.executable, lines.append)
    agent.log_lines = lines
    yield agent
    agent.close()


def family(pid):
    proc = psutil.Process(pid)
    return [proc] + proc.children(recursive=True)


def test_hello_describes_the_node(link):
    info = link.hello()
    assert info["protocol"] == PROTOCOL_VERSION
    assert info["cores"] == os.cpu_count() and info["os"] == "linux"
    assert info["metrics"] == "psutil" and info["start_method"] == "spawn"


def test_agent_and_its_workers_open_no_socket_anyone_could_reach(link):
    """No inet socket, nothing bound or listening: the only socket is the nameless pair between the agent and
    its pool's forker (it carries the workers' pipe ends), and the workers hold none."""
    info = link.hello()
    assert link.start_job(SLOW_SQUARES) == 2
    link.exchange([ChunkItems(i, 1, pickle.dumps(list(range(10)))) for i in range(4)], 0)
    deadline = time.monotonic() + 20
    while len(family(info["pid"])) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    processes = family(info["pid"])
    assert len(processes) >= 3, "agent plus two workers"
    for proc in processes:
        sockets = proc.net_connections(kind="all")
        assert all(s.family == socket.AF_UNIX and not s.laddr and not s.raddr for s in sockets), proc.cmdline()
    agent = psutil.Process(info["pid"])
    [forker] = _forkers(info["pid"])
    assert len(agent.net_connections(kind="all")) == 1 and len(forker.net_connections(kind="all")) == 1
    assert len(forker.children()) == 2 and all(w.net_connections(kind="all") == [] for w in forker.children())


def test_metrics_answer_while_a_batch_runs(link):
    """A metrics call is answered while the pool is busy (no call waits on the workers)."""
    link.hello()
    link.start_job(SLOW_SQUARES)
    link.exchange([ChunkItems(i, 1, pickle.dumps(list(range(20)))) for i in range(4)], 0)
    started = time.monotonic()
    first = link.metrics()  # it starts the agent's sampler: memory, no CPU span yet
    sample = link.metrics()
    assert time.monotonic() - started < 5
    assert first.cpu_per_core is None and first.cpu_percent is None and first.mem_total > first.mem_used > 0
    assert len(sample.cpu_per_core) == os.cpu_count()
    assert sample.mem_total > sample.mem_used > 0


def test_a_busy_nodes_metrics_ride_on_its_exchange(link):
    """An exchange asking for metrics carries a sample (a round trip saved a node each second); one not asking
    carries none."""
    link.hello()
    link.start_job(SLOW_SQUARES)
    link.metrics()  # the first sample starts the sampler
    collected = link.exchange([ChunkItems(0, 1, pickle.dumps([1]))], 0, metrics=True)
    assert len(collected.metrics.cpu_per_core) == os.cpu_count() and collected.metrics.mem_total > 0
    assert link.exchange([], 0).metrics is None


def test_a_warm_agent_starts_its_workers_at_once_and_its_first_job_takes_them():
    """--pool 2: the workers run before hello (named agent-worker, holding none of the agent's protocol pipes);
    a 2-worker job keeps them, the next job gets fresh ones (so edited code is read again)."""
    agent = start_local_agent(sys.executable, lambda line: None, pool=2)
    try:
        info = agent.hello()

        def workers():
            return pool_workers(info["pid"])

        assert _wait(lambda: len(workers()) == 2), "the warm workers did not start"
        warm = workers()
        protocol = {f"pipe:[{os.fstat(f.fileno()).st_ino}]" for f in (agent._stream.incoming, agent._stream.outgoing)}
        for pid in warm:
            held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            assert not held & protocol, f"worker {pid} holds the agent's protocol pipes"
            assert psutil.Process(pid).name() == "agent-worker", "it passes for the agent"
        assert agent.start_job(SLOW_SQUARES) == 2
        assert workers() == warm
        agent.exchange([ChunkItems(0, 1, pickle.dumps([3]))], 0)
        assert _wait(lambda: agent.exchange([], 0.5).outcomes)
        assert agent.start_job(SLOW_SQUARES) == 2
        assert _wait(lambda: len(workers()) == 2 and not warm & workers())
    finally:
        agent.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_the_workers_of_a_sigkilled_agent_go_with_it_even_mid_chunk(tmp_path, monkeypatch):
    """An agent's workers are processes of their own, forked by its forker: when the agent is SIGKILLed while
    one runs a chunk that would take an hour, the kernel kills the forker and them too, so no worker is left
    working for nobody."""
    monkeypatch.setenv("FAULT_DIR", str(tmp_path))
    agent = start_local_agent(sys.executable, lambda line: None, pool=2)
    try:
        pid = agent.hello()["pid"]
        assert agent.start_job(SLOW_SQUARES._replace(fn="faulty:hang_once_on_7")) == 2
        assert _wait(lambda: len(pool_workers(pid)) == 2), "the workers did not start"
        workers = [psutil.Process(worker) for worker in pool_workers(pid)]
        [forker] = _forkers(pid)
        workers.append(forker)
        assert agent.exchange([ChunkItems(0, 1, pickle.dumps([7]))], 0).busy <= 1
        assert _wait(lambda: agent.exchange([], 0.2).busy == 1), "the hanging chunk did not start"
        os.kill(pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive
    finally:
        agent.close()


def test_an_ended_jobs_workers_make_way_for_fresh_ones_the_next_job_runs_on():
    """end_job: the job's workers exit and, a moment later, fresh ones start (forked by the agent's one forker,
    no job's code in them); the next job of that size runs on them instead of starting its own, and a job of
    another size gets a pool forked by the same forker."""
    agent = start_local_agent(sys.executable, lambda line: None, pool=2)
    try:
        pid = agent.hello()["pid"]
        assert agent.start_job(SLOW_SQUARES) == 2
        agent.exchange([ChunkItems(0, 1, pickle.dumps([3]))], 0)
        assert _wait(lambda: agent.exchange([], 0.5).outcomes)
        used = pool_workers(pid)
        agent.end_job()
        assert _wait(lambda: len(pool_workers(pid)) == 2 and not used & pool_workers(pid)), "no fresh workers"
        fresh = pool_workers(pid)
        assert agent.start_job(SLOW_SQUARES) == 2
        assert pool_workers(pid) == fresh
        agent.exchange([ChunkItems(1, 1, pickle.dumps([4]))], 0)
        outcomes = []
        assert _wait(lambda: outcomes.extend(agent.exchange([], 0.5).outcomes) or outcomes)
        assert [(o.chunk, pickle.loads(o.value)) for o in outcomes] == [(1, [16])]
        forkers = {forker.pid for forker in _forkers(pid)}
        assert len(forkers) == 1 and {psutil.Process(w).ppid() for w in fresh} == forkers
        agent.end_job()
        assert agent.start_job(SLOW_SQUARES._replace(workers=1)) == 1
        assert _wait(lambda: len(pool_workers(pid)) == 1 and not fresh & pool_workers(pid)), "no pool of one"
        assert {psutil.Process(w).ppid() for w in pool_workers(pid)} == forkers
    finally:
        agent.close()


def _wait(predicate, limit=20.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_agent_exits_when_its_stdin_closes(link):
    pid = link.hello()["pid"]
    processes = family(pid)
    link.close()
    gone, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive


def test_fallback_metrics_without_psutil(monkeypatch):
    monkeypatch.setenv("NODEAGENT_NO_PSUTIL", "1")
    agent = start_local_agent(sys.executable, lambda line: None)
    try:
        assert agent.hello()["metrics"] == "fallback"
        agent.metrics()  # the first sample starts the sampler
        time.sleep(0.2)
        sample = agent.metrics()
        assert sample.source == "fallback" and len(sample.cpu_per_core) == os.cpu_count()
        assert sample.mem_total > 0
    finally:
        agent.close()


def test_sigkilled_agent_mid_job_costs_nothing_but_time(tmp_path):
    """The local agent is SIGKILLed mid-job: the session reconnects, lost chunks rerun, each counts once."""
    job = write_job(tmp_path, function="faulty:slow_square", items=range(120), chunk_size=3)
    cluster = Cluster([Node("local", transport="local")])
    try:
        run = cluster.start_job(load_job(job))
        cluster.bootstrap()
        deadline = time.monotonic() + 30
        while run.scheduler.counts["done"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = cluster.sessions["local"].info["pid"]
        os.kill(pid, signal.SIGKILL)
        assert cluster.wait_job(60) == "ok"
        document = run.document
    finally:
        cluster.close()
    assert document["result"] == [x * x for x in range(120)]
    assert document["chunks"] == {"total": 40, "done": 40, "failed": 0}
    assert document["nodes"]["local"]["chunks"] == 40
    assert cluster.sessions["local"].info["pid"] != pid
    assert any("NodeLost" == entry[3] for entry in run.scheduler.log)


def test_agent_of_another_protocol_is_refused_with_both_versions(monkeypatch):
    """The console (here speaking protocol 99) refuses an agent speaking the shipped protocol."""
    import nodeagent
    from console.errors import NodeError

    agent = start_local_agent(sys.executable, lambda line: None)
    monkeypatch.setattr(nodeagent.wire, "PROTOCOL_VERSION", 99)
    try:
        with pytest.raises(NodeError, match=f"the agent speaks protocol {PROTOCOL_VERSION} and this console 99"):
            agent.hello()
    finally:
        agent.close()


def test_agent_exits_after_a_long_silence_from_the_console():
    """A console that stops calling (killed behind a network partition) loses its agent after the silence."""
    agent = start_local_agent(sys.executable, lambda line: None)
    try:
        pid = agent.hello(silence_exit_s=2.0)["pid"]
        gone, alive = psutil.wait_procs([psutil.Process(pid)], timeout=10)
        assert gone and not alive
    finally:
        agent.close(graceful=False)


PYTHON39 = "/root/.pyenv/versions/3.9.18/bin/python3"


@pytest.mark.skipif(not os.path.exists(PYTHON39), reason=f"no Python 3.9 at {PYTHON39}")
def test_agent_runs_on_python_3_9_without_psutil_or_rpyc_installed(tmp_path):
    """The bundle carries rpyc: a bare Python 3.9 runs a job, with CPU from the fallback."""
    job = write_job(tmp_path, function="faulty:square", items=range(30), chunk_size=4, reduce="sum")
    cluster = Cluster([Node("old", transport="local", python=PYTHON39, workers=2)])
    try:
        run = cluster.start_job(load_job(job))
        cluster.bootstrap()
        assert cluster.wait_job(60) == "ok"
        info = cluster.sessions["old"].info
    finally:
        cluster.close()
    assert info["python"].startswith("3.9.") and info["metrics"] == "fallback"
    assert run.document["result"] == sum(x * x for x in range(30))


@pytest.mark.parametrize("fallback", [False, True])
def test_cpu_is_measured_whatever_thread_asks(fallback):
    """A sample taken on another thread than the sampler's first still sees a busy core."""
    from nodeagent.metrics import Sampler

    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        sampler = Sampler(force_fallback=fallback)
        first = sampler.sample()
        assert first["cpu_percent"] is None and first["mem_total"] > 0, "the first sample has no span"
        time.sleep(0.5)
        samples = []
        thread = threading.Thread(target=lambda: samples.append(sampler.sample()))
        thread.start()
        thread.join()
    finally:
        busy.kill()
        busy.wait()
    assert samples[0]["cpu_percent"] > 20.0, samples
    assert max(samples[0]["cpu_per_core"]) > 40.0, samples


def test_reconnect_returns_at_once_and_brings_the_node_back():
    """The dashboard's reconnect must not block: the old session winds down on a thread of its own."""
    cluster = Cluster([Node("local", transport="local", workers=1)])
    try:
        cluster.bootstrap()
        deadline = time.monotonic() + 20
        while cluster.sessions["local"].state != "ready" and time.monotonic() < deadline:
            time.sleep(0.05)
        first = cluster.sessions["local"]
        cluster.reconnect("local")
        assert first.is_alive(), "reconnect waited for the old session to end"
        while (cluster.sessions["local"] is first or cluster.sessions["local"].state != "ready") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cluster.sessions["local"] is not first and cluster.sessions["local"].state == "ready"
        assert cluster.sessions["local"].info["pid"] != first.info["pid"]
    finally:
        cluster.close()


def test_a_chunks_items_and_values_travel_uncompressed(link, monkeypatch):
    """Frames carry no zlib either way (it cost the node more CPU than a LAN saves): the console's channel
    sends none, and every frame header it reads from the agent, a 100,000-item chunk's values among them, says
    "not compressed"."""
    from rpyc.core.channel import Channel
    from rpyc.core.stream import PipeStream

    flags, at_header, read = [], [True], PipeStream.read

    def reading(stream, count):  # a channel reads a frame's header, then its body
        data = read(stream, count)
        if at_header[0]:
            flags.append(Channel.FRAME_HEADER.unpack(data)[1])
        at_header[0] = not at_header[0]
        return data

    link.hello()
    link.start_job(JobSettings("t", "faulty:square", "item", "list", {"faulty.py": FAULTY.read_bytes()}, 30.0, 1))
    monkeypatch.setattr(PipeStream, "read", reading)
    link.exchange([ChunkItems(0, 1, pickle.dumps(list(range(100_000))))], 0)
    outcomes = []
    assert _wait(lambda: outcomes.extend(link.exchange([], 0.5).outcomes) or outcomes)
    assert len(outcomes[0].value) > 100_000 and pickle.loads(outcomes[0].value)[-1] == 99_999 ** 2
    assert flags and not any(flags), flags
    assert link._channel.compress is False


def test_a_request_answered_too_long_has_the_agents_stacks_in_the_log(link):
    """An exchange waiting 7 s for an outcome that never comes stands for a stalled request: past 6 s, before
    the console's call timeout, the agent logs where each of its threads is."""
    link.hello()
    link.start_job(SLOW_SQUARES)
    assert link.exchange([], 7.0).outcomes == ()
    assert _wait(lambda: any(": a request has been answered for " in line for line in link.log_lines))
    assert _wait(lambda: any("  MainThread: " in line and "take" in line for line in link.log_lines)), link.log_lines
    assert any("  pool-manager: " in line for line in link.log_lines), link.log_lines


def _cache_entries(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.parent.name in ("jobs", "wheels") or
                  p.parent == root)


def test_the_cache_prunes_what_no_agent_used_for_30_days(tmp_path, monkeypatch):
    """Job files, unpacked wheels (and a half-sent one) and agent bundles unused for 30 days go; what was used
    since, or marked used now, stays; the console's own folders are not the agent's to prune. The next pass
    within a day does nothing (the disk has room); a day later it runs."""
    from nodeagent.cache import KEEP_UNUSED_S, PRUNE_EVERY_S, mark_used, prune

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = tmp_path / "cluster-console"
    digest = "a" * 64
    for path in ("jobs/old/job.py", "jobs/fresh/job.py", "jobs/marked/job.py", f"wheels/{digest}/pkg/__init__.py",
                 f"wheels/{'b' * 64}.123.whl", "agent-old.zip", "agent-new.zip", "nodes/n1.json", "packages/p/x.whl"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    month_ago = time.time() - KEEP_UNUSED_S - 3600
    for path in ("jobs/old", "jobs/marked", f"wheels/{digest}", f"wheels/{'b' * 64}.123.whl", "agent-old.zip",
                 "nodes/n1.json", "packages/p"):
        os.utime(root / path, (month_ago, month_ago))
    mark_used([str(root / "jobs" / "marked")])
    removed = prune()
    assert sorted(os.path.relpath(p, root) for p in removed) == [
        "agent-old.zip", "jobs/old", os.path.join("wheels", digest), os.path.join("wheels", "b" * 64 + ".123.whl")]
    assert _cache_entries(root) == ["agent-new.zip", "agents.pruned", "jobs", "jobs/fresh", "jobs/marked", "nodes",
                                    "packages", "wheels"]
    os.utime(root / "jobs" / "fresh", (month_ago, month_ago))
    assert prune() == [] and (root / "jobs" / "fresh").exists()
    day_ago = time.time() - PRUNE_EVERY_S - 60
    os.utime(root / "agents.pruned", (day_ago, day_ago))
    assert prune() == [str(root / "jobs" / "fresh")]


def test_a_cache_on_a_disk_short_of_space_gives_up_its_least_recently_used_entries(tmp_path, monkeypatch):
    """On a disk with less free than LOW_DISK_BYTES, pruning removes entries used within 30 days too, least
    recently used first, until the disk has it again; what an agent marked in the last two hours stays."""
    from nodeagent import cache

    with tmpfs(tmp_path / "disk", "8m") as disk:
        monkeypatch.setenv("XDG_CACHE_HOME", str(disk))
        monkeypatch.setattr(cache, "LOW_DISK_BYTES", int(2.3 * 2**20))
        root = disk / "cluster-console"
        now = time.time()
        for name, days in (("oldest", 3), ("older", 2), ("old", 1), ("running", 0)):
            (root / "jobs" / name).mkdir(parents=True)
            (root / "jobs" / name / "job.py").write_bytes(b"x" * 2**20)
            os.utime(root / "jobs" / name, (now - days * 86400, now - days * 86400))
        (disk / "the operator's data").write_bytes(b"x" * int(3.2 * 2**20))  # ~0.8 MB left free
        assert shutil.disk_usage(disk).free < cache.LOW_DISK_BYTES
        removed = cache.prune()
        assert [os.path.basename(p) for p in removed] == ["oldest", "older"]
        assert shutil.disk_usage(disk).free >= cache.LOW_DISK_BYTES
        assert sorted(p.name for p in (root / "jobs").iterdir()) == ["old", "running"]
        (disk / "the operator's data").write_bytes(b"x" * int(5.6 * 2**20))  # the disk fills up again
        assert cache.prune() == [str(root / "jobs" / "old")]  # "running" is in use: it stays, short or not
        assert [p.name for p in (root / "jobs").iterdir()] == ["running"]


def test_an_agent_prunes_its_cache_once_started_and_keeps_what_it_runs_from(tmp_path, monkeypatch):
    """A local agent started from its bundle in a cache holding a month-old job and bundle: both go, and the
    log says so; its own bundle stays, marked used."""
    from console.bundle import local_bundle
    from nodeagent.cache import KEEP_UNUSED_S

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = tmp_path / "cluster-console"
    bundle, _ = local_bundle()
    assert bundle.parent == root
    for path in ("jobs/old/job.py", "agent-old.zip"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    month_ago = time.time() - KEEP_UNUSED_S - 3600
    for path in ("jobs/old", "agent-old.zip", bundle.name):
        os.utime(root / path, (month_ago, month_ago))
    lines = []
    agent = start_local_agent(sys.executable, lines.append, 1)
    try:
        agent.hello()
        assert wait_for(lambda: any("removed 2 cache entries" in line for line in lines), 10), lines
    finally:
        agent.close()
    assert sorted(p.name for p in root.iterdir()) == [bundle.name, "agents.pruned", "jobs"]
    assert list((root / "jobs").iterdir()) == []
    assert bundle.stat().st_mtime > time.time() - 600


def test_the_console_prunes_what_it_keeps_in_its_cache(tmp_path, monkeypatch):
    """Opening a cluster prunes the console's own month-old entries (resolved wheels, node facts, the Dask
    workers' code) and leaves the agents' (job files) to the agents."""
    from console.cluster import open_cluster
    from console.inventory import load_inventory
    from nodeagent.cache import KEEP_UNUSED_S

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "cluster-console"
    old = ("packages/0123/resolved.json", "nodes/n1.json", "dask-code-0123.zip", "jobs/old/job.py")
    for path in old + ("packages/4567/resolved.json", "dask-code-4567.zip"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    month_ago = time.time() - KEEP_UNUSED_S - 3600
    for path in ("packages/0123", "nodes/n1.json", "dask-code-0123.zip", "jobs/old"):
        os.utime(root / path, (month_ago, month_ago))
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[node]]\nname = "local"\ntransport = "local"\n')
    cluster = open_cluster(load_inventory(inventory))
    try:
        assert wait_for(lambda: not (root / "dask-code-0123.zip").exists() and not (root / "packages/0123").exists()
                        and not (root / "nodes/n1.json").exists(), 10)
    finally:
        cluster.close()
    assert sorted(p.name for p in root.iterdir()) == ["console.pruned", "dask-code-4567.zip", "jobs", "nodes",
                                                      "packages"]
    assert [p.name for p in (root / "packages").iterdir()] == ["4567"] and (root / "jobs/old").exists()


def _forkers(agent_pid):
    """The agent's living forkers (a killed one stays a zombie until the agent looks at it)."""
    found = []
    for child in psutil.Process(agent_pid).children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and is_forker(child):
                found.append(child)
    return found


def _one_chunk(agent, chunk):
    agent.exchange([ChunkItems(chunk, 1, pickle.dumps([3]))], 0)
    outcomes = []
    assert _wait(lambda: outcomes.extend(agent.exchange([], 0.5).outcomes) or outcomes)
    return [(o.chunk, o.status) for o in outcomes]


def test_a_killed_forker_is_replaced_for_the_agents_next_pools():
    """The agent's forker is SIGKILLed between chunks: the next job's pool is forked by a new forker the agent
    keeps, and the job after that by the same one."""
    agent = start_local_agent(sys.executable, lambda line: None, pool=2)
    try:
        pid = agent.hello()["pid"]
        assert agent.start_job(SLOW_SQUARES) == 2
        assert _one_chunk(agent, 0) == [(0, "ok")]
        [killed] = _forkers(pid)
        killed.kill()
        assert _wait(lambda: killed.pid not in [f.pid for f in _forkers(pid)]), "the forker outlived SIGKILL"
        agent.end_job()
        assert agent.start_job(SLOW_SQUARES._replace(workers=1)) == 1
        assert _one_chunk(agent, 1) == [(1, "ok")]
        assert _wait(lambda: len(_forkers(pid)) == 1), "no new forker"
        [new] = _forkers(pid)
        assert new.pid != killed.pid and {psutil.Process(w).ppid() for w in pool_workers(pid)} == {new.pid}
        agent.end_job()
        assert agent.start_job(SLOW_SQUARES._replace(workers=3)) == 3
        assert _one_chunk(agent, 2) == [(2, "ok")]
        assert [f.pid for f in _forkers(pid)] == [new.pid]
    finally:
        agent.close()
