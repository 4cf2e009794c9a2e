"""Append-only record of finished chunks, so a killed console resumes.

One JSON object a line. The first line names the job's fingerprint (function,
mode, chunk_size, reduce and input: what must not change for --resume to be
safe); every further line is one chunk that counted:
`{"chunk": 17, "start": 850, "count": 50, "node": "ws-1", "value": "<base64 pickle>"}`.
Values are read back with the job's `ValueDecoder`, as they were when they
arrived from a node: a journal is no way around the wire's rules.
A result is written and flushed before it counts, under the cluster lock; a
write that fails (disk full, read-only, the file removed) raises
`ConsoleFault`, which ends the job. A line cut by a crash or a full disk is
dropped on --resume (its chunk runs again) and the next record starts on a
line of its own. The file is flushed to the OS, not fsynced: it survives the
console being killed, not the console's machine losing power.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import IO, Any, List, NamedTuple, Optional

from console.errors import ConsoleFault, UsageError
from console.jobspec import JobSpec
from nodeagent.wire import RefusedType, ValueDecoder, WireError

__all__ = ["JournalEntry", "JournalWriter", "read_journal", "journal_path"]


class JournalEntry(NamedTuple):
    """One chunk whose result counted."""

    chunk: int
    start: int
    count: int
    node: str
    value: Any
    """The decoded value."""


def journal_path(output: Path) -> Path:
    """The journal that goes with a results file: results.json -> results.json.journal."""
    return output.with_name(output.name + ".journal")


def read_journal(path: Path, spec: JobSpec, decoder: ValueDecoder) -> List[JournalEntry]:
    """Entries of an earlier run of the same job; refuses a journal of another job, or a value the job
    does not allow."""
    fingerprint = spec.fingerprint()
    entries: List[JournalEntry] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return entries
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read for --resume ({exc.strerror or exc}).") from None
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # a line cut short when the console was killed mid-write
            raise UsageError(f"{path}:{number}: not a journal line; remove the file to start afresh.") from None
        if number == 1:
            if record.get("job") != fingerprint:
                raise UsageError(
                    f"{path} was written for a different job (its function, input, chunk_size or reduce "
                    "changed); run without --resume to start afresh, or restore the old job file."
                )
            continue
        try:
            entry = JournalEntry(record["chunk"], record["start"], record["count"], record["node"],
                                 decoder.loads(base64.b64decode(record["value"])))
        except RefusedType as refused:
            raise UsageError(spec.refused_type(refused.name, f"{path}:{number}: chunk {record['chunk']}'s value")
                             + " Nothing of it was loaded.") from None
        except (WireError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}:{number}: chunk {record.get('chunk')}'s record cannot be read ({exc}); "
                             "remove the file to start afresh.") from None
        entries.append(entry)
    return entries


_RECORD = '{"chunk": %d, "start": %d, "count": %d, "node": %s, "value": "%s"}\n'
"""One chunk's line, as json.dumps would write it, in a quarter of the time (ints, a JSON string, base64)."""


class JournalWriter:
    """Appends finished chunks; `resume=False` starts the file afresh."""

    def __init__(self, path: Path, fingerprint: str, resume: bool) -> None:
        self.path = path
        fresh = not resume or not path.exists() or path.stat().st_size == 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not fresh:
                _cut_after_last_whole_line(path)
            self._file: Optional[IO[str]] = open(path, "w" if fresh else "a", encoding="utf-8")
            if fresh:
                self._file.write(json.dumps({"job": fingerprint, "journal": 1}) + "\n")
                self._file.flush()
        except OSError as exc:
            raise UsageError(f"cannot write the journal {path} ({exc.strerror or exc}); "
                             "choose a results file in a writable directory with --output.") from None

    def write(self, chunk: int, start: int, count: int, node: str, value: bytes) -> None:
        """Record one chunk's result and flush it to the OS; ConsoleFault when it cannot be."""
        assert self._file is not None
        line = _RECORD % (chunk, start, count, json.dumps(node), base64.b64encode(value).decode())
        try:
            if os.fstat(self._file.fileno()).st_nlink == 0:
                raise FileNotFoundError(2, "the file was removed")
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            raise ConsoleFault(
                f"cannot write the journal {self.path} ({exc.strerror or exc}); the job stopped. Make room or "
                f"fix the directory, then run it again with --resume: every chunk journalled before is kept "
                f"(or give --output a place with room, moving {self.path.name} there)."
            ) from None

    def close(self) -> None:
        """Close the file (the journal stays for the record and for --resume)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # its last write already failed and was reported
                pass
            self._file = None


def _cut_after_last_whole_line(path: Path) -> None:
    """Drop a last line cut short (crash, full disk), so the next record starts a line of its own."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
