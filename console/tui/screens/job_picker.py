"""The job-file picker: a modal listing job files, with a path Input; dismisses with a path or None.

Lists `jobs/examples/*.toml` (beside the cwd, then the installed `jobs`
package's) and the `.toml` files under the cwd (a few levels deep, bounded),
with the app's `job_path` preselected so Enter starts it. It only reads
directory listings; starting the job is the app's business.
Pushed by `console.tui.app.ConsoleApp.action_start_job`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import List, Optional, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

__all__ = ["JobPicker", "find_job_files"]

NOT_JOBS = frozenset({"pyproject.toml", "inventory.toml"})
"""TOML files that are never job files."""

_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "venv", "build", "dist", "site-packages"})


def _examples_dirs(root: Path) -> List[Path]:
    dirs = [root / "jobs" / "examples"]
    try:
        spec = importlib.util.find_spec("jobs")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        dirs.append(Path(location) / "examples")
    return dirs


def find_job_files(root: Path, depth: int = 3, limit: int = 200, max_dirs: int = 500) -> List[str]:
    """Job files to offer, examples first: paths relative to `root` where possible.

    The walk under `root` stops `depth` folders down, after `max_dirs` folders or
    `limit` files, so a picker opened in a home directory still opens at once.
    """
    found: List[Path] = []
    for folder in _examples_dirs(root):
        if folder.is_dir():
            found.extend(sorted(folder.glob("*.toml")))
    for visited, (here, dirs, files) in enumerate(os.walk(root)):
        if visited >= max_dirs:
            break
        level = len(Path(here).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        if level >= depth:
            dirs[:] = []
        found.extend(Path(here) / name for name in sorted(files) if name.endswith(".toml"))
        if len(found) >= limit:
            break
    paths: List[str] = []
    seen = set()
    for path in found:
        resolved = path.resolve()
        if path.name in NOT_JOBS or resolved in seen:
            continue
        seen.add(resolved)
        try:
            paths.append(str(resolved.relative_to(root.resolve())))
        except ValueError:
            paths.append(str(resolved))
    return paths[:limit]


class JobPicker(ModalScreen[Optional[str]]):
    """Choose the job file to start."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, candidates: Sequence[str], selected: Optional[str] = None) -> None:
        super().__init__()
        self.candidates = list(candidates)
        """Paths offered in the list."""
        if selected and selected not in self.candidates:
            self.candidates.insert(0, selected)
        self.preselected = selected
        """The path preselected (the app's `job_path`)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Static("Enter starts the highlighted file · Tab: type a path · Esc cancels")
            options = [Option(Text(path), id=str(i)) for i, path in enumerate(self.candidates)]
            yield OptionList(*options, id="picker-list")
            yield Input(self.preselected or "", placeholder="path/to/job.toml", id="picker-path")

    def on_mount(self) -> None:
        self.query_one("#picker-box").border_title = "Start a job"
        options = self.query_one(OptionList)
        if self.candidates:
            chosen = self.preselected
            options.highlighted = self.candidates.index(chosen) if chosen in self.candidates else 0
            options.focus()
        else:
            self.query_one(Input).focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one(Input).value = self.candidates[event.option_index]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.candidates[event.option_index])

    def on_input_submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if path:
            self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)
