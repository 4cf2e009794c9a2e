"""inventory.toml -> validated `Node` records.

Pure parsing and validation: no sockets, no SSH. Every error is one sentence
naming the file, line and key. Relative key and known_hosts paths are taken
from the inventory's own directory. Called by the CLI before anything connects.
"""

# No `from __future__ import annotations` here: typing.NamedTuple compiles every string annotation (~30 us a field).
from pathlib import Path
from typing import Any, Dict, List, Literal, NamedTuple, Optional, Tuple

from console.errors import InventoryError
from console.tomlfile import Located, load

__all__ = ["Node", "Inventory", "PackageSource", "load_inventory", "parse_inventory", "DEFAULT_INVENTORY",
           "default_inventory"]

DEFAULT_INVENTORY = Path(__file__).resolve().parent.parent / "inventory.toml"


def default_inventory() -> Path:
    """./inventory.toml when there is one, else the embedded default (this machine)."""
    here = Path("inventory.toml")
    return here if here.exists() else DEFAULT_INVENTORY
"""The embedded default: this machine as a local node."""

NODE_KEYS = {
    "name": str, "transport": str, "host": str, "port": int, "user": str, "key": str,
    "password_env": str, "os": str, "python": str, "workers": int, "tags": list,
    "known_hosts": str, "connect_timeout": (int, float),
}
DEFAULT_KEYS = set(NODE_KEYS) - {"name", "host"}


class Node(NamedTuple):
    """One machine the console may use."""

    name: str
    """Unique name, used in every message and on the command line."""
    transport: Literal["ssh", "local"] = "ssh"
    """"local": the agent is a child process here; "ssh": reached with paramiko."""
    host: Optional[str] = None
    """Address or ~/.ssh/config alias (ssh only)."""
    port: Optional[int] = None
    """SSH port; None means ssh_config's, else 22."""
    user: Optional[str] = None
    """SSH user; None means ssh_config's, else the local user."""
    key: Optional[str] = None
    """Private key file; None means ssh-agent and ssh_config's IdentityFile."""
    password_env: Optional[str] = None
    """Name of the environment variable holding the password (never the password)."""
    os: Literal["auto", "linux", "windows"] = "auto"
    """The node's OS, or "auto" to probe it."""
    python: Optional[str] = None
    """Python command on the node; None tries python3, python, py -3."""
    workers: Optional[int] = None
    """Pool size; None means the node's core count."""
    tags: Tuple[str, ...] = ()
    """Free-form labels for filtering."""
    known_hosts: Optional[str] = None
    """known_hosts file to check and pin host keys in; None means ~/.ssh/known_hosts."""
    connect_timeout: float = 10.0
    """Seconds to wait for TCP and SSH handshakes."""

    @property
    def address(self) -> Optional[str]:
        """host:port for messages, None for the local node."""
        if self.transport == "local":
            return None
        return f"{self.host}:{self.port or 22}"


class PackageSource(NamedTuple):
    """Where the console's pip finds the wheels of jobs' requirements ([packages] in the inventory)."""

    wheelhouse: Optional[str] = None
    """A folder of .whl files; alone, pip never asks an index (an offline lab)."""
    index_url: Optional[str] = None
    """The index to ask; None means pip's own configuration (pip.conf, PIP_INDEX_URL), unless a wheelhouse
    alone is named."""


class Inventory(NamedTuple):
    """The nodes of one inventory file, in file order."""

    path: Path
    nodes: Tuple[Node, ...]
    engine: Optional[str] = None
    """An existing cluster to run jobs on instead of the nodes ([engine] dask = "tcp://host:8786")."""
    packages: PackageSource = PackageSource()

    def select(self, names: List[str]) -> Tuple[Node, ...]:
        """The named nodes (all when `names` is empty); unknown names are an error."""
        if not names:
            return self.nodes
        known = {n.name: n for n in self.nodes}
        missing = [n for n in names if n not in known]
        if missing:
            raise InventoryError(
                f"{self.path}: no node named {', '.join(repr(m) for m in missing)}; "
                f"the inventory has {', '.join(known)}."
            )
        return tuple(known[n] for n in names)


def load_inventory(path: Path) -> Inventory:
    """Read and validate an inventory file."""
    data, text = load(path, InventoryError)
    return parse_inventory(data, text, path)


def parse_inventory(data: Dict[str, Any], text: str, path: Path) -> Inventory:
    """Validate parsed TOML; `text` is only used to find line numbers for errors."""
    err = Located(path, text, InventoryError)
    for key in data:
        if key not in ("defaults", "node", "engine", "packages"):
            raise err(f"unknown table or key {key!r}; an inventory has [defaults], [[node]], [engine] and "
                      "[packages] tables.", key=key, table=None)
    engine = data.get("engine", {})
    if not isinstance(engine, dict) or set(engine) - {"dask"} or not all(isinstance(v, str) for v in engine.values()):
        raise err("[engine] takes one key, dask = \"tcp://host:8786\" (the scheduler of an existing Dask cluster).",
                  key="engine", table=None)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise err("'defaults' must be a table: [defaults].", key="defaults")
    for key, value in defaults.items():
        if key not in DEFAULT_KEYS:
            raise err(f"unknown key {key!r} in [defaults]; known keys: {', '.join(sorted(DEFAULT_KEYS))}.",
                      "defaults", 0, key)
        _check_type(err, "[defaults]", key, value, "defaults", 0)
    packages = _packages(err, data.get("packages", {}), path.parent)
    tables = data.get("node", [])
    if engine and not tables:
        return Inventory(path, (), engine.get("dask"), packages)
    if not isinstance(tables, list) or not tables:
        raise err("the inventory lists no nodes; add a [[node]] table with at least a name.")
    nodes: List[Node] = []
    for index, table in enumerate(tables):
        nodes.append(_node(err, index, {**defaults, **table}, path.parent))
    names = [n.name for n in nodes]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise err(f"node name {name!r} is used twice; names must be unique.", "node", index, "name")
    return Inventory(path, tuple(nodes), engine.get("dask"), packages)


def _packages(err: Located, table: Any, base: Path) -> PackageSource:
    """[packages] wheelhouse = "wheels" (a folder, from the inventory's directory), index_url = "https://..."."""
    if not isinstance(table, dict):
        raise err("'packages' must be a table: [packages].", key="packages", table=None)
    for key, value in table.items():
        if key not in ("wheelhouse", "index_url"):
            raise err(f"unknown key {key!r} in [packages]; known keys: index_url, wheelhouse.", "packages", 0, key)
        if not isinstance(value, str) or not value:
            raise err(f"[packages] {key} must be a string, not {value!r}.", "packages", 0, key)
    wheelhouse = _path(base, table.get("wheelhouse"))
    if wheelhouse is not None and not Path(wheelhouse).is_dir():
        raise err(f"[packages] wheelhouse: {wheelhouse} is not a folder; create it and put the jobs' wheels "
                  "in it (README: an offline lab).", "packages", 0, "wheelhouse")
    return PackageSource(wheelhouse, table.get("index_url"))


def _check_type(err: Located, where: str, key: str, value: Any, table: str, index: int) -> None:
    expected = NODE_KEYS[key]
    if isinstance(value, bool) or not isinstance(value, expected):
        names = {str: "a string", int: "an integer", list: "a list", (int, float): "a number"}
        raise err(f"{where}: {key!r} must be {names[expected]}, not {value!r}.", table, index, key)


def _node(err: Located, index: int, table: Dict[str, Any], base: Path) -> Node:
    where = f"node {table.get('name', index + 1)!r}" if "name" in table else f"[[node]] number {index + 1}"
    for key, value in table.items():
        if key not in NODE_KEYS:
            raise err(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(NODE_KEYS))}.",
                      "node", index, key)
        _check_type(err, where, key, value, "node", index)
    if "name" not in table or not table["name"].strip():
        raise err(f"{where} has no name; add name = \"...\".", "node", index)
    transport = table.get("transport", "ssh")
    if transport not in ("ssh", "local"):
        raise err(f"{where}: transport must be \"ssh\" or \"local\", not {transport!r}.", "node", index, "transport")
    if transport == "ssh" and not table.get("host"):
        raise err(f"{where}: an ssh node needs host = \"address or ssh_config alias\".", "node", index)
    if transport == "local" and "host" in table:
        raise err(f"{where}: a local node has no host; remove it or use transport = \"ssh\".", "node", index, "host")
    if table.get("os", "auto") not in ("auto", "linux", "windows"):
        raise err(f"{where}: os must be \"auto\", \"linux\" or \"windows\", not {table['os']!r}.", "node", index, "os")
    port = table.get("port")
    if port is not None and not 1 <= port <= 65535:
        raise err(f"{where}: port must be between 1 and 65535, not {port}.", "node", index, "port")
    workers = table.get("workers")
    if workers is not None and workers < 1:
        raise err(f"{where}: workers must be at least 1, not {workers}.", "node", index, "workers")
    timeout = table.get("connect_timeout", 10.0)
    if timeout <= 0:
        raise err(f"{where}: connect_timeout must be more than 0 seconds.", "node", index, "connect_timeout")
    tags = table.get("tags", [])
    if not all(isinstance(t, str) for t in tags):
        raise err(f"{where}: tags must be a list of strings.", "node", index, "tags")
    return Node(
        name=table["name"], transport=transport, host=table.get("host"), port=port,
        user=table.get("user"), key=_path(base, table.get("key")), password_env=table.get("password_env"),
        os=table.get("os", "auto"), python=table.get("python"), workers=workers, tags=tuple(tags),
        known_hosts=_path(base, table.get("known_hosts")), connect_timeout=float(timeout),
    )


def _path(base: Path, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    return str((base / Path(value).expanduser()).resolve())
