"""The journal and the results writer as plain objects: cut lines, another job's journal, unwritable
paths, a removed file, and no temporary file left behind."""

import json
import pickle
import signal
from pathlib import Path

import pytest

from console.errors import ConsoleFault, UsageError
from console.journal import JournalWriter, read_journal
from console.jobspec import load_job
from console.results import RECORDS_A_BLOCK, results_text, write_results
from helpers import write_job
from nodeagent.wire import ValueDecoder


@pytest.fixture
def spec(tmp_path):
    return load_job(write_job(tmp_path, function="faulty:square", items=range(30), chunk_size=10))


def journal_of(spec, values):
    path = tmp_path_journal(spec)
    writer = JournalWriter(path, spec.fingerprint(), resume=False)
    for chunk, value in enumerate(values):
        writer.write(chunk, chunk * 10, 10, "ws-1", pickle.dumps(value))
    writer.close()
    return path


def tmp_path_journal(spec) -> Path:
    return spec.output.with_name(spec.output.name + ".journal")


def test_entries_read_back_decoded(spec):
    path = journal_of(spec, [[1, 2], [3], {"a": 1.5}])
    entries = read_journal(path, spec, ValueDecoder())
    assert [(e.chunk, e.start, e.count, e.node, e.value) for e in entries] == [
        (0, 0, 10, "ws-1", [1, 2]), (1, 10, 10, "ws-1", [3]), (2, 20, 10, "ws-1", {"a": 1.5})]


def test_a_cut_last_line_is_dropped_and_the_next_record_starts_a_line_of_its_own(spec):
    """The console died (or the disk filled) mid-line: that chunk runs again, later records stay readable."""
    path = journal_of(spec, [[1], [2], [3]])
    data = path.read_bytes()
    path.write_bytes(data[:-20])
    assert [e.chunk for e in read_journal(path, spec, ValueDecoder())] == [0, 1]
    writer = JournalWriter(path, spec.fingerprint(), resume=True)
    writer.write(2, 20, 10, "pi-3", pickle.dumps([30]))
    writer.close()
    entries = read_journal(path, spec, ValueDecoder())
    assert [(e.chunk, e.node, e.value) for e in entries] == [(0, "ws-1", [1]), (1, "ws-1", [2]), (2, "pi-3", [30])]


def test_a_journal_of_another_job_is_refused(spec, tmp_path):
    path = journal_of(spec, [[1]])
    other = load_job(write_job(tmp_path, name="job", function="faulty:square", items=range(31), chunk_size=10))
    with pytest.raises(UsageError, match="was written for a different job"):
        read_journal(path, other, ValueDecoder())


def test_a_bad_line_in_the_middle_is_named(spec):
    path = journal_of(spec, [[1], [2]])
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "not json", lines[2]]) + "\n")
    with pytest.raises(UsageError, match=r"journal:2: not a journal line"):
        read_journal(path, spec, ValueDecoder())
    record = json.loads(lines[1])
    del record["start"]
    path.write_text("\n".join([lines[0], json.dumps(record)]) + "\n")
    with pytest.raises(UsageError, match=r"journal:2: chunk 0's record cannot be read"):
        read_journal(path, spec, ValueDecoder())


def test_an_unwritable_journal_path_is_a_sentence(spec, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="cannot write the journal .*choose a results file in a writable directory"):
        JournalWriter(tmp_path / "afile" / "out.json.journal", spec.fingerprint(), resume=False)


def test_a_journal_removed_under_the_writer_stops_the_job(spec):
    path = tmp_path_journal(spec)
    writer = JournalWriter(path, spec.fingerprint(), resume=False)
    writer.write(0, 0, 10, "ws-1", pickle.dumps([1]))
    path.unlink()
    with pytest.raises(ConsoleFault, match=r"cannot write the journal .* \(the file was removed\); the job stopped"):
        writer.write(1, 10, 10, "ws-1", pickle.dumps([2]))
    writer.close()


def test_results_are_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out.json"
    write_results(target, {"result": [1, 2], "key": (3, 4)})
    assert json.loads(target.read_text()) == {"result": [1, 2], "key": [3, 4]}
    blocked = tmp_path / "blocked.json"
    blocked.mkdir()
    with pytest.raises(OSError):
        write_results(blocked, {"result": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked.json", "out.json"]


def test_each_record_is_written_as_json_dumps_writes_it():
    """Records are encoded a column at a time: each line is still exactly json.dumps(record, default=str), for
    strings that need escaping, a key holding %, ints, floats finite or not, None, bools, an IntEnum, a Path and
    a list in one column, and for records whose keys differ from the first's or are not strings (a result's)."""
    mixed = ["a\"b\\c\n", "é", "%s", 7, 10 ** 30, 0.1, -0.0, float("inf"), float("nan"), None, True,
             signal.SIGTERM, Path("/p"), [1, "x"]]
    uniform = [{"chunk": c, "per%cent": c / 3, "node": "n%d" % (c % 2), "any": v} for c, v in enumerate(mixed)]
    ragged = uniform[:2] + [{"node": "n9"}]
    for records in (uniform, ragged, [{"x": float("inf")}, {"x": 1.5}], [{"x": 1}, {"x": True}], [{1: "a", 2.5: "b"}]):
        lines = results_text({"attempts": records}).splitlines()[2:-2]
        assert [line.strip().rstrip(",") for line in lines] == [json.dumps(r, default=str) for r in records]
    many = [{"chunk": c, "node": "n%d" % (c % 7), "end_s": c / 7} for c in range(RECORDS_A_BLOCK + 3)]  # two blocks
    lines = results_text({"attempts": many}).splitlines()[2:-2]
    assert [line.strip().rstrip(",") for line in lines] == [json.dumps(r) for r in many]


def test_the_results_file_is_the_document_a_line_a_record():
    """Whatever the document holds, the text reads back as the document JSON makes of it (tuples as lists, keys
    as strings, other values as their str); the records of attempts and nodes have a line each."""
    document = {"job": "j", "status": "ok", "result": {1: (2, 3), "x": [{"a": None}]}, "failures": [],
                "nodes": {"n1": {"chunks": 2}, "n2": {"chunks": 0}}, "node_errors": {},
                "attempts": [{"chunk": c, "node": "n1", "start_s": 0.5} for c in range(3)], "when": Path("/p"),
                "ratio": float("inf")}
    text = results_text(document)
    assert json.loads(text) == json.loads(json.dumps(document, default=str))
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert '  {"chunk": 1, "node": "n1", "start_s": 0.5},' in lines and '  "n2": {"chunks": 0}' in lines
    assert ' "failures": [],' in lines and ' "node_errors": {},' in lines
