"""A job's packages on a node: this node's wheel tags, and wheels stored once by content hash.

The console resolves a job's requirements for the tags a node reports
(`wheel_tags`: its CPython ABI and the platform tag pip downloads for), asks
which wheels the node lacks (`missing`), and sends those in parts
(`store_part`). The last part checks the whole file's SHA-256 and unpacks the
wheel into <cache>/wheels/<sha256>/, which a job's workers put on sys.path
ahead of the node's own packages. Each wheel has its own directory, so two
jobs needing two versions of a package never share one. Standard library only.
"""

import os
import re
import shutil
import struct
import sys
from typing import Iterable, List, Tuple

from nodeagent.cache import cache_dir

__all__ = ["wheel_tags", "wheel_dir", "missing", "store_part", "file_sha256", "DIGEST"]

DIGEST = re.compile(r"^[0-9a-f]{64}$")
"""A wheel's name on the node: the SHA-256 of its file, in hex."""


def wheel_tags() -> Tuple[str, str]:
    """(ABI, platform) of this Python as wheel tags: ("cp39", "manylinux_2_36_x86_64"), ("cp313",
    "win_amd64"); the platform is "" where no binary wheel can fit (another implementation, an unknown libc)."""
    if sys.implementation.name != "cpython":
        return sys.implementation.name, ""
    abi = "cp%d%d%s" % (sys.version_info[0], sys.version_info[1], "t" if _free_threaded() else "")
    if not sys.platform.startswith("linux"):
        import sysconfig

        name = sysconfig.get_platform()
        return abi, re.sub(r"[-.]", "_", name) if name.startswith(("win", "macosx")) else ""
    machine = os.uname().machine  # what sysconfig.get_platform() says after "linux-"
    if struct.calcsize("P") == 4:  # a 32-bit Python on a 64-bit kernel (Raspberry Pi OS, for one)
        machine = {"aarch64": "armv7l", "x86_64": "i686"}.get(machine, machine)
    libc, libc_version = _libc()
    found = re.match(r"(\d+)\.(\d+)", libc_version or "")
    if libc != "glibc" or not found:
        return abi, ""
    return abi, "manylinux_%s_%s_%s" % (found.group(1), found.group(2), machine)


def _free_threaded() -> bool:
    """Whether this CPython runs without the GIL (3.13's "t" builds). POSIX says so in sys.abiflags; sysconfig's
    variables, which Windows needs, load a module of some 800 names (~2 ms of every agent's hello)."""
    if os.name == "posix":
        return "t" in sys.abiflags
    import sysconfig

    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _libc() -> Tuple[str, str]:
    """`platform.libc_ver()`: glibc's answer to os.confstr, as platform asks first, without importing platform
    (~5 ms of every agent's start, before its hello); platform itself for another libc."""
    try:
        parts = os.confstr("CS_GNU_LIBC_VERSION").split(maxsplit=1)  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):  # no confstr, no such name, or no value
        parts = []
    if len(parts) == 2:
        return parts[0], parts[1]
    import platform

    return platform.libc_ver()


def wheel_dir(digest: str) -> str:
    """Where the wheel named `digest` is unpacked on this node."""
    return os.path.join(cache_dir(), "wheels", digest)


def missing(digests: Iterable[str]) -> List[str]:
    """The wheels of `digests` this node has not unpacked yet."""
    return [d for d in digests if DIGEST.match(d) and not os.path.isdir(wheel_dir(d))]


def store_part(digest: str, offset: int, data: bytes, last: bool) -> None:
    """Write one part of a wheel's file at `offset`; after the last, check the file and unpack it."""
    if not DIGEST.match(digest):
        raise ValueError("not a wheel digest: %r" % digest[:80])
    target = wheel_dir(digest)
    if os.path.isdir(target):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = "%s.%d.whl" % (target, os.getpid())
    with open(partial, "r+b" if offset else "wb") as f:
        f.seek(offset)
        f.write(data)
    if last:
        try:
            _unpack(partial, digest, target)
        finally:
            os.remove(partial)


def file_sha256(path: str) -> str:
    """A file's SHA-256 in hex: a wheel's name, on the console and on every node (OpenSSL's, for files of
    megabytes; hashlib is imported here, not at every agent's start)."""
    import hashlib

    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _unpack(path: str, digest: str, target: str) -> None:
    found = file_sha256(path)
    if found != digest:
        raise ValueError("wheel %s arrived damaged (its SHA-256 is %s)" % (digest, found))
    import zipfile  # only a node that is sent a wheel needs it: the agent starts without

    staging = "%s.%d.part" % (target, os.getpid())
    with zipfile.ZipFile(path) as wheel:
        wheel.extractall(staging)
    for data_dir in [d for d in os.listdir(staging) if d.endswith(".data")]:
        for scheme in ("purelib", "platlib"):  # what an installer puts beside the package's own files
            source = os.path.join(staging, data_dir, scheme)
            if os.path.isdir(source):
                for entry in os.listdir(source):
                    os.replace(os.path.join(source, entry), os.path.join(staging, entry))
    try:
        os.rename(staging, target)
    except OSError:  # another agent unpacked it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isdir(target):
            raise
