"""Screens the dashboard pushes: node detail, traceback, job picker, quit confirmation."""

from console.tui.screens.job_picker import JobPicker
from console.tui.screens.node import NodeScreen
from console.tui.screens.quit import QuitScreen
from console.tui.screens.traceback import TracebackScreen

__all__ = ["JobPicker", "NodeScreen", "QuitScreen", "TracebackScreen"]
