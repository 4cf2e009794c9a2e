"""A real multi-host SSH test cluster on one Linux machine.

Each node is a network namespace joined to the root namespace by a veth pair
and running its own OpenSSH ``sshd``. The tests (the console) stay in the root
namespace and reach node ``k`` at ``10.77.k.2`` port 22; the root side of its
veth is ``10.77.k.1``. Node ``i`` of a cluster usually gets ``k == i``, but
``k`` is the first free subnet on this machine, so several clusters (the
session one, a test's own one, another engineer's run) can live side by side:
always read ``node.host`` instead of assuming ``10.77.i.2``.

What each node gets, all under the cluster's ``tmpdir``:

* its own ed25519 host key, ``sshd_config``, pid file and log (``sshd -E``);
* its own cache directory, through ``SetEnv XDG_CACHE_HOME=...`` (the file
  system is shared by all namespaces, so the per-user cache would be too);
* for a node "without Python": ``SetEnv HOME=<empty dir> PATH=<dir of
  symlinks to basic tools>``. HOME has to change too, because bash sources
  ``~/.bashrc`` for ssh commands and a ``.bashrc`` may prepend its own PATH.

Namespaces are named ``ccn<pid>x<k>`` and host-side veths ``ccv<pid>x<k>``,
where ``pid`` is the creating process. ``cleanup_stale()`` (run before every
cluster starts) removes those whose process is dead, so a crashed run leaves
nothing behind for long. Teardown kills every process left in each namespace,
deletes veths and namespaces, and removes nothing outside ``tmpdir``.

A node named in ``windows=`` is an emulated Windows PC instead: its sshd runs
every request the way Windows' OpenSSH server does, through Wine's cmd.exe, with
python.org's Windows CPython installed for the session's user (tests/winnode.py).

Needs root, iproute2 (``ip``, ``ss``), ``/usr/sbin/sshd`` and the OpenSSH
client tools; ``skip_reason()`` says which one is missing (and
``winnode.skip_reason()`` what Windows nodes need beyond that).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import winnode
from winnode import WindowsSpec

SSHD = "/usr/sbin/sshd"
SSH_PORT = 22
NS_PREFIX = "ccn"
VETH_PREFIX = "ccv"
NODE_IFNAME = "eth0"
SUBNET = "10.77"
MAX_INDEX = 254
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NO_PYTHON_TOOLS = (
    "sh", "bash", "dash", "env", "echo", "printf", "test", "[", "true", "false",
    "uname", "id", "whoami", "hostname", "cat", "head", "tail", "wc", "tr", "cut",
    "sort", "grep", "sed", "awk", "mkdir", "rmdir", "rm", "ls", "cp", "mv", "ln",
    "chmod", "touch", "stat", "readlink", "realpath", "dirname", "basename",
    "find", "xargs", "tar", "gzip", "base64", "sha256sum", "sleep", "kill", "ps",
    "date", "nproc", "getconf",
)
_OWNED_NAME = re.compile(r"^(%s|%s)(\d+)x(\d+)$" % (NS_PREFIX, VETH_PREFIX))
_SUBNET_ADDR = re.compile(r"\binet %s\.(\d+)\.\d+/" % re.escape(SUBNET))
_VERIFY_MARK = "@@netcluster@@"
_UNQUOTABLE = re.compile(r"[\s\"'\\]")

NodeRef = Union["Node", str]


class NetClusterError(RuntimeError):
    """The harness could not build, change or tear down the cluster."""


@dataclass
class Node:
    """One namespace with its sshd, as the tests see it."""

    name: str
    index: int
    ns: str
    host: str
    port: int
    host_veth: str
    node_mac: str
    dir: Path
    python: bool = True
    windows: Optional[WindowsSpec] = None
    """Set for an emulated Windows node."""
    windows_env: dict[str, str] = field(default_factory=dict, repr=False)
    """Wine's settings for the node's sessions (WINEPREFIX, USER, ...)."""
    process: Optional["subprocess.Popen[bytes]"] = field(default=None, repr=False)

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.dir / "host_key"

    @property
    def host_key_pub(self) -> Path:
        return self.dir / "host_key.pub"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def cache_dir(self) -> Path:
        """The session's cache base: XDG_CACHE_HOME, or %LOCALAPPDATA% on a Windows node."""
        if self.windows is not None:
            return winnode.local_appdata_dir(self.dir, self.windows)
        return self.dir / "cache"

    @property
    def home(self) -> Path:
        """The session HOME of a node without Python (others keep root's)."""
        return self.dir / "home"

    @property
    def bin_dir(self) -> Path:
        """The whole session PATH of a node without Python."""
        return self.dir / "bin"


# ---------------------------------------------------------------- small tools


def _run(argv: Sequence[str], timeout: float = 10.0, check: bool = True) -> CompletedProcess[str]:
    proc = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise NetClusterError(
            f"`{' '.join(argv)}` failed with {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true; bounded both in attempts and in time."""
    deadline = time.monotonic() + timeout
    for _ in range(math.ceil(timeout / interval) + 1):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return predicate()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_path() -> Path:
    base = Path("/run/lock")
    return (base if base.is_dir() else Path(tempfile.gettempdir())) / "ccnetcluster.lock"


@contextlib.contextmanager
def _allocation_lock(timeout: float = 30.0) -> Iterator[None]:
    """Serialise subnet allocation and stale cleanup between processes."""
    with open(_lock_path(), "a") as handle:
        def try_lock() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not _wait_until(try_lock, timeout, interval=0.05):
            raise NetClusterError(f"could not lock {_lock_path()} within {timeout} s")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------- namespaces and links


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _host_links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"]).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _owner(name: str) -> Optional[tuple[str, int, int]]:
    """(prefix, pid, index) for names this harness creates, else None."""
    match = _OWNED_NAME.match(name)
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


def _ns_pids(ns: str) -> list[int]:
    proc = _run(["ip", "netns", "pids", ns], check=False)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def _kill_ns_processes(ns: str, timeout: float = 3.0) -> list[int]:
    """SIGKILL everything in ``ns`` until it is empty; returns survivors."""
    def empty() -> bool:
        pids = _ns_pids(ns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not pids

    _wait_until(empty, timeout, interval=0.02)
    return _ns_pids(ns)


def _delete_namespace(ns: str, veth: str) -> list[str]:
    """Empty and delete a namespace and its veth; returns problems found."""
    problems = []
    survivors = _kill_ns_processes(ns)
    if survivors:
        problems.append(f"{ns}: processes {survivors} survived SIGKILL")
    _run(["ip", "link", "del", veth], check=False)
    proc = _run(["ip", "netns", "del", ns], check=False)
    if proc.returncode != 0 and ns in list_namespaces():
        problems.append(f"{ns}: ip netns del failed: {proc.stderr.strip()}")
    return problems


def cleanup_stale() -> list[str]:
    """Remove namespaces and veths of earlier runs whose process is dead.

    Only names of this harness's pattern (``ccn<pid>x<k>``, ``ccv<pid>x<k>``)
    are touched, and only when ``<pid>`` is no longer running. Returns the
    removed names.
    """
    removed = []
    with _allocation_lock():
        for name in list_namespaces():
            owner = _owner(name)
            if owner and owner[0] == NS_PREFIX and not _pid_alive(owner[1]):
                _delete_namespace(name, f"{VETH_PREFIX}{owner[1]}x{owner[2]}")
                removed.append(name)
        for name in _host_links():
            owner = _owner(name)
            if owner and owner[0] == VETH_PREFIX and not _pid_alive(owner[1]):
                _run(["ip", "link", "del", name], check=False)
                removed.append(name)
    return removed


def _used_indexes() -> set[int]:
    used = {owner[2] for owner in map(_owner, list_namespaces() + _host_links()) if owner}
    addrs = _run(["ip", "-4", "-o", "addr", "show"]).stdout
    used.update(int(octet) for octet in _SUBNET_ADDR.findall(addrs))
    return used


def _node_mac(index: int) -> str:
    return f"02:cc:77:00:{index:02x}:02"


def _create_link(node: Node) -> None:
    """Namespace, veth pair, addresses, and a permanent neighbour entry."""
    ns, veth = node.ns, node.host_veth
    _run(["ip", "netns", "add", ns])
    _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", NODE_IFNAME,
          "address", node.node_mac, "netns", ns])
    _run(["ip", "addr", "add", f"{SUBNET}.{node.index}.1/24", "dev", veth])
    _run(["ip", "link", "set", veth, "up"])
    _run(["ip", "-n", ns, "addr", "add", f"{node.host}/24", "dev", NODE_IFNAME])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    _run(["ip", "-n", ns, "link", "set", NODE_IFNAME, "up"])
    _run(["ip", "neigh", "replace", node.host, "lladdr", node.node_mac, "dev", veth,
          "nud", "permanent"])


# ------------------------------------------------------------ skip detection


@functools.lru_cache(maxsize=None)
def skip_reason() -> Optional[str]:
    """Why the harness cannot run here, as a sentence; None when it can."""
    if os.geteuid() != 0:
        return "the network-namespace SSH cluster needs root (network namespaces, sshd)."
    for tool in ("ip", "ss", "ssh-keygen", "ssh"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed; the SSH test cluster needs it (.ci/install-test-tools)."
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing: install openssh-server (see .ci/install-test-tools)."
    probe = f"{NS_PREFIX}{os.getpid()}x0"
    try:
        created = _run(["ip", "netns", "add", probe], check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run `ip netns add`: {exc}."
    if created.returncode != 0:
        return f"creating a network namespace is not permitted here: {created.stderr.strip()}."
    _run(["ip", "netns", "del", probe], check=False)
    return None


# ----------------------------------------------------------- keys and config


def _keygen(path: Path, comment: str) -> None:
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _public_key(path: Path) -> str:
    """``type base64`` of a .pub file, without its comment."""
    return " ".join(path.read_text().split()[:2])


@functools.lru_cache(maxsize=None)
def _sshd_accepts(option: str, value: str, any_key: str) -> bool:
    probe = [SSHD, "-t", "-f", "/dev/null", "-o", f"HostKey={any_key}", "-o", f"{option}={value}"]
    return _run(probe, check=False).returncode == 0


def _optional_sshd_lines(any_key: Path) -> list[str]:
    """Options newer sshds need for tests (per-source penalties since 9.8)."""
    wanted = [("PerSourcePenalties", "no")]
    return [f"{opt} {val}" for opt, val in wanted if _sshd_accepts(opt, val, str(any_key))]


def _session_env(node: Node, extra: Mapping[str, str], windows_env: Mapping[str, str]) -> list[str]:
    env = {**windows_env, **extra} if node.windows else {"XDG_CACHE_HOME": str(node.cache_dir), **extra}
    if not node.python:
        env.update(HOME=str(node.home), PATH=str(node.bin_dir))
    return [f"{key}={value}" for key, value in env.items()]


def _sshd_config_text(node: Node, authorized_keys: Path, env: Mapping[str, str],
                      extra: Sequence[str], optional: Sequence[str],
                      windows_env: Mapping[str, str]) -> str:
    if node.windows:
        extra = [f"ForceCommand {node.dir / 'force-command'}", *extra]
    lines = [
        *extra,
        f"Port {node.port}",
        f"ListenAddress {node.host}",
        f"HostKey {node.host_key}",
        f"PidFile {node.pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin yes",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "LogLevel VERBOSE",
        f"Subsystem sftp {winnode.SFTP_SERVER if node.windows else 'internal-sftp'}",
        "SetEnv " + " ".join(_session_env(node, env, windows_env)),
        *optional,
    ]
    return "\n".join(lines) + "\n"


def _fill_no_python_bin(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in NO_PYTHON_TOOLS:
        target = shutil.which(tool, path=STD_PATH)
        if target and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(target)


def _ensure_privsep_dir() -> None:
    """sshd refuses to start without its privilege-separation directory."""
    privsep = Path("/run/sshd")
    if not privsep.is_dir():
        privsep.mkdir(mode=0o755, parents=True, exist_ok=True)


def _ssh_banner(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} to the inventory")


def _toml_table(header: str, values: Mapping[str, Any]) -> list[str]:
    lines = [header]
    for key, value in values.items():
        bare = re.fullmatch(r"[A-Za-z0-9_-]+", key)
        lines.append(f"{key if bare else json.dumps(key)} = {_toml_value(value)}")
    return lines


# -------------------------------------------------------------- the cluster


def _check_options(tmpdir: Path, n: int, no_python: Sequence[str], windows: Mapping[str, WindowsSpec],
                   session_env: Mapping[str, str], extra_sshd_config: Sequence[str]) -> None:
    """Reject what would make a broken sshd_config, before touching anything."""
    if not 1 <= n <= MAX_INDEX:
        raise ValueError(f"n must be between 1 and {MAX_INDEX}, not {n}")
    if _UNQUOTABLE.search(str(tmpdir)):
        raise ValueError(f"tmpdir must not contain blanks or quotes: {tmpdir}")
    names = {f"node{i}" for i in range(1, n + 1)}
    unknown = (set(no_python) | set(windows)) - names
    if unknown:
        raise ValueError(f"no_python or windows names unknown nodes: {sorted(unknown)}")
    if set(no_python) & set(windows):
        raise ValueError("a Windows node always has its Pythons; leave it out of no_python")
    if any(line.split()[:1] == ["setenv"] for line in map(str.lower, extra_sshd_config)):
        raise ValueError("pass session variables as session_env, not as a SetEnv line")
    for key, value in session_env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or _UNQUOTABLE.search(value):
            raise ValueError(f"session_env {key}={value!r}: bad name, or blanks or quotes")


class NetCluster:
    """``n`` sshd nodes in network namespaces; use as a context manager.

    ``no_python`` names nodes (``"node2"``) whose sessions find no python.
    ``windows`` maps node names to a `WindowsSpec`: those are emulated Windows
    PCs (check ``winnode.skip_reason()`` first).
    ``session_env`` adds variables to every node's sessions. sshd honours
    only its first ``SetEnv`` line, so that is the only way to add some.
    ``extra_sshd_config`` lines go first in every sshd_config; sshd keeps the
    first value of an option, so they override the defaults.
    """

    def __init__(self, tmpdir: Union[str, Path], n: int = 3, no_python: Sequence[str] = (), *,
                 windows: Optional[Mapping[str, WindowsSpec]] = None,
                 session_env: Optional[Mapping[str, str]] = None,
                 extra_sshd_config: Sequence[str] = (), start_timeout: float = 10.0,
                 verify: bool = True) -> None:
        self.tmpdir = Path(tmpdir).resolve()
        self.windows = dict(windows or {})
        _check_options(self.tmpdir, n, no_python, self.windows, session_env or {}, extra_sshd_config)
        self.n = n
        self.session_env = dict(session_env or {})
        self.no_python = frozenset(no_python)
        self.extra_sshd_config = tuple(extra_sshd_config)
        self.start_timeout = start_timeout
        self.verify = verify
        self.nodes: list[Node] = []
        self._created: list[Node] = []
        self._closed = False

    # ---- paths

    @property
    def client_key(self) -> Path:
        return self.tmpdir / "client_key"

    @property
    def client_key_pub(self) -> Path:
        return self.tmpdir / "client_key.pub"

    @property
    def authorized_keys(self) -> Path:
        return self.tmpdir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.tmpdir / "known_hosts"

    def node(self, ref: NodeRef) -> Node:
        """The node called ``ref`` (or ``ref`` itself when it is a Node)."""
        if isinstance(ref, Node):
            return ref
        for node in self.nodes:
            if node.name == ref:
                return node
        raise KeyError(f"no node {ref!r} in this cluster")

    # ---- lifecycle

    def __enter__(self) -> NetCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> NetCluster:
        """Build everything and wait until every sshd answers."""
        try:
            cleanup_stale()
            _ensure_privsep_dir()
            self.tmpdir.mkdir(parents=True, exist_ok=True)
            _keygen(self.client_key, "netcluster-client")
            self.authorized_keys.write_text(self.client_key_pub.read_text())
            self._create_nodes()
            self._configure_nodes()
            self.write_known_hosts()
            for node in self.nodes:
                self._start_sshd(node)
            for node in self.nodes:
                self._wait_ready(node)
            if self.verify:
                self._verify_sessions()
        except BaseException:
            with contextlib.suppress(NetClusterError):
                self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every sshd, empty and delete every namespace. Idempotent."""
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        for node in self._created:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self._created:
            self._stop_sshd(node)
        for node in self._created:
            problems += _delete_namespace(node.ns, node.host_veth)
        if problems:
            raise NetClusterError("teardown incomplete: " + "; ".join(problems))

    def _create_nodes(self) -> None:
        pid = os.getpid()
        with _allocation_lock():
            used = _used_indexes()
            free = [k for k in range(1, MAX_INDEX + 1) if k not in used][: self.n]
            if len(free) < self.n:
                raise NetClusterError(f"only {len(free)} free {SUBNET}.x.0/24 subnets left")
            for i, k in enumerate(free, start=1):
                name = f"node{i}"
                node = Node(name=name, index=k, ns=f"{NS_PREFIX}{pid}x{k}",
                            host=f"{SUBNET}.{k}.2", port=SSH_PORT,
                            host_veth=f"{VETH_PREFIX}{pid}x{k}", node_mac=_node_mac(k),
                            dir=self.tmpdir / name, python=name not in self.no_python,
                            windows=self.windows.get(name))
                self._created.append(node)
                _create_link(node)
                self.nodes.append(node)

    def _configure_nodes(self) -> None:
        optional = _optional_sshd_lines(self.client_key)
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            windows_env = winnode.prepare_node(node.dir, node.windows) if node.windows else {}
            node.cache_dir.mkdir(parents=True, exist_ok=True)
            if not node.python:
                node.home.mkdir(exist_ok=True)
                _fill_no_python_bin(node.bin_dir)
            _keygen(node.host_key, f"{node.name}-host")
            text = _sshd_config_text(node, self.authorized_keys, self.session_env,
                                     self.extra_sshd_config, optional, windows_env)
            node.windows_env = windows_env
            node.sshd_config.write_text(text)

    def write_known_hosts(self) -> Path:
        """(Re)write known_hosts with every node's current host key."""
        lines = [f"{node.host} {_public_key(node.host_key_pub)}" for node in self.nodes]
        self.known_hosts.write_text("\n".join(lines) + "\n")
        return self.known_hosts

    # ---- sshd

    def _start_sshd(self, node: Node) -> None:
        argv = ["ip", "netns", "exec", node.ns, SSHD, "-D",
                "-f", str(node.sshd_config), "-E", str(node.sshd_log)]
        if node.windows:
            argv = self._windows_host_argv(node, argv)
        with open(node.sshd_log, "ab") as early_errors:
            node.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=early_errors,
                                            stderr=early_errors, start_new_session=True)

    @staticmethod
    def _windows_host_argv(node: Node, sshd_argv: list[str]) -> list[str]:
        """Start the node's wineserver, and wrap sshd so that its mount namespace has /C: as drive C:.

        ``ip netns exec`` gives its command a mount namespace of its own, so the bind
        mount stays inside the node; only the empty mount point /C: is made on this machine.
        """
        os.makedirs(winnode.DRIVE_MOUNT, exist_ok=True)
        env = {**os.environ, **node.windows_env}
        subprocess.Popen(["ip", "netns", "exec", node.ns, "wineserver", "--persistent", "--foreground"],
                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        # Wine's own services (services.exe, winedevice.exe, ...) start with the first program and
        # keep its stdio: start them now, or they would hold the first SSH session's pipes open.
        subprocess.run(["ip", "netns", "exec", node.ns, "wine", "cmd.exe", "/c", "exit"], env=env,
                       input=b"", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=True)
        drive_c = str(node.dir / "wine" / "drive_c")
        return [*sshd_argv[:4], "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"',
                "sh", drive_c, winnode.DRIVE_MOUNT, *sshd_argv[4:]]

    def _wait_ready(self, node: Node) -> None:
        process = node.process
        assert process is not None
        ready = _wait_until(
            lambda: process.poll() is not None or _ssh_banner(node.host, node.port),
            self.start_timeout,
        )
        if process.poll() is not None or not ready:
            state = f"exited with {process.returncode}" if process.poll() is not None else (
                f"did not answer within {self.start_timeout} s")
            raise NetClusterError(f"{node.name}: sshd {state}; log:\n{self._log_tail(node)}")

    def _stop_sshd(self, node: Node, timeout: float = 3.0) -> None:
        process, node.process = node.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    @staticmethod
    def _log_tail(node: Node, lines: int = 20) -> str:
        try:
            return "\n".join(node.sshd_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def replace_host_key(self, ref: NodeRef, update_known_hosts: bool = False) -> Path:
        """Give a node a new host key and restart its sshd.

        known_hosts keeps the old key unless ``update_known_hosts``, so a
        client that checks host keys now sees a changed key. Sessions already
        open stay up (they are separate sshd processes). Returns the new
        public key's path.
        """
        node = self.node(ref)
        self._stop_sshd(node)
        _keygen(node.host_key, f"{node.name}-host-replaced")
        self._start_sshd(node)
        self._wait_ready(node)
        if update_known_hosts:
            self.write_known_hosts()
        return node.host_key_pub

    # ---- looking inside a node

    def run_in(self, ref: NodeRef, argv: Sequence[str],
               timeout: float = 10.0) -> CompletedProcess[str]:
        """Run ``argv`` inside the node's namespace (not over ssh); never raises on failure."""
        return _run(["ip", "netns", "exec", self.node(ref).ns, *argv], timeout=timeout, check=False)

    def listening_sockets(self, ref: NodeRef) -> list[str]:
        """``ss -Hltnup`` lines: TCP and UDP listeners in the namespace."""
        out = self.run_in(ref, ["ss", "-Hltnup"]).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def pids_in(self, ref: NodeRef) -> list[int]:
        """Every process in the node's namespace (sshd, sessions, agents)."""
        return _ns_pids(self.node(ref).ns)

    def processes_in(self, ref: NodeRef) -> list[tuple[int, str]]:
        """(pid, command line) of every process in the node's namespace."""
        found = []
        for pid in self.pids_in(ref):
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            found.append((pid, raw.replace(b"\0", b" ").decode(errors="replace").strip()))
        return found

    # ---- network faults

    def link_down(self, ref: NodeRef) -> None:
        """Cut the node's cable: its packets are dropped silently.

        The node-side end of the veth goes down, so the root side loses
        carrier but keeps its route and a permanent neighbour entry: packets
        to the node are dropped without any error, and connects time out like
        for a machine that vanished. (Downing the root-side end instead would
        remove the route, and packets would leave by the default route.)
        """
        node = self.node(ref)
        _run(["ip", "-n", node.ns, "link", "set", NODE_IFNAME, "down"])
        route = _run(["ip", "-4", "route", "get", node.host]).stdout
        if f"dev {node.host_veth}" not in route:
            self.link_up(node)
            raise NetClusterError(
                f"with the link down, {node.host} would be routed elsewhere ({route.strip()}); "
                "is net.ipv4.conf.all.ignore_routes_with_linkdown set to 1?"
            )

    def link_up(self, ref: NodeRef) -> None:
        """Plug the node's cable back in; open TCP connections carry on."""
        node = self.node(ref)
        _run(["ip", "-n", node.ns, "link", "set", NODE_IFNAME, "up"])

    # ---- clients

    def ssh_argv(self, ref: NodeRef, command: str, connect_timeout: float = 5.0) -> list[str]:
        """An OpenSSH client command line that runs ``command`` on the node."""
        node = self.node(ref)
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.client_key), "-p", str(node.port),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={connect_timeout:g}",
            "-o", "LogLevel=ERROR", f"root@{node.host}", command,
        ]

    def ssh(self, ref: NodeRef, command: str, timeout: float = 15.0) -> CompletedProcess[str]:
        """Run ``command`` on the node with the OpenSSH client."""
        return _run(self.ssh_argv(ref, command), timeout=timeout, check=False)

    def _verify_sessions(self, timeout: float = 15.0) -> None:
        """Check over real ssh that each node's session env is as configured."""
        script = (f'echo {_VERIFY_MARK}; printf "%s\\n" "$XDG_CACHE_HOME"; uname -m; '
                  "command -v python3 python || true")
        windows_script = (f"echo {_VERIFY_MARK}& echo %LOCALAPPDATA%& echo %PROCESSOR_ARCHITECTURE%& "
                          'python -c "import sys; print(sys.executable)"')
        procs = {node.name: subprocess.Popen(self.ssh_argv(node, windows_script if node.windows else script),
                                             text=True, encoding="utf-8", errors="replace",
                                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE)
                 for node in self.nodes}
        problems = []
        for name, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                problems.append(f"{name}: ssh did not finish within {timeout} s")
                continue
            problems += self._session_problems(self.node(name), proc.returncode, out, err)
        if problems:
            raise NetClusterError("session check failed: " + "; ".join(problems))

    @staticmethod
    def _session_problems(node: Node, returncode: int, out: str, err: str) -> list[str]:
        lines = out.split(_VERIFY_MARK + "\n", 1)[-1].splitlines()
        if returncode != 0 or len(lines) < 2:
            return [f"{node.name}: ssh exited with {returncode}: {err.strip() or out.strip()}"]
        cache, arch, pythons = lines[0], lines[1], lines[2:]
        problems = []
        if node.windows:  # cmd and Python write to a pipe in the ANSI code page, read here as UTF-8
            expected = [text.encode("cp1252").decode("utf-8", "replace") for text in
                        (node.windows.local_appdata(), node.windows.python_path(node.windows.pythons[0]))]
            if [cache, pythons[0] if pythons else None] != expected:
                problems.append(f"{node.name}: the Windows session has LOCALAPPDATA {cache!r} and python "
                                f"{pythons}, not {expected}")
            return problems
        if cache != str(node.cache_dir):
            problems.append(f"{node.name}: XDG_CACHE_HOME is {cache!r}, not '{node.cache_dir}'")
        if not arch:
            problems.append(f"{node.name}: `uname -m` printed nothing")
        if node.python and not pythons:
            problems.append(f"{node.name}: no python3/python on the session PATH")
        if not node.python and pythons:
            problems.append(f"{node.name}: should have no python but finds {pythons}")
        return problems

    # ---- inventory

    def write_inventory(self, path: Union[str, Path], nodes: Optional[Sequence[NodeRef]] = None,
                        overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
                        **extra_defaults: Any) -> Path:
        """Write an inventory.toml for (some of) the nodes; returns its path.

        ``extra_defaults`` are added to (or replace keys of) ``[defaults]``;
        ``overrides`` maps a node name to keys added to (or replacing keys of)
        its ``[[node]]`` table, e.g. ``{"node2": {"workers": 1}}``.
        """
        defaults: dict[str, Any] = {"user": "root", "key": str(self.client_key),
                                    "known_hosts": str(self.known_hosts), "connect_timeout": 5}
        defaults.update(extra_defaults)
        lines = _toml_table("[defaults]", defaults)
        chosen = [self.node(ref) for ref in (self.nodes if nodes is None else nodes)]
        for node in chosen:
            table: dict[str, Any] = {"name": node.name, "host": node.host, "port": node.port,
                                     "workers": 2}
            table.update((overrides or {}).get(node.name, {}))
            lines += [""] + _toml_table("[[node]]", table)
        target = Path(path)
        target.write_text("\n".join(lines) + "\n")
        return target


@contextlib.contextmanager
def net_cluster(tmpdir: Union[str, Path], n: int = 3, no_python: Sequence[str] = (),
                **options: Any) -> Iterator[NetCluster]:
    """A started NetCluster that is torn down when the block ends."""
    with NetCluster(tmpdir, n, no_python, **options) as cluster:
        yield cluster
