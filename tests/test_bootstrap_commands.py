"""The OS differences in bootstrap.py, checked as plain strings (POSIX, cmd.exe, PowerShell),
and ~/.ssh/config resolution, without any socket."""

import io
import json
import os
import subprocess
import sys
import zipfile

import pytest

from console.bootstrap import PROBE_SCRIPT, SHELLS, NodeFacts, _probe_answer, bundle, detect_shell
from nodeagent.cache import cache_dir
from console.inventory import Node
from console.ssh import SSHTarget, resolve_target


@pytest.mark.parametrize("output,shell", [
    ("%OS% :OS linux-gnu\n", "posix"),          # bash: neither %OS% nor $env:OS expands
    ("%OS% :OS\n", "posix"),                    # dash has no $OSTYPE
    ("Windows_NT $env:OS $OSTYPE\r\n", "cmd"),  # cmd.exe expands %OS% only
    ("%OS%\r\nWindows_NT\r\n\r\n", "powershell"),  # PowerShell expands $env:OS only
])
def test_one_probe_tells_the_shells_apart(output, shell):
    assert detect_shell(output).name == shell


def test_posix_commands():
    sh = SHELLS["posix"]
    assert sh.start_command("python3", "/home/pi/.cache/cluster-console/agent-ab.zip") == \
        "exec python3 /home/pi/.cache/cluster-console/agent-ab.zip"
    assert sh.start_command("python3", "/home/my pi/a.zip") == "exec python3 '/home/my pi/a.zip'"
    assert sh.start_command("python3", "/a.zip", 4) == "exec python3 /a.zip --pool 4"
    assert SHELLS["cmd"].start_command("py", "C:\\a.zip", 2) == 'py "C:\\a.zip" --pool 2'
    assert sh.stop_command(4242) == "kill 4242 2>/dev/null; true"
    assert sh.python_probe("python3") == f'python3 -c "{PROBE_SCRIPT}"'
    assert sh.sftp_path("/home/pi/.cache") == "/home/pi/.cache"


def test_cmd_commands():
    """Windows' OpenSSH runs them as cmd.exe /c "<command>": cmd strips that added pair again."""
    cmd = SHELLS["cmd"]
    path = r"C:\Users\Ada Lovelace\AppData\Local\cluster-console\agent-ab.zip"
    python = cmd.quote(r"C:\Program Files\Python312\python.exe")
    assert cmd.start_command(python, path) == f'"C:\\Program Files\\Python312\\python.exe" "{path}"'
    assert cmd.stop_command(77) == "taskkill /PID 77 /T /F >NUL 2>&1 || taskkill /PID 77 /F >NUL 2>&1 & exit /b 0"
    assert cmd.python_probe("py -3") == f'py -3 -c "{PROBE_SCRIPT}"'
    assert cmd.sftp_path(r"C:\Users\Zoë\AppData\Local") == "/C:/Users/Zoë/AppData/Local"


def test_powershell_commands():
    ps = SHELLS["powershell"]
    python = ps.quote(r"C:\Python312\python.exe")
    assert ps.start_command(python, r"C:\Users\o'neil\a.zip") == r"& 'C:\Python312\python.exe' 'C:\Users\o''neil\a.zip'"
    assert ps.stop_command(77) == ("taskkill /PID 77 /T /F 2>$null; if (-not $?) { taskkill /PID 77 /F 2>$null }; "
                                   "exit 0")
    probe = ps.python_probe("python")
    assert probe.startswith("& python -c 'import sys") and probe.endswith("'")
    assert '"' not in probe, "double quotes do not survive PowerShell's argument passing"
    assert probe[len("& python -c '"):-1].replace("''", "'") == PROBE_SCRIPT


def test_probe_script_survives_every_shell():
    """No character that cmd (%), PowerShell ($, `) or sh ($, `, \\) would expand inside double quotes."""
    assert not set(PROBE_SCRIPT) & set('%$`"\\')


def test_probe_script_answers_one_ascii_line_with_the_agents_cache_dir():
    out = subprocess.run([sys.executable, "-c", PROBE_SCRIPT], capture_output=True, text=True, check=True).stdout
    assert out.isascii() and len(out.splitlines()) == 1
    major, minor, version, cores, machine, platform, executable, cache_base = _probe_answer(out)
    assert (major, minor) == sys.version_info[:2] and cores == os.cpu_count() and platform == sys.platform
    assert executable == sys.executable
    assert os.path.join(cache_base, "cluster-console") == cache_dir()


def test_probe_answer_ignores_what_is_not_the_probe():
    assert _probe_answer("'python3' is not recognized as an internal or external command\r\n") is None
    assert _probe_answer("Python was not found; run without arguments to install from the Microsoft Store") is None
    line = json.dumps([3, 12, "3.12.1", 8, "AMD64", "win32", "C:\\Users\\Zo\u00eb\\python.exe", "C:\\x"])
    assert _probe_answer("warning: something\n" + line + "\r\n")[6] == "C:\\Users\\Zoë\\python.exe"


def test_bundle_dir_per_shell():
    posix = NodeFacts(SHELLS["posix"], "linux", "armv7l", "python3", "3.9.2", 4, "/home/pi/.cache")
    windows = NodeFacts(SHELLS["cmd"], "windows", "AMD64", "py -3", "3.12.1", 8, "C:\\Users\\ada\\AppData\\Local")
    assert posix.bundle_dir == "/home/pi/.cache/cluster-console"
    assert windows.bundle_dir == "C:\\Users\\ada\\AppData\\Local\\cluster-console"


def test_bundle_is_content_addressed_and_runnable():
    digest, data = bundle()
    again_digest, again = bundle.__wrapped__()
    assert digest == again_digest and data == again
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "__main__.py" in names and "nodeagent/service.py" in names and "rpyc/__init__.py" in names
    assert "jobs/factorize.py" in names
    assert not any(name.startswith("console/") for name in names)


def test_ssh_config_alias_fills_what_the_inventory_leaves_out(tmp_path):
    key = tmp_path / "id_pi"
    key.write_text("not a real key")
    config = tmp_path / "config"
    config.write_text(f"Host pi3\n  HostName 10.0.0.23\n  User pi\n  Port 2222\n  IdentityFile {key}\n")
    assert resolve_target(Node("pi-3", host="pi3"), config) == SSHTarget("10.0.0.23", 2222, "pi", (str(key),))
    own_key = tmp_path / "own"
    own_key.write_text("x")
    wins = resolve_target(Node("pi-3", host="pi3", user="root", port=22, key=str(own_key)), config)
    assert wins == SSHTarget("10.0.0.23", 22, "root", (str(own_key),))
    assert wins.host_key_name == "10.0.0.23"
    assert resolve_target(Node("x", host="10.1.1.1", port=2200), config).host_key_name == "[10.1.1.1]:2200"


def test_ssh_config_match_exec_runs_though_paramiko_is_imported_without_invoke(tmp_path, monkeypatch):
    """console.ssh keeps invoke out of paramiko's import (it is slow) and brings it in for a `Match exec`."""
    config = tmp_path / "config"
    config.write_text("Match host lab* exec \"test -d /\"\n  User lab\nHost *\n  Port 2022\n")
    with open(os.devnull) as nothing:
        monkeypatch.setattr(sys, "stdin", nothing)  # invoke reads stdin, which pytest holds
        assert resolve_target(Node("lab-1", host="lab1"), config) == SSHTarget("lab1", 2022, "lab", ())
        assert resolve_target(Node("pi", host="pi"), config).user != "lab"


def test_password_env_that_is_not_set_is_one_sentence(monkeypatch):
    from console.errors import NodeError
    from console.ssh import NodeConnection

    monkeypatch.delenv("PI_PASSWORD", raising=False)
    with pytest.raises(NodeError, match="password_env names PI_PASSWORD, which is not set"):
        NodeConnection(Node("pi-3", host="127.0.0.1", password_env="PI_PASSWORD")).connect()
