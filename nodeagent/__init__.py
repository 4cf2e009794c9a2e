"""The node's side of the cluster console: an RPyC agent on stdin/stdout.

Runs on Python >= 3.9 with the standard library and rpyc only (psutil when the
node has it). Never imports `console`. Started as `python -m nodeagent`.
"""
