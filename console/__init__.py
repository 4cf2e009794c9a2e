"""The operator's side of the cluster console: everything that runs in the terminal (see README.md)."""
