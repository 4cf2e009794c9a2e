"""The node table: one row per node, keyed by its name and updated in place.

Reads `ClusterSnapshot`s bound from the app. Per snapshot it compares each node
with the last (O(nodes)), but calls `update_cell` only for changed cells of rows
in view; rows out of view are marked stale and caught up when they scroll in
(each `update_cell` invalidates DataTable's whole render cache, so this keeps a
tick's cost bounded by the viewport). It never recomposes, never calls the
cluster and never reads a clock. Sorting and the filter reorder or add/remove
rows; Enter posts `NodeTable.NodeSelected`. Composed by `console.tui.app.ConsoleApp`.
"""

from __future__ import annotations

from typing import Dict, Optional, Set, Tuple

from rich.text import Text
from textual.coordinate import Coordinate
from textual.message import Message
from textual.reactive import var
from textual.widgets import DataTable

from console.snapshot import ClusterSnapshot, NodeSnapshot
from console import format as f
from console.tui.widgets.node_columns import COLUMNS, SORTS, STATES, Cell, node_cells, sort_value

__all__ = ["NodeTable"]


class NodeTable(DataTable):
    """Every node's state, CPU, memory, workers and throughput, one row each."""

    COMPONENT_CLASSES = {f"node-table--{state}" for state in STATES}

    snapshot: var[Optional[ClusterSnapshot]] = var(None)
    """The latest cluster snapshot (bound to the app's)."""
    sort_by: var[str] = var("inventory")
    """One of `SORTS`."""
    filter_text: var[str] = var("")
    """Words a node must match to be shown (see `format.node_matches`)."""

    class NodeSelected(Message):
        """Enter was pressed on a node's row."""

        def __init__(self, node: str) -> None:
            super().__init__()
            self.node = node
            """Name of the node."""

    def __init__(self, *, id: Optional[str] = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self._node_by_name: Dict[str, NodeSnapshot] = {}
        self._index: Dict[str, int] = {}
        self._cells: Dict[str, Tuple[str, ...]] = {}
        self._stale: Set[str] = set()
        self._titles: Tuple[str, str] = ("", "")

    def watch_snapshot(self, snapshot: Optional[ClusterSnapshot]) -> None:
        if snapshot is None:
            return
        self._ensure_columns()
        names = set()
        for index, node in enumerate(snapshot.nodes):
            names.add(node.name)
            self._index[node.name] = index
            if self._node_by_name.get(node.name) == node:
                continue
            self._node_by_name[node.name] = node
            self._show(node)
        for gone in [n for n in self._node_by_name if n not in names]:
            del self._node_by_name[gone]
            self._hide(gone)
        self._resort()
        self._catch_up()
        self._update_titles()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._catch_up()

    def on_resize(self) -> None:
        self._catch_up()

    def watch_sort_by(self) -> None:
        self._resort()
        self._catch_up()
        self._update_titles()

    def watch_filter_text(self) -> None:
        self._ensure_columns()
        keep = self.selected_node
        self.clear()
        self._cells.clear()
        self._stale.clear()
        for name in sorted(self._node_by_name, key=self._sort_key):
            self._show(self._node_by_name[name])
        self._follow(keep)
        self._update_titles()

    @property
    def selected_node(self) -> Optional[str]:
        """Name of the node under the cursor, or None when no row is shown."""
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0))
        return row_key.value

    def cycle_sort(self) -> None:
        """Sort by the next order in `SORTS`."""
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_titles()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.NodeSelected(event.row_key.value))

    def _ensure_columns(self) -> None:
        if not self.columns:
            for key, label, width in COLUMNS:
                self.add_column(label, key=key, width=width)

    def _shown(self, node: NodeSnapshot) -> bool:
        return f.node_matches(node, self.filter_text)

    def _sort_key(self, name: str) -> tuple:
        return sort_value(self._node_by_name[name], self.sort_by, self._index.get(name, 0))

    def _render(self, key: str, text: str, node: NodeSnapshot) -> Cell:
        if key == "state":
            component = f"node-table--{node.state}"
            return Cell(text, lambda: self.get_component_rich_style(component, partial=True))
        return Cell(text)

    def _show(self, node: NodeSnapshot) -> None:
        """Add, mark stale or remove `node`'s row so it matches the node and the filter."""
        name = node.name
        if not self._shown(node):
            self._hide(name)
        elif name in self._cells:
            self._stale.add(name)
        else:
            cells = node_cells(node)
            row = [self._render(key, text, node) for (key, _, _), text in zip(COLUMNS, cells)]
            self.add_row(*row, key=name)
            self._cells[name] = cells

    def _hide(self, name: str) -> None:
        self._stale.discard(name)
        if self._cells.pop(name, None) is not None:
            self.remove_row(name)

    def _catch_up(self) -> None:
        """Bring the stale rows in view up to date, touching only the cells that changed."""
        if not self._stale:
            return
        top = int(self.scroll_y)
        for row in self.ordered_rows[top:top + max(self.size.height, 1)]:
            name = row.key.value
            if name not in self._stale:
                continue
            self._stale.discard(name)
            node = self._node_by_name[name]
            cells = node_cells(node)
            for (key, _, _), was, now in zip(COLUMNS, self._cells[name], cells):
                if was != now:
                    self.update_cell(name, key, self._render(key, now, node))
            self._cells[name] = cells

    def _resort(self) -> None:
        """Reorder the rows when the sort order says so; the cursor stays on its node."""
        current = [row.key.value for row in self.ordered_rows]
        wanted = sorted(current, key=self._sort_key)
        if current != wanted:
            keep = self.selected_node
            self.sort("name", key=lambda cell: self._sort_key(str(cell)))
            self._follow(keep, scroll=False)

    def _follow(self, name: Optional[str], scroll: bool = True) -> None:
        if name is not None and name in self._cells:
            self.move_cursor(row=self.get_row_index(name), scroll=scroll)

    def _update_titles(self) -> None:
        shown, known = len(self._cells), len(self._node_by_name)
        title = f"Nodes · {shown} of {known} shown · sort {self.sort_by} (o)"
        if self.filter_text.strip():
            title += f" · filter: {self.filter_text.strip()}"
        selected = self.selected_node
        node = self._node_by_name.get(selected) if selected else None
        subtitle = f.node_summary(node) if node else ""
        if (title, subtitle) != self._titles:
            self._titles = (title, subtitle)
            self.border_title = Text(title)
            self.border_subtitle = Text(subtitle)
