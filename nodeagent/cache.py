"""This user's cache directory on a node, and the content hash that names what is kept there.

The console uses both too (console/bundle.py), so a bundle and a job's files are
named and stored the same way on every machine, the console's own included.
"""

import hashlib
import os
from typing import Dict

__all__ = ["cache_dir", "content_hash"]


def cache_dir() -> str:
    """%LOCALAPPDATA%\\cluster-console on Windows, ${XDG_CACHE_HOME:-~/.cache}/cluster-console elsewhere."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "cluster-console")


def content_hash(files: Dict[str, bytes]) -> str:
    """16 hex digits naming a set of {relative path: content}, whatever their order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:16]
