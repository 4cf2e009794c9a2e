"""Reading TOML files so that every error names the file, the line and the key.

tomllib reports syntax errors with a line but gives no positions for values, so
`locate()` finds the line of a key by scanning the text: the key's line inside
the n-th occurrence of its table, or the table's header when the key is absent.
Pure functions over text; used by inventory.py and jobspec.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10 consoles
    import tomli as tomllib

__all__ = ["load", "locate", "Located"]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def load(path: Path, error: Callable[[str], Exception]) -> Tuple[Dict[str, Any], str]:
    """Parse a TOML file; `error(sentence)` builds the exception for a bad one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file; check the path or create it.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({exc}).") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        line = found.group(1) if found else "?"
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise error(f"{path}:{line}: not valid TOML: {reason}.") from None


def locate(text: str, table: Optional[str], index: int = 0, key: Optional[str] = None) -> int:
    """The 1-based line of `key` in the `index`-th `[table]`/`[[table]]` (top level when None)."""
    current: Optional[str] = None
    seen = -1 if table is not None else 0
    header_line = 1
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = header.group(2).strip()
            if current == table:
                seen += 1
                if seen == index:
                    header_line = number
            continue
        if current == table and seen == index and key is not None:
            found = _KEY.match(line)
            if found and found.group(1) == key:
                return number
    return header_line


class Located:
    """Builds "file:line: message" errors for one parsed TOML file."""

    def __init__(self, path: Path, text: str, error: Callable[[str], Exception]) -> None:
        self.path = path
        self.text = text
        self.error = error

    def __call__(self, message: str, table: Optional[str] = None, index: int = 0,
                 key: Optional[str] = None) -> Exception:
        line = locate(self.text, table, index, key)
        return self.error(f"{self.path}:{line}: {message}")
