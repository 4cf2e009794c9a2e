"""Prepare a node over SSH and start its agent: probe, deploy, start (POSIX and Windows).

Every OS difference lives in `Shell`: how to quote, how to run the Python
probe, the start command and the stop command, for a POSIX shell, cmd.exe and
PowerShell. One probe command tells the three apart (`echo %OS% $env:OS
$OSTYPE`: cmd expands the first, PowerShell the second, a POSIX shell neither).
Everything else (version, cores, architecture, the interpreter's path, the
cache directory) comes from the node's Python as one line of ASCII JSON, so no
code page of a Windows shell can garble a path such as C:\\Users\\Zoë.

Windows' OpenSSH server runs a command as `cmd.exe /c "<command>"` (one pair of
quotes added, which cmd strips again) or hands it to PowerShell; commands for
PowerShell use single quotes only, which survive its argument parsing.

The bundle (console/bundle.py) is uploaded by SFTP into the user's cache
directory under its content hash, so an unchanged node gets nothing uploaded.
The job's own files travel later, over the agent's stream (console/cluster.py).

What the probe learnt is kept in this machine's cache (`known_facts`), keyed by
where and as whom the console connects, the node's host key and the
inventory's python and os for it: a session's next start skips the probe's two
commands (~0.3 s a node) and probes again only when the agent does not start
with what was kept. `console bootstrap` always probes. Kept with them, the
bundle the node's agent last started from: a start with that same bundle skips
checking it is there (an SFTP session, ~55 ms a node); if it is gone after all,
the start fails and probes again, which deploys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

from console.agentlink import AgentLink, Progress, pump_lines
from console.rpyclink import RpycLink
from console.atomicfile import write_atomically
from console.bundle import bundle
from console.errors import NodeError
from console.inventory import Node
from console.ssh import ChannelStream, NodeConnection, fingerprint
from nodeagent.cache import cache_dir, mark_used
from nodeagent.wire import WireError

__all__ = ["Shell", "SHELLS", "detect_shell", "NodeFacts", "probe", "deploy", "launch_ssh",
           "PYTHON_CANDIDATES", "PROBE_SCRIPT"]

SHELL_PROBE = "echo %OS% $env:OS $OSTYPE"
"""cmd.exe expands %OS% to Windows_NT, PowerShell $env:OS; a POSIX shell neither."""
PYTHON_CANDIDATES = ("python3", "python", "py -3")
PROBE_SCRIPT = ("import sys, os, json, platform; e = os.environ; print(json.dumps([sys.version_info[0], "
                "sys.version_info[1], platform.python_version(), os.cpu_count(), platform.machine(), "
                "sys.platform, sys.executable, e.get('LOCALAPPDATA') or os.path.join(os.path.expanduser('~'), "
                "'AppData', 'Local') if os.name == 'nt' else e.get('XDG_CACHE_HOME') or "
                "os.path.expanduser('~/.cache')]))")
"""One line of ASCII JSON: version, cores, machine, platform, the interpreter's own path (the agent
starts with it, skipping launchers such as py.exe or pyenv shims) and the cache base directory, the
one nodeagent.cache.cache_dir() puts "cluster-console" under. No character a shell expands inside
double quotes, and single quotes only, which PowerShell's quoting doubles."""
MIN_PYTHON = (3, 9)
AGENT_EXIT_WAIT_S = 3.0


@dataclass(frozen=True)
class Shell:
    """The command lines of one kind of remote shell."""

    name: str
    """"posix", "cmd" or "powershell"."""

    def quote(self, path: str) -> str:
        """A path as one argument of this shell."""
        if self.name == "posix":
            return shlex.quote(path)
        if self.name == "powershell":
            return "'" + path.replace("'", "''") + "'"
        return '"' + path + '"'

    def python_probe(self, python: str) -> str:
        """Run the probe script with this Python command (a command of this shell, e.g. "py -3")."""
        if self.name == "powershell":
            return f"& {python} -c {self.quote(PROBE_SCRIPT)}"
        return f'{python} -c "{PROBE_SCRIPT}"'

    def start_command(self, python: str, bundle_path: str, pool: int = 0) -> str:
        """Start the agent from its bundle; it speaks on the session's stdin/stdout. `pool` workers start at
        once (a job follows); none for a probe."""
        warm = f" --pool {int(pool)}" if pool else ""
        if self.name == "posix":
            return f"exec {python} {self.quote(bundle_path)}{warm}"
        if self.name == "powershell":
            return f"& {python} {self.quote(bundle_path)}{warm}"
        return f"{python} {self.quote(bundle_path)}{warm}"

    def stop_command(self, pid: int) -> str:
        """End an agent and its workers that outlived their session (taskkill without /T where it is refused)."""
        pid = int(pid)
        if self.name == "posix":
            return f"kill {pid} 2>/dev/null; true"
        if self.name == "powershell":
            return (f"taskkill /PID {pid} /T /F 2>$null; if (-not $?) {{ taskkill /PID {pid} /F 2>$null }}; "
                    "exit 0")
        return f"taskkill /PID {pid} /T /F >NUL 2>&1 || taskkill /PID {pid} /F >NUL 2>&1 & exit /b 0"

    def sftp_path(self, path: str) -> str:
        """A native path as SFTP names it (C:\\x\\y -> /C:/x/y on Windows)."""
        if self.name == "posix":
            return path
        return "/" + path.replace("\\", "/").lstrip("/")


SHELLS: Dict[str, Shell] = {name: Shell(name) for name in ("posix", "cmd", "powershell")}


def detect_shell(probe_output: str) -> Shell:
    """Which shell answered SHELL_PROBE."""
    if "Windows_NT" in probe_output:
        return SHELLS["powershell"] if "%OS%" in probe_output else SHELLS["cmd"]
    return SHELLS["posix"]


@dataclass(frozen=True)
class NodeFacts:
    """What the probe learnt about a node."""

    shell: Shell
    os: str
    arch: str
    python: str
    """The interpreter's full path on the node."""
    python_version: str
    cores: int
    cache_base: str
    bundle: str = ""
    """The digest of the bundle the node's agent last started from (kept, not probed): deploy then skips the
    check."""

    @property
    def bundle_dir(self) -> str:
        """Where bundles live on the node (native path)."""
        if self.shell.name == "posix":
            return posixpath.join(self.cache_base, "cluster-console")
        return self.cache_base.rstrip("\\") + "\\cluster-console"


def probe(conn: NodeConnection) -> NodeFacts:
    """Learn the node's shell, OS, architecture, Python and cache directory."""
    node = conn.node
    status, out, err = conn.run(SHELL_PROBE)
    if status != 0:
        raise NodeError(f"{conn.where}: the node's shell failed a plain echo ({(err or out).strip()[:200]}).")
    shell = detect_shell(out)
    if node.os == "windows" and shell.name == "posix" or node.os == "linux" and shell.name != "posix":
        raise NodeError(f"{conn.where}: the inventory says os = {node.os!r} but the node answers like a "
                        f"{shell.name} shell; fix os in the inventory or use \"auto\".")
    tried = []
    for python in ((node.python,) if node.python else PYTHON_CANDIDATES):
        status, out, err = conn.run(shell.python_probe(python))
        answer = _probe_answer(out) if status == 0 else None
        if answer is None:
            tried.append(f"{python}: not found")
            continue
        major, minor, version, cores, machine, sys_platform, executable, cache_base = answer
        if (major, minor) < MIN_PYTHON:
            tried.append(f"{python}: {version} is too old")
            continue
        os_name = "windows" if shell.name != "posix" else sys_platform.rstrip("0123456789")
        return NodeFacts(shell, os_name, machine, executable, version, cores or 1, cache_base)
    hint = ("fix python in the inventory" if node.python
            else "install Python 3.9+ or set python = \"...\" in the inventory")
    raise NodeError(f"{conn.where}: no usable Python ({'; '.join(tried)}); {hint}.")


def _facts_file(conn: NodeConnection) -> Path:
    assert conn.client is not None, "connected"
    host_key = conn.client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
    identity = [conn.target.hostname, conn.target.port, conn.target.user, fingerprint(host_key), conn.node.python,
                conn.node.os]
    return Path(cache_dir()) / "nodes" / f"{hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]}.json"


def known_facts(conn: NodeConnection) -> Optional[NodeFacts]:
    """What an earlier probe of this node learnt (see the module's doc), or None."""
    path = _facts_file(conn)
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        mark_used((str(path),))
        return NodeFacts(SHELLS[kept["shell"]], kept["os"], kept["arch"], kept["python"], kept["python_version"],
                         int(kept["cores"]), kept["cache_base"], str(kept.get("bundle", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_facts(conn: NodeConnection, facts: NodeFacts) -> None:
    """Keep what the probe learnt for the next start; a cache that cannot be written is no fault: the next
    start probes again."""
    kept = {"shell": facts.shell.name, "os": facts.os, "arch": facts.arch, "python": facts.python,
            "python_version": facts.python_version, "cores": facts.cores, "cache_base": facts.cache_base,
            "bundle": facts.bundle}
    with contextlib.suppress(OSError):
        write_atomically(_facts_file(conn), json.dumps(kept).encode("utf-8"))


def _probe_answer(out: str) -> Optional[list]:
    """The probe script's fields, or None when what answered was not it (a missing command's message)."""
    for line in out.splitlines():
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, list) and len(answer) == 8 and all(isinstance(v, int) for v in answer[:2]):
            return answer
    return None


def deploy(conn: NodeConnection, facts: NodeFacts, upload: bool = True) -> Tuple[str, Optional[bool]]:
    """Make sure the node has the bundle; (its native path, True if uploaded now / False if cached / None if missing).
    The bundle its agent last started from (`facts.bundle`) is taken as there, unchecked."""
    digest, data = bundle()
    shell = facts.shell
    native_dir = facts.bundle_dir
    name = f"agent-{digest}.zip"
    native = posixpath.join(native_dir, name) if shell.name == "posix" else native_dir + "\\" + name
    if facts.bundle == digest:
        return native, False
    remote_dir = shell.sftp_path(native_dir)
    remote = posixpath.join(remote_dir, name)
    sftp = conn.sftp()
    try:
        try:
            sftp.stat(remote)  # named by its sources' hash, and only ever renamed into place whole
            return native, False
        except OSError:
            pass
        if not upload:
            return native, None
        _makedirs(sftp, remote_dir)
        partial = f"{remote}.{int(time.time() * 1000)}.part"
        with sftp.open(partial, "wb") as f:
            f.set_pipelined(True)
            f.write(data)
        try:
            sftp.posix_rename(partial, remote)
        except OSError:
            sftp.rename(partial, remote)
        return native, True
    except OSError as exc:
        raise NodeError(f"{conn.where}: cannot upload the agent to {native_dir} ({exc}).") from None
    finally:
        sftp.close()


def _makedirs(sftp, path: str) -> None:
    parts = [p for p in path.split("/") if p]
    current = "/" if path.startswith("/") else ""
    for part in parts:
        current = posixpath.join(current, part) if current else part
        try:
            sftp.stat(current)
        except OSError:
            sftp.mkdir(current)


def launch_ssh(node: Node, session: Progress, warm: bool = True, probe_again: bool = False) -> AgentLink:
    """Connect, probe (unless an earlier probe's answers are kept and still start the agent), deploy and start
    the node's agent; the link to it. `warm` starts its workers at once (a job follows); `probe_again` ignores
    what was kept (`console bootstrap`).

    `session` gets `set_state(...)` as the node moves on and `log(line)` for the
    agent's stderr (console/cluster.py's NodeSession, or the bootstrap command's recorder).
    """
    conn = NodeConnection(node)
    session.set_state("connecting")
    conn.connect()
    try:
        session.set_state("bootstrapping")
        facts = None if probe_again else known_facts(conn)
        if facts is not None:
            try:
                link = _start_agent(conn, facts, session, warm, "cached")
            except (OSError, EOFError, NodeError, WireError):
                session.log("the agent did not start with what the last probe of this node found: probing again")
            else:
                _keep_started_bundle(conn, facts)
                return link
        facts = probe(conn)
        link = _start_agent(conn, facts, session, warm, "probed")
        _keep_started_bundle(conn, facts)
        return link
    except BaseException:
        conn.close()
        raise


def _keep_started_bundle(conn: NodeConnection, facts: NodeFacts) -> None:
    """The agent started: keep these facts with its bundle, unless they are kept so already."""
    digest = bundle()[0]
    if facts.bundle != digest:
        remember_facts(conn, replace(facts, bundle=digest))


def _start_agent(conn: NodeConnection, facts: NodeFacts, session: Progress, warm: bool,
                 probe_state: str) -> AgentLink:
    """Deploy the bundle and start the agent with these facts; the link, which closes the connection when it
    closes. A failure closes only the agent's channel."""
    path, uploaded = deploy(conn, facts)
    pool = (conn.node.workers or facts.cores) if warm else 0
    channel = conn.start(facts.shell.start_command(facts.shell.quote(facts.python), path, pool))
    pump_lines(channel.makefile_stderr("rb"), session.log)
    link: Optional[AgentLink] = None

    def close() -> None:
        """The agent exits when its stdin closes; stop it by pid only if it has not within a few seconds."""
        try:
            channel.shutdown_write()
        except (OSError, EOFError):
            pass
        deadline = time.monotonic() + AGENT_EXIT_WAIT_S
        while not channel.exit_status_ready() and time.monotonic() < deadline and not channel.closed:
            time.sleep(0.02)
        pid = link.info.get("pid") if link is not None else None
        if pid and not channel.exit_status_ready():
            try:
                conn.run(facts.shell.stop_command(pid), timeout=5)
            except NodeError:
                pass
        channel.close()
        conn.close()

    try:
        link = RpycLink(ChannelStream(channel), close)
    except BaseException:
        channel.close()
        raise
    link.facts = {"shell": facts.shell.name, "python": facts.python, "bundle": "uploaded" if uploaded else "cached",
                  "probe": probe_state}
    return link
