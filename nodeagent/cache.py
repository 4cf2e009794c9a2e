"""This user's cache directory on a node, the content hash that names what is kept there, and its pruning.

The console uses the first two too (console/bundle.py), so a bundle and a job's
files are named and stored the same way on every machine, the console's own
included. What the cache holds is named by content, so every edit of a job,
every console version and every package version adds to it: each agent marks
what it uses (the mtime of the entry) and, once started, removes what no agent
has used for KEEP_UNUSED_S, and more, least recently used first, while the
disk has less than LOW_DISK_BYTES free; the console does the same with what it
keeps. Either looks at most once every PRUNE_EVERY_S while the disk has room.
"""

import os
import shutil
import time
from typing import Dict, Iterable, List, Tuple

try:  # CPython's own SHA-256: hashlib loads OpenSSL's libcrypto first, ~6 ms of every start for a few small hashes
    from _sha2 import sha256  # 3.12 on
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[no-redef]  # 3.9 to 3.11
    except ImportError:  # another Python, or a CPython built without them
        from hashlib import sha256  # type: ignore[assignment]

__all__ = ["cache_dir", "content_hash", "sha256", "mark_used", "prune", "KEEP_UNUSED_S", "MARK_USED_EVERY_S",
           "LOW_DISK_BYTES"]

KEEP_UNUSED_S = 30 * 86400
"""What the cache holds and nothing has used for this long is removed (30 days)."""
MARK_USED_EVERY_S = 3600.0
"""How often a running agent marks its bundle and its job's files and wheels used."""
LOW_DISK_BYTES = 1 << 30
"""While the cache's disk has less free than this (1 GiB), pruning also removes entries used since KEEP_UNUSED_S,
least recently used first, but none marked in the last two MARK_USED_EVERY_S (an agent running now uses it)."""
PRUNE_EVERY_S = 86400.0
"""A pass over the cache runs at most this often (a stat of every entry, ~8 ms for a few hundred, at the start of
an agent or a console, its busiest moment), and at every start while the disk has less than LOW_DISK_BYTES free."""
PRUNED_DIRS = ("jobs", "wheels")
"""The cache's folders of entries named by content that agents keep (the console keeps others: console/cluster.py)."""


def cache_dir() -> str:
    """%LOCALAPPDATA%\\cluster-console on Windows, ${XDG_CACHE_HOME:-~/.cache}/cluster-console elsewhere."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "cluster-console")


def content_hash(files: Dict[str, bytes]) -> str:
    """16 hex digits naming a set of {relative path: content}, whatever their order."""
    digest = sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + sha256(files[name]).digest())
    return digest.hexdigest()[:16]


def mark_used(paths: Iterable[str]) -> None:
    """Note that these cache entries are in use, so that pruning keeps them (best effort)."""
    for path in paths:
        try:
            os.utime(path, None)
        except OSError:
            pass


def prune(folders: Iterable[str] = PRUNED_DIRS, zip_prefixes: Tuple[str, ...] = ("agent-",),
          stamp: str = "agents.pruned") -> List[str]:
    """Remove the entries of these folders of the cache, and its zips named with these prefixes, that nothing
    has marked used for KEEP_UNUSED_S (by default what agents keep: job files, wheels, bundles), then, while
    the disk has less than LOW_DISK_BYTES free, those not in use, least recently used first; the paths removed.
    An entry is first renamed out of the way, so no agent ever finds one half removed; one that cannot be (held
    open, on Windows) stays for the next time. Nothing is done when the file `stamp` says a pass ran in the last
    PRUNE_EVERY_S and the disk has room."""
    root = cache_dir()
    if not _due(os.path.join(root, stamp)):
        return []
    now = time.time()
    entries = [os.path.join(root, sub, name) for sub in folders for name in _names(os.path.join(root, sub))]
    entries += [os.path.join(root, name) for name in _names(root) if name.startswith(zip_prefixes) and
                name.endswith(".zip")]
    removed = []
    kept = []
    for path in entries:
        try:
            used = os.stat(path).st_mtime
        except OSError:
            continue
        if used >= now - KEEP_UNUSED_S:
            kept.append((used, path))
        elif _remove(path):
            removed.append(path)
    for used, path in sorted(kept):
        if used >= now - 2 * MARK_USED_EVERY_S or _free_bytes(root) >= LOW_DISK_BYTES:
            break
        if _remove(path):
            removed.append(path)
    return removed


def _due(stamp: str) -> bool:
    """Whether a pass is due (see `prune`); if so, `stamp` is touched for the next one to see."""
    try:
        recent = time.time() - os.stat(stamp).st_mtime < PRUNE_EVERY_S
    except OSError:  # no pass yet
        recent = False
    if recent and _free_bytes(os.path.dirname(stamp)) >= LOW_DISK_BYTES:
        return False
    try:
        with open(stamp, "a"):
            pass
        os.utime(stamp, None)
    except OSError:  # no cache yet, or one this user cannot write: nothing to remove either way
        pass
    return True


def _remove(path: str) -> bool:
    """Rename `path` out of the way, then remove it; False if it could not be renamed."""
    gone = "%s.gone.%d" % (path, os.getpid())
    try:
        os.rename(path, gone)
    except OSError:
        return False
    if os.path.isdir(gone):
        shutil.rmtree(gone, ignore_errors=True)
    else:
        try:
            os.remove(gone)
        except OSError:
            pass
    return True


def _free_bytes(path: str) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:  # not there (nothing kept yet): nothing to make room for
        return LOW_DISK_BYTES


def _names(folder: str) -> List[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
