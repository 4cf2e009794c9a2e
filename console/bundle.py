"""The agent bundle: one zip that any Python 3.9+ runs as `python agent-<hash>.zip`.

It holds nodeagent, the project's `jobs` package and the pure-Python rpyc and
cloudpickle (the Python API's functions by value) of the console's own
environment, plus a `__main__.py`; it is named by the hash
of its content. SSH nodes get it by SFTP (console/bootstrap.py); the local
node runs it from this machine's cache, so both run the same code.
"""

from __future__ import annotations

import io
import os
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, Tuple

import cloudpickle
import rpyc

import nodeagent
from nodeagent.cache import cache_dir, content_hash

__all__ = ["CODE_ROOT", "bundle", "local_bundle"]

CODE_ROOT = Path(nodeagent.__file__).resolve().parent.parent
"""The directory holding the nodeagent and jobs packages."""


@lru_cache(maxsize=1)
def bundle() -> Tuple[str, bytes]:
    """(content hash, zip bytes) of the agent bundle built from this console's own code."""
    sources = [(CODE_ROOT, "nodeagent"), (CODE_ROOT, "jobs")]
    sources += [(Path(module.__file__).resolve().parent.parent, module.__name__) for module in (rpyc, cloudpickle)]
    files: Dict[str, bytes] = {}
    for base, package in sources:
        for path in sorted((base / package).rglob("*.py")):
            files[path.relative_to(base).as_posix()] = path.read_bytes()
    files["__main__.py"] = (b"import sys\nfrom nodeagent.__main__ import main\n"
                            b"if __name__ == '__main__':\n    sys.exit(main())\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), files[name])
    return content_hash(files), buffer.getvalue()


def local_bundle(write: bool = True) -> Tuple[Path, str]:
    """The bundle's path in this machine's cache, and "cached", "written" or (write=False) "missing"."""
    digest, data = bundle()
    base = Path(cache_dir())
    path = base / f"agent-{digest}.zip"
    if path.exists() and path.stat().st_size == len(data):
        return path, "cached"
    if not write:
        return path, "missing"
    base.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)
    return path, "written"
