"""The job's code: check it imports before any node is touched, and find it.

`check_job_code` imports the job function (and a custom reducer) in the
console with the same search path the nodes will use: the project's own
`jobs` package plus the parent directory of each entry of [job] files. A
missing module or function is a job-file error naming the file and key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from console.bundle import CODE_ROOT
from console.errors import JobFileError
from console.jobspec import REDUCERS, JobSpec
from console.tomlfile import locate
from nodeagent.worker import resolve

__all__ = ["job_paths", "job_files", "collect_files", "check_job_code", "resolve_ref", "raised_at"]


def job_paths(spec: JobSpec) -> Tuple[str, ...]:
    """Directories to put on sys.path on this machine so the job's modules import."""
    paths: List[str] = []
    for entry in spec.files:
        parent = str(entry.parent)
        if parent not in paths:
            paths.append(parent)
    return tuple(paths)


def job_files(spec: JobSpec) -> Dict[str, bytes]:
    """The job's [job] files as {relative path: content}, shipped to every node's agent."""
    return collect_files(spec.files)


def collect_files(entries: Sequence[Path]) -> Dict[str, bytes]:
    """.py files and package directories as {path relative to their parent: content}."""
    files: Dict[str, bytes] = {}
    for entry in entries:
        if entry.is_file():
            files[entry.name] = entry.read_bytes()
            continue
        for path in sorted(entry.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[path.relative_to(entry.parent).as_posix()] = path.read_bytes()
    return files


def resolve_ref(ref: str, paths: Tuple[str, ...]) -> Callable[..., Any]:
    """Import "module:function" with `paths` searched first, as the module is on disk now."""
    for path in reversed((str(CODE_ROOT),) + paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    return resolve(ref, fresh=True)


def check_job_code(spec: JobSpec) -> Optional[Callable[..., Any]]:
    """Import the job function; return the custom reducer, if the job has one."""
    key = "function" if spec.mode == "item" else "chunk_function"
    try:
        _check(spec, spec.function, key)
    except _Unimportable as exc:  # a package this machine lacks: fine when the nodes get it from [job] requires
        if not spec.requires:
            raise JobFileError(str(exc)) from None
    if spec.reduce in REDUCERS:
        return None
    return _check(spec, spec.reduce, "reduce")


class _Unimportable(Exception):
    """The job's module imports a package this machine lacks."""


def _check(spec: JobSpec, ref: str, key: str) -> Callable[..., Any]:
    text = spec.path.read_text(encoding="utf-8")
    where = f"{spec.path}:{locate(text, 'job', 0, key)}: [job] {key} {ref!r}"
    module_name, _, attr = ref.partition(":")
    try:
        target = resolve_ref(ref, job_paths(spec))
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise JobFileError(f"{where}: no module named {exc.name!r}; add its .py file or package "
                               "directory to [job] files.") from None
        if key == "reduce":
            raise JobFileError(f"{where}: importing {module_name!r} failed: {exc}; the reducer runs on this "
                               "machine, so what it imports must be installed here.") from None
        raise _Unimportable(f"{where}: importing {module_name!r} failed: {exc}; install it, or name it in "
                            "[job] requires to have it shipped to the nodes.") from None
    except AttributeError:
        raise JobFileError(f"{where}: module {module_name!r} has no {attr!r}.") from None
    except Exception as exc:  # the job's own module failed at import: show where
        last = raised_at(exc)
        raise JobFileError(f"{where}: importing {module_name!r} raised {type(exc).__name__}: {exc} "
                           f"({last.filename}:{last.lineno}).") from None
    if not callable(target):
        raise JobFileError(f"{where}: {attr!r} is not a function.")
    return target


def raised_at(exc: BaseException) -> Any:
    """The innermost frame of `exc`'s traceback (a FrameSummary: filename, lineno), for a sentence naming it."""
    import traceback  # here: with the linecache and tokenize it imports, ~2 ms of every start

    return traceback.extract_tb(exc.__traceback__)[-1]
