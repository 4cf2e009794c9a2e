"""A job's requirements as wheels for each node's platform, resolved with pip on this machine.

A node reports its wheel tags in its hello (nodeagent/wheels.py: "cp39",
"manylinux_2_36_x86_64"). For each distinct platform, once, `PackageResolver`
runs `pip download --only-binary=:all:` for that platform into this machine's
cache, from the inventory's [packages] (a wheelhouse folder, an index, or
pip's own configuration), so nodes never need an index or the internet. The
result is kept (cache/packages/<key>/resolved.json) and reused by later runs
without asking pip again; remove that folder to resolve anew. A platform with
no wheel for some requirement gets a `PackagesUnavailable` sentence naming the
package and the pip command that fetches one; its nodes sit the job out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple, Union

from console.inventory import PackageSource
from nodeagent.cache import cache_dir, mark_used
from nodeagent.wheels import file_sha256

__all__ = ["NodePlatform", "Wheel", "PackagesUnavailable", "PackageResolver", "node_platform", "pip_platforms"]

PIP_TIMEOUT_S = 900.0
"""How long one pip download may take (a large wheel on a slow index)."""


class NodePlatform(NamedTuple):
    """What decides which wheels fit a node: its Python's version and ABI, and its platform tag."""

    python: str
    """"3.9"."""
    abi: str
    """"cp39"."""
    platform: str
    """"manylinux_2_36_x86_64", "win_amd64"; "" when no binary wheel can fit."""

    def describe(self) -> str:
        return f"Python {self.python} ({self.abi}) on {self.platform or 'a platform without binary wheels'}"


class Wheel(NamedTuple):
    """One resolved wheel file in this machine's cache."""

    file: Path
    digest: str
    """SHA-256 of the file, in hex: its name on every node."""

    @property
    def project(self) -> str:
        """"numpy 2.0.2", from the file name."""
        name, version = self.file.name.split("-")[:2]
        return f"{name} {version}"


class PackagesUnavailable(Exception):
    """No set of wheels fits a platform; the message is the sentence (without the node's name)."""


def node_platform(info: Mapping[str, Any]) -> NodePlatform:
    """The platform of a node from its hello."""
    return NodePlatform(".".join(str(info["python"]).split(".")[:2]), info["abi"], info["platform"])


def pip_platforms(platform: str) -> List[str]:
    """The --platform values for pip: a manylinux_2_X tag with every older glibc it runs, and their legacy
    names (pip does not widen a --platform by itself); other tags as they are."""
    found = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if not found:
        return [platform] if platform else []
    major, minor, arch = int(found.group(1)), int(found.group(2)), found.group(3)
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)] if major == 2 else [platform]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for glibc_minor, name in legacy.items():
        if major == 2 and minor >= glibc_minor and (glibc_minor == 17 or arch in ("x86_64", "i686")):
            tags.append(f"{name}_{arch}")
    return tags


class PackageResolver:
    """Wheels for one job's requirements, per node platform; thread-safe, pip runs once per platform."""

    def __init__(self, requires: Sequence[str], source: PackageSource, cache: Union[Path, None] = None) -> None:
        self.requires = tuple(requires)
        self.source = source
        self.cache = cache or Path(cache_dir()) / "packages"
        self._lock = threading.Lock()
        self._platform_locks: Dict[NodePlatform, threading.Lock] = {}
        self._resolved: Dict[NodePlatform, Union[Tuple[Wheel, ...], PackagesUnavailable]] = {}

    def wheels_for(self, platform: NodePlatform) -> Tuple[Wheel, ...]:
        """The wheels that satisfy the requirements on `platform`; PackagesUnavailable when none do."""
        with self._lock:
            platform_lock = self._platform_locks.setdefault(platform, threading.Lock())
        with platform_lock:
            if platform not in self._resolved:
                try:
                    self._resolved[platform] = self._resolve(platform)
                except PackagesUnavailable as exc:
                    self._resolved[platform] = exc
            found = self._resolved[platform]
        if isinstance(found, PackagesUnavailable):
            raise found
        return found

    def _resolve(self, platform: NodePlatform) -> Tuple[Wheel, ...]:
        if not platform.platform:
            raise PackagesUnavailable(f"its {platform.describe()} takes no binary wheels (not CPython, or a C "
                                      "library other than glibc), so the job's requirements cannot be shipped "
                                      "to it; install them there by hand to use it")
        key = json.dumps([self.requires, platform, self.source], sort_keys=True)
        target = self.cache / hashlib.sha256(key.encode()).hexdigest()[:16]
        manifest = target / "resolved.json"
        if manifest.exists():
            wheels = tuple(Wheel(target / w["file"], w["digest"]) for w in json.loads(manifest.read_text())["wheels"])
            if all(w.file.exists() for w in wheels):
                mark_used((str(target),))
                return wheels
        staging = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.part")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            self._download(platform, staging)
            wheels = [Wheel(target / p.name, file_sha256(str(p))) for p in sorted(staging.glob("*.whl"))]
            (staging / "resolved.json").write_text(json.dumps(
                {"requires": self.requires, "platform": platform._asdict(),
                 "wheels": [{"file": w.file.name, "digest": w.digest} for w in wheels]}, indent=1))
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        except OSError as exc:
            raise PackagesUnavailable(f"the wheels for its {platform.describe()} cannot be kept in {self.cache} "
                                      f"({exc.strerror or exc}); free some space or fix its permissions") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return tuple(wheels)

    def _download(self, platform: NodePlatform, dest: Path) -> None:
        argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--disable-pip-version-check",
                "--progress-bar", "off", "--dest", str(dest), "--python-version", platform.python,
                "--implementation", "cp", "--abi", platform.abi]
        for tag in pip_platforms(platform.platform):
            argv += ["--platform", tag]
        if self.source.wheelhouse and not self.source.index_url:
            argv += ["--isolated", "--no-index", "--find-links", self.source.wheelhouse]
        else:
            if self.source.index_url:
                argv += ["--index-url", self.source.index_url]
            if self.source.wheelhouse:
                argv += ["--find-links", self.source.wheelhouse]
        try:
            done = subprocess.run(argv + list(self.requires), capture_output=True, text=True,
                                  timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PackagesUnavailable(f"pip took over {PIP_TIMEOUT_S:.0f} s to fetch the wheels for its "
                                      f"{platform.describe()}; check the index, or use a wheelhouse") from None
        if done.returncode == 0:
            return
        errors = [line[len("ERROR: "):] for line in done.stderr.splitlines() if line.startswith("ERROR: ")]
        if "No module named pip" in done.stderr:
            raise PackagesUnavailable(f"the console's Python ({sys.executable}) has no pip, which resolves the "
                                      "job's requirements; install it (python -m ensurepip)")
        lacking = [m.group(1) for e in errors for m in [re.match(r"No matching distribution found for (.+)", e)] if m]
        if lacking:
            fetch = (f"pip download --only-binary=:all: --python-version {platform.python} --implementation cp "
                     f"--abi {platform.abi} --platform {platform.platform} --dest "
                     f"{self.source.wheelhouse or 'WHEELHOUSE'} '{lacking[0]}'")
            where = "its wheelhouse" if self.source.wheelhouse else "the index"
            raise PackagesUnavailable(
                f"no wheel of {lacking[0]} for its {platform.describe()} in {where}; it sits this job out. To run "
                f"the job there, fetch one where a wheel exists ({fetch}) and name that folder as [packages] "
                "wheelhouse in the inventory, or change the requirement")
        raise PackagesUnavailable(f"pip could not fetch the wheels for its {platform.describe()}: "
                                  f"{(errors or done.stderr.strip().splitlines() or ['no reason given'])[-1]}")

