"""A node can fail its own chunks, nothing more: a hostile agent against the real console.

Each test runs `console run` over two local nodes: "good", an honest agent,
and "evil", tests/hostile_agent.py speaking the real protocol with crafted
replies. Every crafted pickle would create a marker file if the console
unpickled it: the marker never appears, the console finishes the job, and
the results file and the output name the node and what it did.

Not covered, and not handled yet: a node that announces a frame under the
limit and then stays silent with its stream open keeps its session waiting
in the middle of that frame (the tail re-runs its chunks on the others, so
the job still finishes, but the node is not marked failed).
"""

import base64
import json
import os
import pickle
import sys
from pathlib import Path

import pytest

from helpers import results, run_console, wait_for, write_job
from console import rpyclink
from console.backends import agents
from console.cluster import Cluster
from console.inventory import Node
from console.jobspec import load_job
from hostile_agent import exploit, exploit_object
from nodeagent.wire import (
    PROTOCOL_VERSION, Collected, ErrorDetail, ValueDecoder, WireError, decode_collected, decode_digests,
    decode_error_detail, decode_info, encode,
)

HOSTILE = Path(__file__).resolve().parent / "hostile_agent.py"
ITEMS = range(60)
CHUNK = 3


def setup(tmp_path: Path, mode: str, max_reply_mb: float = 256):
    """(job, inventory, env, marker) for a run with the hostile node in `mode`."""
    marker = tmp_path / "PWNED"
    wrapper = tmp_path / "evil-python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {HOSTILE} "$@"\n')
    wrapper.chmod(0o755)
    (tmp_path / "hostile_import_marker.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[node]]\nname = "good"\ntransport = "local"\nworkers = 1\n\n'
                         f'[[node]]\nname = "evil"\ntransport = "local"\nworkers = 1\npython = "{wrapper}"\n')
    job = write_job(tmp_path, function="faulty:slow_square", items=ITEMS, chunk_size=CHUNK)
    job.write_text(job.read_text().replace("[input]", f"max_reply_mb = {max_reply_mb}\n\n[input]"))
    env = {"HOSTILE_MODE": mode, "HOSTILE_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return job, inventory, env, marker


def run(tmp_path: Path, mode: str, **options):
    job, inventory, env, marker = setup(tmp_path, mode, **options)
    proc = run_console("run", str(job), "--inventory", str(inventory), env=env)
    return proc, results(job), marker


def assert_evil_failed_and_good_finished(proc, doc, marker, how: str) -> None:
    assert not marker.exists(), "a node's reply ran code in the console"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert doc["status"] == "ok" and doc["result"] == [x * x for x in ITEMS]
    assert doc["chunks"] == {"total": 20, "done": 20, "failed": 0}
    assert how in doc["node_errors"]["evil"] and "broke the protocol" in doc["node_errors"]["evil"]
    assert "good" not in doc["node_errors"]
    assert how in " ".join(proc.stdout.split())


@pytest.mark.parametrize("mode,how", [
    ("hello-exploit", "naming posix.system"),
    ("metrics-exploit", "naming builtins.exec"),
    ("collect-exploit", "naming builtins.eval"),
    ("start-exploit", "answered start_job with bytes, not a pool size"),
    ("start-more-workers", "it started the job with 2 workers, where it has 1"),
    ("phantom", "an outcome for chunk 9999 attempt 1, which it was never given"),
    ("truncated", "out of step"),
    ("garbage", "a reply of 4096.0 MB"),
])
def test_a_node_that_breaks_the_protocol_is_failed_and_runs_nothing_here(tmp_path, mode, how):
    """Crafted pickles in the envelope, outcomes for chunks never sent, a cut frame, garbage: the node is failed
    with the reason, its chunks go to the honest node, the result is exact."""
    proc, doc, marker = run(tmp_path, mode)
    assert_evil_failed_and_good_finished(proc, doc, marker, how)


@pytest.mark.parametrize("mode,how", [("oversized", "a reply of 3.0 MB, over the limit of 1.0 MB"),
                                      ("bomb", "inflating past the limit of 1.0 MB")])
def test_a_reply_over_the_limit_is_refused_unread(tmp_path, mode, how):
    """max_reply_mb = 1: a 3 MB reply is refused from its frame header; 64 MB of zeros compressed into a small
    frame are not inflated past the limit."""
    proc, doc, marker = run(tmp_path, mode, max_reply_mb=1)
    assert_evil_failed_and_good_finished(proc, doc, marker, how)


@pytest.mark.parametrize("how,names", [("system", "posix:system"), ("subprocess", "subprocess:call"),
                                       ("exec", "builtins:exec"), ("eval", "builtins:eval"),
                                       ("import", "importlib:import_module")])
def test_crafted_values_fail_only_the_chunks_that_node_ran(tmp_path, how, names):
    """Values that would run code: each chunk evil answered fails for good, naming the type and the line to add;
    nothing runs, and every chunk the honest node ran is exact."""
    proc, doc, marker = run(tmp_path, f"value-{how}")
    assert not marker.exists(), "a chunk's value ran code in the console"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = {f["chunk"] for f in doc["failures"]}
    assert failed and all(f["node"] == "evil" and f["attempt"] == 1 for f in doc["failures"])
    assert all(f"holds a {names}, which" in f["error"] and f'result_types = ["{names}"]' in f["error"]
               for f in doc["failures"])
    assert doc["retried_attempts"] == 0
    assert doc["result"] == [x * x for x in ITEMS if x // CHUNK not in failed]
    assert doc["nodes"]["good"]["chunks"] == 20 - len(failed)
    assert "failed for good on evil (attempt 1): chunk" in proc.stdout


def test_a_crafted_value_in_the_journal_is_refused_on_resume(tmp_path):
    """A journal line whose value would run os.system: --resume refuses it with a sentence, nothing runs."""
    job = write_job(tmp_path, function="faulty:square", items=range(10), chunk_size=5)
    first = run_console("run", str(job))
    assert first.returncode == 0, first.stderr
    journal = Path(str(job.with_suffix(".results.json")) + ".journal")
    marker = tmp_path / "PWNED"
    lines = journal.read_text().splitlines()
    record = json.loads(lines[1])
    record["value"] = base64.b64encode(exploit("system", str(marker))).decode()
    journal.write_text("\n".join([lines[0], json.dumps(record)] + lines[2:]) + "\n")
    proc = run_console("run", str(job), "--resume", env={"COLUMNS": "1000"})
    assert proc.returncode == 2 and not marker.exists()
    message = " ".join(proc.stdout.split() + proc.stderr.split())
    assert f"{journal}:2: chunk {record['chunk']}'s value holds a posix:system, which {job} does not allow" in message


def test_fractions_need_the_job_to_allow_them(tmp_path):
    """A job whose values are Fractions: refused (one sentence, no retry; on the only node, a job mistake that
    stops the job, exit 2) until result_types allows them."""
    (tmp_path / "thirds.py").write_text("from fractions import Fraction\n\ndef third(x):\n    return Fraction(x, 3)\n")
    job = write_job(tmp_path, function="thirds:third", files=["thirds.py"], items=range(12), chunk_size=4,
                    reduce="sum")
    refused = run_console("run", str(job))
    assert refused.returncode == 2
    doc = results(job)
    assert doc["chunks"]["done"] == 0 and doc["chunks"]["failed"] >= 1 and doc["retried_attempts"] == 0
    assert "holds a fractions:Fraction" in doc["failures"][0]["error"] and doc["mistake"] == doc["failures"][0]["error"]
    assert 'result_types = ["fractions:Fraction"]' in " ".join(refused.stdout.split())
    job.write_text(job.read_text().replace("[input]", 'result_types = ["fractions:Fraction"]\n\n[input]'))
    allowed = run_console("run", str(job))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert results(job)["result"] == "22"  # Fraction(66, 3), written as its str in JSON


def test_every_crafted_payload_is_live_yet_the_decoders_refuse_it(tmp_path, monkeypatch):
    """The payloads really run code under pickle.loads; the wire's decoders refuse each without running it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "PWNED"
    (tmp_path / "hostile_import_marker.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    for how in ("system", "subprocess", "exec", "eval", "import"):
        payload = exploit(how, str(marker))
        with pytest.raises(Exception):
            ValueDecoder().loads(payload)
        for decode in (decode_collected, decode_info, lambda data: decode_digests(data, ["a" * 64])):
            with pytest.raises(WireError):
                decode(payload)
        inside = pickle.dumps(((), 0, 0, exploit_object(how, str(marker))))  # as the metrics of an exchange
        with pytest.raises(WireError):
            decode_collected(inside)
        assert not marker.exists(), how
        pickle.loads(payload)
        assert marker.exists(), f"the {how} payload is not live"
        marker.unlink()
        sys.modules.pop("hostile_import_marker", None)


def test_wheel_tags_and_missing_wheels_from_a_node_are_checked():
    """A node's wheel tags end up in pip's command line and file names, and its list of missing wheels decides
    what is sent: anything but a tag, or a digest not asked about, breaks the protocol."""
    hello = (PROTOCOL_VERSION, "h", "linux", "x86_64", "3.11.7", 2, 1, "psutil", "fork")
    assert decode_info(encode(hello + ("cp311", "manylinux_2_36_x86_64"))).platform == "manylinux_2_36_x86_64"
    for abi, tag in (("cp311", "--index-url=http://evil"), ("cp311 ", ""), ("cp311", "../../x")):
        with pytest.raises(WireError, match="wheel tags that are not tags"):
            decode_info(encode(hello + (abi, tag)))
    asked = ["a" * 64, "b" * 64]
    assert decode_digests(encode(("b" * 64,)), asked) == ("b" * 64,)
    for reply in (("c" * 64,), ["a" * 64], ("a" * 64, 1)):
        with pytest.raises(WireError, match="which wheels it lacks"):
            decode_digests(encode(reply), asked)


def test_a_nodes_text_reaches_the_terminal_without_control_characters():
    """An escape sequence (a window title, clearing the screen) in an agent's log, a chunk's error, traceback or
    worker name, its hello's hostname, or the arguments of the exception the Python API raises again (a traceback
    prints them) is shown, not obeyed: the dashboard, the plain output and tracebacks print these."""
    import io

    from console.agentlink import pump_lines

    lines = []
    pump_lines(io.BytesIO(b"ok \x1b]0;pwned\x07 \x1b[2J\tend\xc2\x9b\r\nnext\n"), lines.append).join(5)
    assert lines == ["ok \ufffd]0;pwned\ufffd \ufffd[2J\tend\ufffd", "next"]
    sent = Collected(((0, 1, "error", b"", "ValueError: \x1b[2Jno", "Traceback:\n  \x1b]0;x\x07\n", 0.1, "0\x1b"),),
                     0, 0)
    outcome = decode_collected(encode(sent)).outcomes[0]
    assert (outcome.error, outcome.traceback, outcome.worker) == (
        "ValueError: \ufffd[2Jno", "Traceback:\n  \ufffd]0;x\ufffd\n", "0\ufffd")
    hello = (PROTOCOL_VERSION, "pi\x1b]0;x\x07", "linux", "armv7l", "3.9.2", 4, 77, "fallback", "spawn", "cp39", "")
    assert decode_info(encode(hello)).hostname == "pi\ufffd]0;x\ufffd"
    detail = encode(ErrorDetail("builtins:KeyError", ("\x1b]52;c;cm0gLXJm\x07", ["\x9b2J", 3])))
    assert decode_error_detail(detail).args == ("\ufffd]52;c;cm0gLXJm\ufffd", ["\ufffd2J", 3])


def test_chunks_queued_for_a_lost_link_run_once_on_the_next(tmp_path, monkeypatch):
    """The node stalls the first metrics call after an exchange that freed credit, when its next chunks are
    already queued for it: the call times out, the console reconnects, and the chunks it held and those queued
    run once on the new agent (sent again, they would run twice under one attempt number, and the node's second
    answer would fail it for breaking the protocol). The job is exact."""
    job, _, env, marker = setup(tmp_path, "stall-metrics-once")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(rpyclink, "CALL_TIMEOUT_S", 2.0)
    cluster = Cluster([Node("evil", transport="local", workers=1, python=str(tmp_path / "evil-python"))])
    try:
        cluster.start_job(load_job(job))
        cluster.bootstrap()
        status = cluster.wait_job(120)
        session = cluster.sessions["evil"]
        assert status == "ok", list(session.log_lines)
        doc = results(job)
        assert doc["result"] == [x * x for x in ITEMS] and doc["chunks"]["done"] == 20
        assert "broke the protocol" not in json.dumps(doc), doc.get("node_errors")
        assert Path(f"{marker}.stalled").exists(), "the node never stalled"
        assert any(a.outcome == "lost" for a in cluster.job.scheduler.attempts)
    finally:
        cluster.close()


def test_a_wedged_agent_is_reconnected_once_its_chunks_are_far_past_their_timeout(tmp_path, monkeypatch):
    """The node answers every call but its chunks never end (its pool is stuck): past twice the chunk timeout
    (plus a grace) the console takes its agent for stuck, reconnects it, and its chunks go back to the queue."""
    job, _, env, _ = setup(tmp_path, "wedged")
    job.write_text(job.read_text().replace("timeout = 30", "timeout = 1"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(agents, "STUCK_GRACE_S", 3.0)  # the grace's length is not what is shown here
    wrapper = tmp_path / "evil-python"
    cluster = Cluster([Node("evil", transport="local", workers=1, python=str(wrapper))])
    try:
        cluster.start_job(load_job(job))
        cluster.bootstrap()
        first = cluster.sessions["evil"]
        assert wait_for(lambda: cluster.sessions["evil"] is not first, 2 * 1 + agents.STUCK_GRACE_S + 20), \
            list(first.log_lines)
        assert any("no outcome for" in line and "its agent is stuck; reconnecting" in line
                   for line in first.log_lines)
        assert any("state asked for: pool manager alive" in line for line in first.log_lines), list(first.log_lines)
        assert any(a.outcome == "lost" and a.node == "evil" for a in cluster.job.scheduler.attempts)
    finally:
        cluster.close()
