"""SSH to one node with paramiko: connect, check the host key, run, upload.

`NodeConnection` wraps one `SSHClient`. Settings come from the inventory, then
from ~/.ssh/config (HostName, User, Port, IdentityFile) as ssh(1) would; the
inventory wins where both are given. Host keys are checked against the
inventory's known_hosts file (else ~/.ssh/known_hosts): an unknown key is
refused with its fingerprint and the `console trust` command, a changed key is
always refused. paramiko and socket errors become one sentence (`NodeError`)
at this boundary. `ChannelStream` carries RPyC over an exec channel.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import nodeagent.rpyc_without_ssl  # noqa: F401  (before rpyc, see there)
from rpyc.core.stream import Stream
from rpyc.lib import Timeout

from console.errors import HostKeyError, NodeBusy, NodeError
from console.inventory import Node


def _import_paramiko_without_invoke() -> None:
    """paramiko.config imports invoke (about two thirds of paramiko's import time, on the way to a node's first
    result) only to run an ssh_config's `Match exec` lines: it is kept out here and brought in by
    `resolve_target` for a config that has one."""
    blocked = "invoke" not in sys.modules
    if blocked:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` raises ImportError
    try:
        import paramiko  # noqa: F401
    finally:
        if blocked:
            del sys.modules["invoke"]


_import_paramiko_without_invoke()
import paramiko  # noqa: E402
from paramiko.buffered_pipe import PipeTimeout  # noqa: E402

__all__ = ["SSHTarget", "resolve_target", "NodeConnection", "ChannelStream", "fingerprint", "fetch_host_key",
           "pinned_key", "pin_host_key", "known_hosts_path"]

KEEPALIVE_S = 5
_MATCH_EXEC = re.compile(r"^\s*match\b.*\bexec\b", re.IGNORECASE | re.MULTILINE)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a key: "SHA256:..."."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_path(node: Node) -> Path:
    """The known_hosts file this node's key is checked against and pinned in."""
    return Path(node.known_hosts) if node.known_hosts else Path.home() / ".ssh" / "known_hosts"


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to connect, after ~/.ssh/config is applied."""

    hostname: str
    port: int
    user: str
    key_files: Tuple[str, ...]

    @property
    def host_key_name(self) -> str:
        """The host's name in known_hosts: "host", or "[host]:port" off port 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def resolve_target(node: Node, ssh_config: Optional[Path] = None) -> SSHTarget:
    """Apply ~/.ssh/config to the node's host; the inventory's fields win."""
    config_path = ssh_config or Path.home() / ".ssh" / "config"
    entry: dict = {}
    if config_path.exists():
        kept_out = getattr(paramiko.config, "invoke", ()) is None
        if kept_out and _MATCH_EXEC.search(config_path.read_text(errors="replace")):
            import invoke

            paramiko.config.invoke = invoke
        entry = paramiko.SSHConfig.from_path(str(config_path)).lookup(node.host or "")
    hostname = entry.get("hostname", node.host or "")
    port = node.port or int(entry.get("port", 22))
    user = node.user or entry.get("user") or _local_user()
    keys: List[str] = [node.key] if node.key else [os.path.expanduser(k) for k in entry.get("identityfile", [])]
    return SSHTarget(hostname, port, user, tuple(k for k in keys if os.path.exists(k)))


def _local_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (ImportError, KeyError, OSError):
        return "root"


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """Refuse a key that known_hosts does not list, saying how to trust it."""

    def __init__(self, node: Node, known_hosts: Path) -> None:
        self.node = node
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"{self.node.name} ({self.node.address}): host key {key.get_name()} {fingerprint(key)} is not in "
            f"{self.known_hosts}; if that is the node's key, run 'console trust {self.node.name}', "
            f"then try again."
        )


class NodeConnection:
    """One SSH connection to one node."""

    def __init__(self, node: Node, ssh_config: Optional[Path] = None) -> None:
        self.node = node
        self.target = resolve_target(node, ssh_config)
        self.client: Optional[paramiko.SSHClient] = None
        self.where = f"{node.name} ({self.target.hostname}:{self.target.port})"

    def connect(self) -> None:
        """Open the connection; raises NodeError/HostKeyError with one sentence."""
        node, target = self.node, self.target
        known_hosts = known_hosts_path(node)
        client = paramiko.SSHClient()
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))
        client.set_missing_host_key_policy(_RefuseUnknownKey(node, known_hosts))
        password = None
        if node.password_env:
            password = os.environ.get(node.password_env)
            if password is None:
                raise NodeError(f"{node.name}: password_env names {node.password_env}, which is not set in "
                                "the console's environment; set it, or use a key.")
        timeout = node.connect_timeout
        try:
            client.connect(
                target.hostname, port=target.port, username=target.user, password=password,
                key_filename=list(target.key_files) or None, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout, channel_timeout=timeout, allow_agent=True,
                look_for_keys=not target.key_files and password is None,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"{self.where}: host key CHANGED: expected {fingerprint(exc.expected_key)}, received "
                f"{fingerprint(exc.key)}. Someone may be intercepting the connection, or the node was "
                f"reinstalled; if you know why, run 'ssh-keygen -R {target.host_key_name} -f {known_hosts}', "
                f"then 'console trust {node.name}'."
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            how = f"key {target.key_files[0]}" if target.key_files else (
                "the password" if password is not None else "ssh-agent and ~/.ssh keys")
            raise NodeError(f"{self.where}: user {target.user!r} was refused with {how}; check the key "
                            f"or add its public key to ~/.ssh/authorized_keys on the node.") from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise NodeError(f"{self.where}: no answer within {timeout:g} s; check that the node is on "
                            "and reachable.") from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            raise NodeError(f"{self.where}: connection refused ({_first_error(exc)}); is sshd running "
                            "on that port?") from None
        except socket.gaierror as exc:
            client.close()
            raise NodeError(f"{self.where}: cannot resolve {target.hostname!r} ({exc.strerror}).") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise NodeError(f"{self.where}: SSH failed: {exc or type(exc).__name__}.") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_S)
        self.client = client

    def run(self, command: str, timeout: Optional[float] = None) -> Tuple[int, str, str]:
        """Run a short command; (exit status, stdout, stderr)."""
        channel = self._channel()
        channel.settimeout(timeout or max(self.node.connect_timeout, 10))
        try:
            channel.exec_command(command)
            channel.shutdown_write()
            out = channel.makefile("rb").read().decode("utf-8", "replace")
            err = channel.makefile_stderr("rb").read().decode("utf-8", "replace")
            return channel.recv_exit_status(), out, err
        except socket.timeout:
            raise NodeBusy(f"{self.where}: {command.split()[0]!r} did not finish in time.") from None
        finally:
            channel.close()

    def start(self, command: str) -> paramiko.Channel:
        """Start a long-running command; its channel carries stdin/stdout/stderr."""
        channel = self._channel()
        channel.exec_command(command)
        return channel

    def sftp(self) -> paramiko.SFTPClient:
        """An SFTP session on this connection."""
        assert self.client is not None
        try:
            return self.client.open_sftp()
        except (paramiko.SSHException, OSError) as exc:
            raise NodeError(f"{self.where}: SFTP is not available ({exc}); enable the sftp subsystem "
                            "in sshd_config.") from None

    def close(self) -> None:
        """Close the connection (every channel with it)."""
        if self.client is not None:
            self.client.close()
            self.client = None

    def _channel(self) -> paramiko.Channel:
        transport = self.client.get_transport() if self.client else None
        if transport is None or not transport.is_active():
            raise NodeError(f"{self.where}: the SSH connection is closed.")
        try:
            return transport.open_session(timeout=self.node.connect_timeout)
        except (paramiko.SSHException, OSError) as exc:
            raise NodeError(f"{self.where}: cannot open an SSH session ({exc}).") from None


def _first_error(exc: paramiko.ssh_exception.NoValidConnectionsError) -> str:
    for error in exc.errors.values():
        return error.strerror or str(error)
    return str(exc)


def fetch_host_key(node: Node, ssh_config: Optional[Path] = None) -> Tuple[SSHTarget, paramiko.PKey]:
    """The key the node's SSH server presents (nothing is authenticated or trusted)."""
    target = resolve_target(node, ssh_config)
    where = f"{node.name} ({target.hostname}:{target.port})"
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=node.connect_timeout)
    except OSError as exc:
        raise NodeError(f"{where}: cannot connect ({exc.strerror or exc}).") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=node.connect_timeout)
        return target, transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise NodeError(f"{where}: SSH handshake failed ({exc}).") from None
    finally:
        transport.close()


def pinned_key(known_hosts: Path, target: SSHTarget, key_type: str) -> Optional[paramiko.PKey]:
    """The key of this type known_hosts pins for the target, if any."""
    if not known_hosts.exists():
        return None
    return (paramiko.HostKeys(str(known_hosts)).lookup(target.host_key_name) or {}).get(key_type)


def pin_host_key(known_hosts: Path, target: SSHTarget, key: paramiko.PKey) -> None:
    """Append the key to known_hosts, as ssh(1) would on "yes"."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with open(known_hosts, "a", encoding="utf-8") as f:
        f.write(f"{target.host_key_name} {key.get_name()} {key.get_base64()}\n")


class ChannelStream(Stream):
    """An RPyC stream over a paramiko exec channel (the agent's stdin/stdout)."""

    __slots__ = ("channel", "_closed")
    MAX_IO_CHUNK = 65000

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed or self.channel.closed

    def close(self) -> None:
        """Close the agent's stdin (it exits on EOF); the channel stays open for its exit status."""
        self._closed = True
        try:
            self.channel.shutdown_write()
        except (OSError, EOFError):
            pass

    def poll(self, timeout: Union[float, None, Timeout]) -> bool:
        """Wait on the channel's receive buffer itself, never select on `channel.fileno()`: that pairs the
        stdout and stderr buffers' events through one pipe whose clear is not thread-safe, and with the agent's
        log read on another thread a reader could block for ever once the agent has gone. A read of no bytes
        from that buffer returns once it holds data or has ended, and takes nothing from it."""
        try:
            self.channel.in_buffer.read(0, Timeout(timeout).timeleft())
        except PipeTimeout:
            pass
        return self.channel.recv_ready() or self.channel.eof_received or self.channel.closed

    def read(self, count: int) -> bytes:
        parts = []
        while count > 0:
            try:
                data = self.channel.recv(count)
            except socket.timeout:
                continue
            except (OSError, EOFError) as exc:
                raise EOFError(f"SSH channel broke: {exc}") from None
            if not data:
                raise EOFError("the agent's SSH session ended")
            parts.append(data)
            count -= len(data)
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except (OSError, EOFError) as exc:
            raise EOFError(f"SSH channel broke: {exc}") from None
