"""Canned cluster data and a fake `ClusterControl` for the dashboard's tests and snapshots."""
