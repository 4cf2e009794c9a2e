"""The agent bundle: one zip that any Python 3.9+ runs as `python agent-<hash>.zip`.

It holds nodeagent, the project's `jobs` package and the pure-Python rpyc and
cloudpickle (the Python API's functions by value) of the console's own
environment, plus a `__main__.py`; it is named by the hash of its sources.
Beside each source sits its bytecode for the console's own Python (an
unchecked-hash .pyc, which zipimport takes as it is): a node on that version
starts its agent and workers without compiling them, any other version reads
the sources. SSH nodes get it by SFTP (console/bootstrap.py); the local node
runs it from this machine's cache, so both run the same code. A bundle is
known by its name: its bytecode may differ byte for byte between consoles.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]
from functools import lru_cache
from pathlib import Path
from typing import Dict, Tuple

import nodeagent
from console.atomicfile import write_atomically
from nodeagent.cache import cache_dir, content_hash

__all__ = ["CODE_ROOT", "bundle", "local_bundle"]

CODE_ROOT = Path(nodeagent.__file__).resolve().parent.parent
"""The directory holding the nodeagent and jobs packages."""


@lru_cache(maxsize=1)
def bundle() -> Tuple[str, bytes]:
    """(content hash, zip bytes) of the agent bundle built from this console's own code; read back from this
    machine's cache when it was built before (compiling it takes a while)."""
    sources = [(CODE_ROOT, "nodeagent"), (CODE_ROOT, "jobs")]
    sources += [(_package_parent(name), name) for name in ("rpyc", "cloudpickle")]
    files: Dict[str, bytes] = {}
    for base, package in sources:
        for path in sorted((base / package).rglob("*.py")):
            files[path.relative_to(base).as_posix()] = path.read_bytes()
    files["__main__.py"] = (b"from nodeagent.__main__ import main\n"
                            b"if __name__ == '__main__':\n    main()\n")
    digest = content_hash(files)
    try:
        return digest, (Path(cache_dir()) / f"agent-{digest}.zip").read_bytes()
    except OSError:
        pass
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), files[name])
            if name != "__main__.py":
                compiled = zipfile.ZipInfo(name[:-3] + ".pyc", (2020, 1, 1, 0, 0, 0))
                archive.writestr(compiled, _bytecode(name, files[name]))
    return digest, buffer.getvalue()


def _package_parent(name: str) -> Path:
    """The directory holding an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the console's environment lacks {name}, which the agent bundle carries; "
                           "reinstall the console (pip install -e .)")
    return Path(spec.origin).resolve().parent.parent


def _bytecode(name: str, source: bytes) -> bytes:
    """An unchecked-hash .pyc of `source` for this Python (zipimport uses it without reading the source)."""
    code = compile(source, name, "exec", dont_inherit=True)
    return bytes(_code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False))


def local_bundle(write: bool = True) -> Tuple[Path, str]:
    """The bundle's path in this machine's cache, and "cached", "written" or (write=False) "missing"."""
    digest, data = bundle()
    base = Path(cache_dir())
    path = base / f"agent-{digest}.zip"
    if path.exists():
        return path, "cached"
    if not write:
        return path, "missing"
    write_atomically(path, data)
    return path, "written"
