"""How the Python API sends a function to the nodes: by reference, with its module's files, or by value.

- A function of an installed module (the standard library, site-packages) or
  of the bundle (nodeagent, jobs) goes by reference: the node imports it.
- A function of the user's own module (a .py file next to the script, a
  package being developed) goes by reference too, and the module's file, or
  its top-level package's directory, is shipped with the job like a job
  file's `files`: content-addressed, once per node; so are the user's modules
  it reaches through its globals, transitively.
- A function of `__main__` (a script, a notebook cell), a lambda or a closure
  goes by value with cloudpickle, with the user modules it refers to shipped
  as files (and theirs). Its code loads only on a node with the same Python minor version.

`pickle_batch` pickles a chunk's calls (cloudpickle, so arguments may hold
lambdas and classes of `__main__`); what cannot be pickled (open files,
sockets, locks) is a TypeError naming the function.
"""

from __future__ import annotations

import site
import sys
import sysconfig
import types
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Tuple

import cloudpickle

from console.bundle import CODE_ROOT
from console.jobcode import collect_files
from nodeagent.cache import content_hash
from nodeagent.calls import CallBatch, FunctionRef

__all__ = ["Shipment", "ship", "pickle_batch"]

MAX_SHIPPED_MODULES = 200
"""The most user modules one function brings along (a guard against walking a whole application)."""


@dataclass(frozen=True)
class Shipment:
    """A function ready for the nodes."""

    function: FunctionRef
    name: str
    """How messages name it: "module.qualname"."""
    files: Dict[str, bytes] = field(default_factory=dict)
    """The user's modules it needs, {relative path: content}; empty when the nodes have them."""
    modules: FrozenSet[str] = frozenset()
    """Modules whose exception classes a failed call may raise again in the console."""

    files_digest: str = ""
    """content_hash of `files` (the name the nodes store them under), taken once when shipped."""


@lru_cache(maxsize=1)
def _installed_roots() -> Tuple[Path, ...]:
    """Where installed modules live: the nodes have their own copies (or the bundle's)."""
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(getattr(site, "getsitepackages", lambda: [])())
    paths.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else "")
    roots = [Path(p).resolve() for p in paths if p]
    roots += [CODE_ROOT / "nodeagent", CODE_ROOT / "jobs"]
    return tuple(roots)


def _is_users(module: types.ModuleType) -> bool:
    """A module of the user's own (a .py file outside the installed and bundled code)."""
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py"):
        return False
    path = Path(file).resolve()
    return not any(path.is_relative_to(root) for root in _installed_roots())


def _module_files(module: types.ModuleType) -> Dict[str, bytes]:
    """The files to ship for a user's module: its .py file, or its top-level package's directory."""
    top = module.__name__.partition(".")[0]
    if top != module.__name__ or hasattr(module, "__path__"):
        top_module = sys.modules.get(top)
        if top_module is None or not getattr(top_module, "__file__", None):
            return {}
        return collect_files([Path(top_module.__file__).resolve().parent])
    return collect_files([Path(module.__file__).resolve()])


def _referenced(scope: Dict[str, Any], names: Any) -> List[types.ModuleType]:
    """Modules that the values of `names` in `scope` are or come from."""
    found = []
    for name in names:
        value = scope.get(name)
        if isinstance(value, types.ModuleType):
            found.append(value)
        else:
            module = sys.modules.get(getattr(value, "__module__", None) or "")
            if module is not None:
                found.append(module)
    return found


def _users_modules(start: List[types.ModuleType]) -> List[types.ModuleType]:
    """The user's modules among `start` and those they reach through their globals, transitively: a module
    next to the script usually imports its siblings."""
    seen: Dict[str, types.ModuleType] = {}
    todo = [m for m in start if _is_users(m)]
    while todo and len(seen) < MAX_SHIPPED_MODULES:
        module = todo.pop()
        if module.__name__ in seen or module.__name__ == "__main__":
            continue
        seen[module.__name__] = module
        todo.extend(m for m in _referenced(vars(module), list(vars(module))) if _is_users(m))
    return list(seen.values())


def _files_of(modules: List[types.ModuleType]) -> Dict[str, bytes]:
    files: Dict[str, bytes] = {}
    for module in modules:
        files.update(_module_files(module))
    return files


def _resolves_to(fn: Callable[..., Any], module: types.ModuleType, qualname: str) -> bool:
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is fn or target == fn


def ship(fn: Callable[..., Any]) -> Shipment:
    """How `fn` reaches the nodes; TypeError when it is not callable or cannot be pickled."""
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    module_name = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", "") or getattr(fn, "__name__", "")
    name = f"{module_name}.{qualname}" if module_name else repr(fn)
    module = sys.modules.get(module_name)
    by_reference = (module is not None and module_name != "__main__" and qualname and "<" not in qualname
                    and _resolves_to(fn, module, qualname))
    if by_reference:
        modules = _users_modules([module])
        return _shipment(FunctionRef(f"{module_name}:{qualname}"), name, _files_of(modules),
                         frozenset({module_name, *(m.__name__ for m in modules)}))
    try:
        pickled = cloudpickle.dumps(fn)
    except Exception as exc:  # whatever the function holds that cannot travel
        raise TypeError(f"{name} cannot be shipped to the nodes: {type(exc).__name__}: {exc}. A function sent by "
                        "value must not hold open files, sockets, locks or other live resources; open them "
                        "inside the function instead.") from None
    code = getattr(fn, "__code__", None)
    modules = _users_modules(_referenced(getattr(fn, "__globals__", {}), code.co_names if code else ()))
    return _shipment(FunctionRef("", pickled, tuple(sys.version_info[:2])), name, _files_of(modules),
                     frozenset({"__main__", module_name, *(m.__name__ for m in modules)}))


def _shipment(function: FunctionRef, name: str, files: Dict[str, bytes], modules: FrozenSet[str]) -> Shipment:
    return Shipment(function, name, files, modules, content_hash(files) if files else "")


def pickle_batch(shipment: Shipment, spread: str, items: List[Any]) -> bytes:
    """One chunk's calls as bytes for the nodes; TypeError naming what cannot be pickled."""
    try:
        return cloudpickle.dumps(tuple(CallBatch(tuple(shipment.function), spread, items)))
    except Exception as exc:  # an argument that cannot travel
        raise TypeError(f"the arguments of {shipment.name} cannot be shipped to the nodes: {type(exc).__name__}: "
                        f"{exc}. Pass plain data (numbers, strings, lists, dicts, dataclasses) and open files or "
                        "connections inside the function.") from None
