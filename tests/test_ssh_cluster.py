"""End to end over real OpenSSH: three sshd hosts in network namespaces.

The console reaches them with paramiko, deploys the agent bundle by SFTP and
runs it as the command of each SSH session. Needs root and sshd (skips with
the reason otherwise; .ci/install-test-tools installs sshd in CI).
"""

import functools
import json
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from helpers import FAULTY, ROOT, communicate, run_console, wait_for
from jobs.factorize import factorize

pytestmark = pytest.mark.sshd

NUMBERS = range(999999999999, 1000000001999, 2)
OLDEST = next((p for p in ("/root/.pyenv/versions/3.9.18/bin/python3", "/usr/bin/python3") if os.path.exists(p)))
"""The oldest Python 3.9+ here without psutil: node3 runs its agent on it (metrics from the fallback)."""


@functools.lru_cache(maxsize=None)
def expected_factorisation():
    """The example's answer computed here (~8 s of CPU), once for the three engines' tests that check it."""
    merged = {}
    for n in NUMBERS:
        merged.update({str(k): v for k, v in factorize(n).items()})
    return merged


def agent_pids(cluster, node):
    """Agents on the node and their worker processes."""
    agents = [pid for pid, cmd in cluster.processes_in(node) if "cluster-console/agent-" in cmd]
    family = set(agents)
    for pid in agents:
        try:
            family.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return sorted(family)


def table_rows(stdout):
    """The node rows of a bootstrap/status table, split into cells."""
    return [line.split() for line in stdout.splitlines() if line.split() and line.split()[0].startswith("node")
            and line.split()[0] != "node"]



def test_bootstrap_uploads_once_then_finds_the_bundle_cached(make_net_cluster, tmp_path):
    """First bootstrap uploads the bundle to all three nodes; the second uploads nothing."""
    cluster = make_net_cluster(n=3)
    inventory = cluster.write_inventory(tmp_path / "inventory.toml")
    first = run_console("bootstrap", "--inventory", str(inventory))
    assert first.returncode == 0, first.stdout + first.stderr
    rows = table_rows(first.stdout)
    assert [r[0] for r in rows] == ["node1", "node2", "node3"]
    assert all(r[2].startswith("linux/") and r[5] == "uploaded" and r[-1] == "ok" for r in rows)
    second = run_console("bootstrap", "--inventory", str(inventory))
    assert second.returncode == 0
    assert [r[5] for r in table_rows(second.stdout)] == ["cached"] * 3
    for node in cluster.nodes:
        bundles = list((node.cache_dir / "cluster-console").glob("agent-*.zip"))
        assert len(bundles) == 1
        assert wait_for(lambda node=node: not agent_pids(cluster, node), 10), "bootstrap left an agent running"
    status = run_console("status", "--inventory", str(inventory))
    assert status.returncode == 0 and status.stdout.count("cached") == 3


def test_a_node_without_psutil_reports_from_the_fallback(net_cluster_3, tmp_path):
    """node3's Python has no psutil: the agent still runs and the table says "fallback"."""
    inventory = net_cluster_3.write_inventory(tmp_path / "inventory.toml", overrides={"node3": {"python": OLDEST}})
    proc = run_console("bootstrap", "--inventory", str(inventory), "node3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [row] = table_rows(proc.stdout)
    assert row[6] == "fallback"


def test_run_spreads_over_three_nodes_with_the_local_answer(net_cluster_3, tmp_path):
    """`console run` of the factorisation example uses all three nodes and gives the local run's result."""
    inventory = net_cluster_3.write_inventory(tmp_path / "inventory.toml", overrides={"node3": {"python": OLDEST}})
    out = tmp_path / "out.json"
    proc = run_console("run", "jobs/examples/factorize.toml", "--inventory", str(inventory), "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "ok" and doc["chunks"] == {"total": 20, "done": 20, "failed": 0}
    assert doc["result"] == expected_factorisation()
    shares = doc["nodes"]
    assert set(shares) == {"node1", "node2", "node3"}
    assert all(share["chunks"] > 0 for share in shares.values())
    assert sum(share["items"] for share in shares.values()) == 1000


class Recorder:
    """Stands in for a node session: keeps the log lines."""

    def __init__(self):
        self.lines = []

    def set_state(self, state, error=None):
        pass

    def log(self, line):
        self.lines.append(line)


def test_a_session_start_skips_the_probe_and_probes_again_when_what_it_kept_is_stale(net_cluster_3, tmp_path):
    """A node's agent starts from what its last probe learnt (kept in the console's cache); kept facts naming a
    Python the node no longer has make the start probe again, and the agent comes up all the same."""
    import dataclasses

    from console.bootstrap import known_facts, launch_ssh, remember_facts
    from console.inventory import load_inventory
    from console.ssh import NodeConnection

    node = load_inventory(net_cluster_3.write_inventory(tmp_path / "inventory.toml")).nodes[0]
    starts = []
    for _ in range(2):
        link = launch_ssh(node, Recorder())
        starts.append(link.facts["probe"])
        assert link.hello()["python"]
        link.close()
    assert starts[1] == "cached"
    conn = NodeConnection(node)
    conn.connect()
    try:
        kept = known_facts(conn)
        assert kept is not None
        remember_facts(conn, dataclasses.replace(kept, python="/gone/python3"))
    finally:
        conn.close()
    recorder = Recorder()
    link = launch_ssh(node, recorder)
    try:
        assert link.facts["probe"] == "probed" and link.facts["python"] == kept.python
        assert link.hello()["python"]
        assert any("probing again" in line for line in recorder.lines), recorder.lines
    finally:
        link.close()


def test_a_start_with_the_bundle_kept_skips_checking_it_and_deploys_again_when_it_is_gone(net_cluster_3, tmp_path,
                                                                                           monkeypatch):
    """A node's agent started from a bundle: the next start with that bundle takes it as there (no SFTP session,
    ~55 ms); with the bundle removed from the node, that start fails, probes again, uploads it, and the agent
    comes up all the same."""
    from console.bootstrap import known_facts, launch_ssh
    from console.bundle import bundle
    from console.inventory import load_inventory
    from console.ssh import NodeConnection

    node = load_inventory(net_cluster_3.write_inventory(tmp_path / "inventory.toml")).nodes[1]
    launch_ssh(node, Recorder()).close()  # however it started, its bundle is kept with its facts now
    sftp_sessions = []
    real_sftp = NodeConnection.sftp
    monkeypatch.setattr(NodeConnection, "sftp", lambda conn: sftp_sessions.append(conn) or real_sftp(conn))
    link = launch_ssh(node, Recorder())
    try:
        assert (link.facts["probe"], link.facts["bundle"]) == ("cached", "cached")
        assert link.hello()["python"]
    finally:
        link.close()
    assert sftp_sessions == []
    conn = NodeConnection(node)
    conn.connect()
    try:
        kept = known_facts(conn)
        assert kept is not None and kept.bundle == bundle()[0]
        assert conn.run("rm " + posixpath.join(kept.bundle_dir, f"agent-{kept.bundle}.zip"))[0] == 0
    finally:
        conn.close()
    recorder = Recorder()
    link = launch_ssh(node, recorder)
    try:
        assert (link.facts["probe"], link.facts["bundle"]) == ("probed", "uploaded")
        assert link.hello()["python"]
        assert any("probing again" in line for line in recorder.lines), recorder.lines
    finally:
        link.close()


def test_no_socket_while_running_and_no_agent_after_the_console_is_killed(net_cluster_3, tmp_path):
    """While a job runs nothing but sshd listens in any namespace; SIGKILL the console and every agent exits."""
    inventory = net_cluster_3.write_inventory(tmp_path / "inventory.toml")
    job = tmp_path / "job.toml"
    job.write_text('[job]\nfunction = "jobs.primes:count_primes"\nchunk_size = 1\nreduce = "sum"\n'
                   '[input]\nrange = [1000000000, 1010000000, 10000]\n'
                   f'[output]\npath = "{tmp_path / "primes.json"}"\n')
    console = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(job), "--inventory", str(inventory)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: all(len(agent_pids(net_cluster_3, n)) >= 3 for n in net_cluster_3.nodes), 30), \
            "agents and their workers did not start on every node"
        for node in net_cluster_3.nodes:
            listeners = net_cluster_3.listening_sockets(node)
            assert len(listeners) == 1 and '"sshd"' in listeners[0] and ":22 " in listeners[0], listeners
            for pid in agent_pids(net_cluster_3, node):
                try:
                    assert psutil.Process(pid).net_connections(kind="all") == []
                except psutil.NoSuchProcess:  # ended since it was listed: it holds no socket
                    pass
    finally:
        console.send_signal(signal.SIGKILL)
        console.wait(10)
    for node in net_cluster_3.nodes:
        assert wait_for(lambda node=node: not agent_pids(net_cluster_3, node), 15), \
            f"agent left on {node.name}: {net_cluster_3.processes_in(node)}"


def test_each_broken_node_is_one_sentence_and_the_others_carry_on(make_net_cluster, tmp_path):
    """Unknown key, changed key, wrong client key, unreachable host, no Python: five sentences, job done on node1."""
    cluster = make_net_cluster(n=6, no_python=("node6",))
    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    known_hosts = cluster.known_hosts.read_text().splitlines()
    node2 = cluster.node("node2")
    cluster.known_hosts.write_text("\n".join(l for l in known_hosts if not l.startswith(node2.host + " ")) + "\n")
    cluster.replace_host_key("node3")
    cluster.link_down("node5")
    try:
        inventory = cluster.write_inventory(tmp_path / "inventory.toml", overrides={
            "node4": {"key": str(other_key)}, "node5": {"connect_timeout": 2}})
        job = tmp_path / "job.toml"
        job.write_text(f'[job]\nfunction = "faulty:slow_square"\nfiles = ["{FAULTY}"]\nchunk_size = 10\n'
                       f'reduce = "list"\n[input]\nrange = [0, 160]\n[output]\npath = "{tmp_path / "out.json"}"\n')
        proc = run_console("run", str(job), "--inventory", str(inventory))
    finally:
        cluster.link_up("node5")
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 0, text
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["result"] == [x * x for x in range(160)]
    assert set(doc["nodes"]) == {"node1"}
    host = {name: cluster.node(name).host for name in ("node2", "node3", "node4", "node5", "node6")}
    assert f"node2 ({host['node2']}:22): host key ssh-ed25519 SHA256:" in text
    assert "is not in" in text and "run 'console trust node2'" in text
    assert f"node3 ({host['node3']}:22): host key CHANGED: expected SHA256:" in text
    assert f"node4 ({host['node4']}:22): user 'root' was refused with key {other_key}" in text
    assert f"node5 ({host['node5']}:22): no answer within 2 s" in text, text
    assert f"node6 ({host['node6']}:22): no usable Python (python3: not found; python: not found" in text
    assert "Traceback" not in text


def test_all_nodes_unusable_exits_3(make_net_cluster, tmp_path):
    """Every node refuses: exit 3 and each node's reason."""
    cluster = make_net_cluster(n=2, no_python=("node1", "node2"))
    inventory = cluster.write_inventory(tmp_path / "inventory.toml")
    proc = run_console("run", "jobs/examples/factorize.toml", "--inventory", str(inventory),
                       "--output", str(tmp_path / "out.json"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.count("no usable Python") >= 2
    assert json.loads((tmp_path / "out.json").read_text())["reason"] == "no node is usable"


def test_trust_pins_an_unknown_key_and_refuses_a_changed_one(make_net_cluster, tmp_path):
    cluster = make_net_cluster(n=1)
    inventory = cluster.write_inventory(tmp_path / "inventory.toml")
    cluster.known_hosts.write_text("")
    refused = run_console("bootstrap", "--inventory", str(inventory))
    assert refused.returncode == 3 and "console trust node1" in " ".join(refused.stdout.split())
    pinned = run_console("trust", "node1", "--yes", "--inventory", str(inventory))
    assert pinned.returncode == 0 and "pinned in" in pinned.stdout
    assert run_console("bootstrap", "--inventory", str(inventory)).returncode == 0
    cluster.replace_host_key("node1")
    changed = run_console("trust", "node1", "--yes", "--inventory", str(inventory))
    assert changed.returncode == 3 and "pins a different ssh-ed25519 key" in " ".join(changed.stderr.split())


def test_host_alias_from_ssh_config(net_cluster_3, tmp_path):
    """host = "lab-a" is an alias in ~/.ssh/config; HostName, User and IdentityFile come from there."""
    node = net_cluster_3.node("node1")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        f"Host lab-a\n  HostName {node.host}\n  User root\n  IdentityFile {net_cluster_3.client_key}\n")
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(f'[[node]]\nname = "lab-a"\nhost = "lab-a"\nknown_hosts = "{net_cluster_3.known_hosts}"\n')
    proc = run_console("bootstrap", "--inventory", str(inventory), env={"HOME": str(home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [row] = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] == ["lab-a"]]
    assert row[1] == "lab-a:22" and row[-1] == "ok"


def run_in_background(job, inventory):
    return subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(job), "--inventory", str(inventory)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def journalled_by(output: Path, node: str) -> bool:
    """Whether the journal of `output` holds a chunk from `node` (it then holds more: its credit refilled)."""
    try:
        lines = Path(str(output) + ".journal").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f'"node": "{node}"' in line for line in lines)


def slow_job(tmp_path, items=240, chunk_size=4):
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nfunction = "faulty:slow_square"\nfiles = ["{FAULTY}"]\nchunk_size = {chunk_size}\n'
                   f'[input]\nrange = [0, {items}]\n[output]\npath = "{tmp_path / "out.json"}"\n')
    return job


def test_agent_sigkilled_on_a_node_mid_job(net_cluster_3, tmp_path):
    """node2's agent is SIGKILLed mid-job: its session reconnects, its chunks rerun, each counts once."""
    inventory = net_cluster_3.write_inventory(tmp_path / "inventory.toml")
    console = run_in_background(slow_job(tmp_path, items=600), inventory)
    node2 = net_cluster_3.node("node2")
    assert wait_for(lambda: journalled_by(tmp_path / "out.json", "node2"), 30), "node2 finished no chunk"
    agent = next(pid for pid, cmd in net_cluster_3.processes_in(node2) if "cluster-console/agent-" in cmd)
    os.kill(agent, signal.SIGKILL)
    output, _ = communicate(console, 120)
    assert console.returncode == 0, output
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["result"] == [x * x for x in range(600)]
    assert doc["chunks"] == {"total": 150, "done": 150, "failed": 0}
    assert sum(share["items"] for share in doc["nodes"].values()) == 600
    assert "node node2 is lost: node2: the agent's stream closed" in output, output


def test_link_down_mid_job_the_others_finish_it(make_net_cluster, tmp_path):
    """node2's link goes down mid-job: its chunks are re-run elsewhere, the result is exact, no agent stays."""
    cluster = make_net_cluster(n=3)
    inventory = cluster.write_inventory(tmp_path / "inventory.toml", connect_timeout=5)
    console = run_in_background(slow_job(tmp_path), inventory)
    node2 = cluster.node("node2")
    try:
        assert wait_for(lambda: journalled_by(tmp_path / "out.json", "node2"), 30), "node2 finished no chunk"
        cluster.link_down(node2)
        output, _ = communicate(console, 120)
    finally:
        cluster.link_up(node2)
    assert console.returncode == 0, output
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["result"] == [x * x for x in range(240)]
    assert doc["chunks"] == {"total": 60, "done": 60, "failed": 0}
    assert sum(share["items"] for share in doc["nodes"].values()) == 240
    assert sum(doc["nodes"].get(n, {"chunks": 0})["chunks"] for n in ("node1", "node3")) > 40


@pytest.fixture
def password_user(tmp_path):
    """A throwaway local account with a password (removed afterwards); the nodes share this machine's users."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating a test account needs root and useradd")
    name = f"ccpw{os.getpid() % 100000}"
    home = tmp_path / "pwhome"
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        home.mkdir()
        shutil.chown(home, name)
        password = "c0rrect-horse-" + name
        subprocess.run(["chpasswd"], input=f"{name}:{password}", text=True, check=True, capture_output=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_password_from_the_environment(make_net_cluster, password_user, tmp_path, request):
    """password_env names a variable; the password itself never shows in output or on a command line."""
    name, password = password_user
    cache = Path(tempfile.mkdtemp(prefix="ccpw-cache-"))
    os.chmod(cache, 0o1777)
    request.addfinalizer(lambda: shutil.rmtree(cache, ignore_errors=True))
    cluster = make_net_cluster(n=1, extra_sshd_config=("PasswordAuthentication yes",),
                               session_env={"XDG_CACHE_HOME": str(cache)}, verify=False)
    node = cluster.node("node1")
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(f'[[node]]\nname = "pw"\nhost = "{node.host}"\nuser = "{name}"\n'
                         f'password_env = "CC_NODE_PASSWORD"\nknown_hosts = "{cluster.known_hosts}"\n')
    env = {"CC_NODE_PASSWORD": password, "SSH_AUTH_SOCK": ""}
    proc = run_console("bootstrap", "--inventory", str(inventory), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert password not in proc.stdout + proc.stderr
    wrong = run_console("bootstrap", "--inventory", str(inventory), env=dict(env, CC_NODE_PASSWORD="nope"))
    assert wrong.returncode == 3
    assert f"pw ({node.host}:22): user '{name}' was refused with the password" in " ".join(wrong.stdout.split())
    unset = run_console("bootstrap", "--inventory", str(inventory), env={"SSH_AUTH_SOCK": ""})
    assert "password_env names CC_NODE_PASSWORD, which is not set" in " ".join(unset.stdout.split())
