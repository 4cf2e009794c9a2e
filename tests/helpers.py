"""Shared helpers for the end-to-end tests: write job files, run the real CLI, mount a small disk."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import psutil
import pytest

from nodeagent.forker import FORKER_NAME, WORKER_NAME

ROOT = Path(__file__).resolve().parent.parent
FAULTY = Path(__file__).resolve().parent / "jobfiles" / "faulty.py"


def write_job(directory: Path, name: str = "job", function: str = "faulty:square", items: Any = None,
              range_: Optional[Sequence[int]] = None, chunk_size: Any = 5, retries: int = 2, timeout: float = 30,
              reduce: str = "list", files: Sequence[str] = (str(FAULTY),), chunk_function: bool = False) -> Path:
    """A job file in `directory` with an output path beside it."""
    lines = ["[job]", f'name = "{name}"']
    lines.append(f'{"chunk_function" if chunk_function else "function"} = "{function}"')
    lines.append("files = [" + ", ".join(json.dumps(f) for f in files) + "]")
    lines.append(f"chunk_size = {json.dumps(chunk_size)}")
    lines += [f"retries = {retries}", f"timeout = {timeout}", f'reduce = "{reduce}"', "", "[input]"]
    if range_ is not None:
        lines.append(f"range = {json.dumps(list(range_))}")
    else:
        lines.append(f"items = {json.dumps(list(items))}")
    lines += ["", "[output]", f'path = "{directory / (name + ".results.json")}"']
    path = directory / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_console(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
                cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run `console ...` as a user would, in a child process."""
    proc = subprocess.Popen([sys.executable, "-m", "console.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **(env or {})), cwd=cwd or ROOT)
    stdout, stderr = communicate(proc, timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def communicate(proc: subprocess.Popen, timeout: float) -> Tuple[str, str]:
    """proc's (stdout, stderr) once it ends. Past `timeout` it is made to print every thread's stack
    (faulthandler: conftest.py sets PYTHONFAULTHANDLER) and the test fails with its whole output."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        raise AssertionError(f"{' '.join(map(str, proc.args))} did not end within {timeout} s; its output:\n"
                             f"{stdout}\nits stderr (with every thread's stack):\n{stderr}") from None


def results(job_path: Path) -> Dict[str, Any]:
    """The results document written for a job file made by `write_job`."""
    return json.loads(job_path.with_suffix(".results.json").read_text())


def wait_for(predicate: Callable[[], Any], limit: float = 30.0, interval: float = 0.1) -> bool:
    """Poll `predicate` until it holds or `limit` seconds pass; bounded in time, never a fixed sleep."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def pool_workers(agent_pid: int) -> set:
    """The pids of an agent's living workers; not their forker, nor multiprocessing's resource tracker
    (Windows-style spawn)."""
    workers = set()
    for child in psutil.Process(agent_pid).children(recursive=True):
        try:
            command = " ".join(child.cmdline())
            forker = child.ppid() == agent_pid and is_forker(child)
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in command and not forker:
                workers.add(child.pid)
        except psutil.Error:  # gone meanwhile
            pass
    return workers


def is_forker(proc: psutil.Process) -> bool:
    """Whether a process is a pool's forker (nodeagent/forker.py)."""
    return proc.name() == FORKER_NAME.decode()


def is_agent(proc: psutil.Process) -> bool:
    """Whether a process (from process_iter with "name" and "cmdline") is a local node's: an agent (the bundle
    run by a Python), or a pool's forker or worker (`console run` serves its local node in its own process, the
    forker its child)."""
    return (proc.info["name"] in (FORKER_NAME.decode(), WORKER_NAME.decode())
            or "cluster-console/agent-" in " ".join(proc.info["cmdline"] or ()))


def agents_started_after(started: float) -> list:
    """Pids of agent processes started since `started` (a time.time()) that are still there."""
    return [proc.pid for proc in psutil.process_iter(["name", "cmdline", "create_time"])
            if is_agent(proc) and proc.info["create_time"] >= started - 1]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (made here) for the block; skips the test without root or mount."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
