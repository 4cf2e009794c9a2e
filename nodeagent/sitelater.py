"""`site` for the forker and its workers: the agent's paths at once, `site` itself only if a job's import needs it.

The forker starts without `site` (`python -S`): on an interpreter with a few `.pth` files (an editable
install's import hook, a certificate bundle's) `site` was 40 of the forker's 50 ms of CPU, all of it before the
first worker could be forked. The forker takes what its agent's `sys.path` has beyond its own instead: every
directory `site` added (site-packages, the user's, those `.pth` files list), and its `sys.prefix` (a virtual
environment's, which `site` sets), so a job's imports find what they would have found. What only running
`site` gives, the import hooks some `.pth` files install (an editable install of a package) and
`sitecustomize`, comes from `SiteLater`: last on `sys.meta_path`, it runs `site.main()` on the first import no
other finder found, then asks the finders again.
"""

import _thread
import sys

__all__ = ["described", "adopt", "SiteLater"]


def described() -> str:
    """This interpreter's prefixes and `sys.path`, for `adopt` in the forker (one per line)."""
    return "\n".join([sys.prefix, sys.exec_prefix] + sys.path)


def adopt(description: str) -> None:
    """Take the prefixes `described` gave in the agent, and the entries of its `sys.path` this one lacks, after
    its own (nodeagent's root, the working directory, PYTHONPATH, the standard library: where they were before
    `site` added the rest); put `SiteLater` last on `sys.meta_path`."""
    sys.prefix, sys.exec_prefix, *path = description.split("\n")
    sys.path += [entry for entry in path if entry not in sys.path]
    sys.meta_path.append(SiteLater)


_running = _thread.allocate_lock()


class SiteLater:
    """A meta path finder of last resort: runs `site` once, then leaves."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):  # type: ignore[no-untyped-def]
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
