"""Importing this imports rpyc without ssl; import it before any rpyc module.

rpyc imports ssl for its TLS streams, which this project never opens (an agent speaks over its pipes, the
console over those and SSH channels): ~14 ms of CPU and 4 MB (libcrypto) of every process that speaks rpyc,
the console's start and every agent's. With None in sys.modules for ssl, `import ssl` fails and rpyc's
safe_import puts a placeholder in its place; the entry goes again at once, so a later import of ssl (the Dask
engine's, pip's) loads it as usual. Only rpyc's own TLS helpers (ssl_connect, SSL servers) keep the
placeholder: code in the same process (a Python API user's) that wants rpyc over TLS imports rpyc first.
"""

import sys

if "rpyc" not in sys.modules and "ssl" not in sys.modules:
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import rpyc  # noqa: F401
    finally:
        del sys.modules["ssl"]
