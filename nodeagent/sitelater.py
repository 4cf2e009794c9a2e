"""`site` for the forker and its workers: the agent's paths at once, `site` itself only if a job's import needs it.

The forker starts without `site` (`python -S`): on an interpreter with a few `.pth` files (an editable
install's import hook, a certificate bundle's) `site` was 40 of the forker's 50 ms of CPU, all of it before the
first worker could be forked. The forker takes what its agent's `sys.path` has beyond its own instead: every
directory `site` added (site-packages, the user's, those `.pth` files list), and its `sys.prefix` (a virtual
environment's, which `site` sets), so a job's imports find what they would have found. What only running
`site` gives, the import hooks some `.pth` files install (an editable install of a package) and
`sitecustomize`, comes from `SiteLater`: last on `sys.meta_path`, it runs `site.main()` on the first import no
other finder found (one written outside the standard library: its own misses are other platforms' modules), then
asks the finders again.
"""

import _thread
import os
import sys

__all__ = ["described", "adopt", "SiteLater"]


def described() -> str:
    """This interpreter's prefixes and `sys.path`, for `adopt` in the forker (one per line)."""
    return "\n".join([sys.prefix, sys.exec_prefix] + sys.path)


def adopt(description: str) -> None:
    """Take the prefixes `described` gave in the agent, and the entries of its `sys.path` this one lacks, after
    its own (nodeagent's root, the working directory, PYTHONPATH, the standard library: where they were before
    `site` added the rest); put `SiteLater` last on `sys.meta_path`; define `site`'s `exit` and `quit`."""
    sys.prefix, sys.exec_prefix, *path = description.split("\n")
    sys.path += [entry for entry in path if entry not in sys.path]
    sys.meta_path.append(SiteLater)
    import builtins

    for name in ("exit", "quit"):  # what `site` defines that a job may call: SystemExit, reported as its error
        if not hasattr(builtins, name):
            setattr(builtins, name, sys.exit)


_running = _thread.allocate_lock()


_STDLIB = os.path.dirname(os.__file__)
_IMPORTLIB = os.path.join(_STDLIB, "importlib")
_PACKAGES = ("site-packages", "dist-packages")


def _asked_by_the_standard_library() -> bool:
    """Whether the import that missed every other finder was written in a module of the standard library (its
    own, not one `importlib` makes for a caller). Those are optional imports of another platform's modules
    (ntpath's `from nt import ...`, which pathlib's import makes): `site` adds nothing for them, and run in the
    middle of one it would run .pth hooks that import the module being initialised, and fail (an editable
    install's finder imports pathlib)."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen")
                                 or os.path.dirname(frame.f_code.co_filename) == _IMPORTLIB):
        frame = frame.f_back
    if frame is None:
        return False
    filename = frame.f_code.co_filename
    return filename.startswith(_STDLIB + os.sep) and not any(part in filename for part in _PACKAGES)


class SiteLater:
    """A meta path finder of last resort: runs `site` once, then leaves."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if _asked_by_the_standard_library():
            return None
        with _running:  # a job's other thread importing meanwhile waits for site to be done
            if cls in sys.meta_path:
                sys.meta_path.remove(cls)
                import site

                site.main()
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, path, target) if find_spec is not None else None
            if spec is not None:
                return spec
        return None
