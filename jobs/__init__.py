"""Example job functions shipped to the nodes with the agent; their job files are in jobs/examples/."""
