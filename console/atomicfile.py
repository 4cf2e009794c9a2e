"""Files written whole or not at all: the bytes go to a temporary file beside the target, which then replaces it."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` (its folder made if need be) so that no reader ever sees part of it; the temporary
    file is this process's and thread's own, and a failed write leaves none behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
