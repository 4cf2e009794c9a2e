"""The dashboard's widgets, one per module; each reads snapshots and never calls the cluster."""

from console.tui.widgets.core_bars import CoreBars
from console.tui.widgets.failures_panel import FailuresPanel
from console.tui.widgets.job_chart import JobChart
from console.tui.widgets.job_panel import JobPanel
from console.tui.widgets.node_table import NodeTable

__all__ = ["CoreBars", "FailuresPanel", "JobChart", "JobPanel", "NodeTable"]
