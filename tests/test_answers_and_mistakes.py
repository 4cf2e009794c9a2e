"""The answer on screen, and job mistakes as one sentence: the real `console run` on the local node.

A job mistake (the function and its job file disagree) stops the job with its
sentence and exit 2, and no item runs twice: it would fail the same way on
every node.
"""

import json
import math
import re

import pytest

from helpers import ROOT, run_console
from jobs.randsum import expected

MISTAKES = ROOT / "tests" / "jobfiles" / "mistakes.py"
WIDE = {"COLUMNS": "1000"}


def job(tmp_path, function, reduce, *, chunk=False, size=5, items=100):
    path = tmp_path / "job.toml"
    key = "chunk_function" if chunk else "function"
    path.write_text(f'[job]\n{key} = "{function}"\nfiles = ["{MISTAKES}"]\nchunk_size = {size}\n'
                    f'reduce = "{reduce}"\n[input]\nrange = [0, {items}]\n[output]\npath = "{tmp_path / "out.json"}"\n')
    return path


def run(tmp_path, path):
    proc = run_console("run", str(path), env={**WIDE, "FAULT_DIR": str(tmp_path)})
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return proc, calls


def answer_line(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("answer: "))[len("answer: "):]


@pytest.mark.parametrize("example, check", [
    ("randsum", lambda text: text == str(expected(range(40)))),
    ("primes", lambda text: text == "148933"),
    ("factorize", lambda text: text == "1,000 entries: {999999999999: [3, 3, 3, 7, 11, 13, 37…, 1000000000001: "
     "[73, 137, 99990001], 1000000000003: [61, 14221, 1152763], …} (all in out.json)"),
])
def test_each_example_shows_its_answer(example, check, tmp_path):
    proc = run_console("run", str(ROOT / "jobs" / "examples" / f"{example}.toml"), "--output", "out.json", env=WIDE,
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert check(answer_line(proc.stdout)), proc.stdout


def test_the_montecarlo_example_gives_pi_within_its_stated_error(tmp_path):
    proc = run_console("run", "jobs/examples/montecarlo.toml", "--output", str(tmp_path / "out.json"), env=WIDE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "out.json").read_text())["result"]
    assert abs(result["pi"] - math.pi) < 4 * result["standard_error"] < 0.01
    assert answer_line(proc.stdout) == f"{{'pi': {result['pi']!r}, 'standard_error': {result['standard_error']!r}}}"


def test_reduce_dict_collects_item_and_value(tmp_path):
    proc, _ = run(tmp_path, job(tmp_path, "mistakes:square", "dict", items=30))
    assert proc.returncode == 0, proc.stdout
    assert json.loads((tmp_path / "out.json").read_text())["result"] == {str(x): x * x for x in range(30)}
    assert answer_line(proc.stdout) == f"30 entries: {{0: 0, 1: 1, 2: 4, …}} (all in {tmp_path / 'out.json'})"


@pytest.mark.parametrize("function, reduce, chunk, sentence", [
    ("mistakes:label", "sum", False,
     r"mistakes:label returned a str \('item-\d+'\) for item \d+, and reduce = \"sum\" adds numbers: return a "
     r"number, or use reduce = \"list\""),
    ("mistakes:pair", "merge", False,
     r"mistakes:pair returned a list \(\[\d+, \d+\]\) for item \d+, and reduce = \"merge\" merges dicts: return a "
     r"dict such as \{item: value\}, or use reduce = \"dict\""),
    ("mistakes:chunk_label", "sum", True,
     r"mistakes:chunk_label returned a str \('[\d,]+'\) for the chunk starting at item \d+, and reduce = \"sum\""),
    ("mistakes:lazy", "list", False,
     r"mistakes:lazy returned a list for the chunk starting at item \d+, which cannot be sent back \(TypeError: "
     r"cannot pickle 'generator' object\); return plain data"),
    ("mistakes:square", "mistakes:strict_total", False,
     r"\[job\] reduce mistakes:strict_total raised TypeError: list indices must be integers or slices, not str "
     r"\(.*mistakes.py:\d+\) on its first value, chunk \d+'s \(a list, from item \d+ on\) that mistakes:square "
     r"returned; make the reducer take a list of such values"),
])
def test_a_job_mistake_is_one_sentence_exit_2_and_no_item_runs_twice(tmp_path, function, reduce, chunk, sentence):
    path = job(tmp_path, function, reduce, chunk=chunk)
    proc, calls = run(tmp_path, path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "out.json").read_text())
    assert re.fullmatch(re.escape(f"{path}: ") + sentence + ".*", doc["mistake"]), doc["mistake"]
    assert f"stopped: {doc['mistake']}" in proc.stdout
    assert doc["retried_attempts"] == 0
    assert len(calls) == len(set(calls)), "an item ran twice"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_reduce_dict_needs_a_per_item_function(tmp_path):
    proc = run_console("run", str(job(tmp_path, "mistakes:chunk_label", "dict", chunk=True)), env=WIDE)
    assert proc.returncode == 2
    assert 'reduce = "dict" collects {item: value} from a per-item function' in proc.stderr
