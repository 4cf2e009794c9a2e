"""An emulated aarch64 node for the package tests: Debian's arm64 CPython under qemu-user.

The root is built once into ``~/.cache/cluster-console-tests/aarch64/root``:
debootstrap's first stage downloads Debian bookworm's arm64 base and the
Python 3.11 packages, and ``dpkg-deb -x`` unpacks them (nothing runs under
emulation to build it). The kernel runs its binaries with qemu-aarch64-static
through binfmt_misc (registered with the F flag by .ci/install-test-tools, so
namespaces see it too); ``QEMU_LD_PREFIX`` points qemu at the root for the
dynamic loader and libraries. A namespace node of `netcluster` whose sessions
carry that variable (``session_env``) and whose inventory names `python_path()`
is then a Raspberry Pi 4-like host: ``platform.machine()`` is aarch64, glibc
2.36, and pip resolves manylinux aarch64 wheels for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cluster-console-tests" / "aarch64"
ROOT = CACHE / "root"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
PACKAGES = "python3.11-minimal,libpython3.11-stdlib,libssl3"
MIRROR = "http://deb.debian.org/debian"

__all__ = ["ROOT", "skip_reason", "python_path", "session_env"]


def python_path() -> Path:
    """The node's Python (an arm64 executable, run by qemu through binfmt_misc)."""
    return ROOT / "usr" / "bin" / "python3.11"


def session_env() -> dict:
    """What an SSH session on the node needs in its environment."""
    return {"QEMU_LD_PREFIX": str(ROOT)}


def skip_reason() -> Optional[str]:
    """Why an emulated aarch64 node cannot run here, as a sentence; None when it can (building it if need be)."""
    if not BINFMT.exists() or "enabled" not in BINFMT.read_text():
        return ("binfmt_misc does not run aarch64 binaries with qemu here (.ci/install-test-tools installs "
                "qemu-user-static and registers it, where the kernel lets it).")
    if not python_path().exists():
        try:
            _build()
        except (OSError, subprocess.SubprocessError) as exc:
            return f"cannot build the aarch64 root in {ROOT}: {exc}"
    probe = subprocess.run([str(python_path()), "-c", "import platform, ssl; print(platform.machine())"],
                           env={**os.environ, **session_env()}, capture_output=True, text=True, timeout=120)
    if probe.stdout.strip() != "aarch64":
        return f"the aarch64 Python does not run under qemu: {(probe.stderr or probe.stdout).strip()[-300:]}"
    return None


def _build() -> None:
    """debootstrap's first stage (downloads and unpacks the base), then unpack Python's packages."""
    if shutil.which("debootstrap") is None:
        raise OSError("debootstrap is not installed (.ci/install-test-tools installs it)")
    staging = CACHE / f"root.{os.getpid()}.part"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
                           f"--include={PACKAGES}", "bookworm", str(staging), MIRROR],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise OSError(f"debootstrap failed: {(done.stderr or done.stdout).strip()[-300:]}")
    archives = staging / "var" / "cache" / "apt" / "archives"
    for deb in sorted(archives.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=300)
        deb.unlink()
    shutil.rmtree(ROOT, ignore_errors=True)
    os.rename(staging, ROOT)
