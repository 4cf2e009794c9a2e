"""Shared pytest fixtures. The SSH test cluster itself lives in netcluster.py."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, Sequence

import pytest

import netcluster

os.environ.setdefault("PYTHONFAULTHANDLER", "1")
"""A console child that hangs prints every thread's stack on SIGABRT (helpers.communicate sends it)."""


def _require_net_cluster() -> None:
    reason = netcluster.skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def net_cluster_3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[netcluster.NetCluster]:
    """Three sshd nodes (node1..node3, all with Python), shared by the session."""
    _require_net_cluster()
    with netcluster.net_cluster(tmp_path_factory.mktemp("netcluster"), n=3) as cluster:
        yield cluster


@pytest.fixture
def make_net_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., netcluster.NetCluster]]:
    """make(n=3, no_python=(), **options) -> a cluster of the test's own, closed at its end."""
    _require_net_cluster()
    with contextlib.ExitStack() as stack:
        def make(n: int = 3, no_python: Sequence[str] = (),
                 **options: Any) -> netcluster.NetCluster:
            tmpdir = tmp_path_factory.mktemp("netcluster")
            return stack.enter_context(netcluster.net_cluster(tmpdir, n, no_python, **options))

        yield make
