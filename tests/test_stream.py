"""The Windows agent's stream (nodeagent/stream.py), on os pipes here: as a plain object, and
carrying real rpyc traffic both ways, replies larger than one write included."""

import os
import threading

import rpyc
from rpyc.core.stream import PipeStream

from nodeagent.__main__ import serve_until_closed
from nodeagent.stream import ThreadedPipeStream


class EchoService(rpyc.Service):
    def exposed_echo(self, data: bytes) -> bytes:
        return data


def test_threaded_pipe_stream_polls_reads_and_ends_like_a_pipe():
    """The Windows agent's stream, exercised on os pipes here."""
    to_agent_r, to_agent_w = os.pipe()
    from_agent_r, from_agent_w = os.pipe()
    stream = ThreadedPipeStream(to_agent_r, from_agent_w)
    assert stream.poll(0.05) is False
    os.write(to_agent_w, b"hello world")
    assert stream.poll(2.0) is True
    assert stream.read(5) == b"hello" and stream.read(6) == b" world"
    stream.write(b"reply")
    assert os.read(from_agent_r, 100) == b"reply"
    threading.Timer(0.1, os.close, (to_agent_w,)).start()
    assert stream.poll(2.0) is True
    try:
        stream.read(1)
    except EOFError:
        pass
    else:
        raise AssertionError("no EOFError at the end of the pipe")
    assert stream.closed


def test_rpyc_serves_over_the_threaded_stream_as_the_windows_agent_does():
    """The agent's side is a ThreadedPipeStream served by serve_until_closed, the console's a PipeStream
    called from several threads at once."""
    to_agent_r, to_agent_w = os.pipe()
    from_agent_r, from_agent_w = os.pipe()
    agent = rpyc.connect_stream(ThreadedPipeStream(to_agent_r, from_agent_w), service=EchoService,
                                config={"allow_public_attrs": False, "allow_pickle": False})
    server = threading.Thread(target=serve_until_closed, args=(agent,), daemon=True)
    server.start()
    console = rpyc.connect_stream(PipeStream(os.fdopen(from_agent_r, "rb", buffering=0),
                                             os.fdopen(to_agent_w, "wb", buffering=0)),
                                  config={"sync_request_timeout": 10})
    try:
        big = os.urandom(300_000)
        assert console.root.echo(b"hello") == b"hello"
        assert console.root.echo(big) == big
        results = []
        callers = [threading.Thread(target=lambda: results.append(console.root.echo(big))) for _ in range(4)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(20)
        assert results == [big] * 4
    finally:
        console.close()
    server.join(10)
    assert not server.is_alive(), "the agent kept serving a closed stream"
