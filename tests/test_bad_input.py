"""Bad job files and inventories: one clear sentence naming file and line, exit 2.

Parsing is pure, so most cases are checked on `load_job` / `load_inventory`;
each kind is also run once through the real CLI for the exit status.
"""

import time
from pathlib import Path

import pytest

from console.errors import InventoryError, JobFileError
from console.inventory import load_inventory
from console.jobspec import load_job
from helpers import agents_started_after, run_console, wait_for

GOOD_JOB = """\
[job]
name = "t"
function = "jobs.factorize:factorize"
chunk_size = 10

[input]
range = [1, 100]
"""

BAD_JOBS = {
    "malformed": (GOOD_JOB.replace('name = "t"', 'name = "t'), ":2: not valid TOML"),
    "unknown key": (GOOD_JOB.replace("chunk_size = 10", "chunk_sise = 10"), ":4: unknown key 'chunk_sise' in [job]"),
    "wrong type": (GOOD_JOB.replace("chunk_size = 10", 'chunk_size = "ten"'), ":4: [job] chunk_size must be"),
    "missing function": (GOOD_JOB.replace("jobs.factorize:factorize", "jobs.factorize:nothing"),
                         ":3: [job] function 'jobs.factorize:nothing': module 'jobs.factorize' has no 'nothing'"),
    "module does not import": (GOOD_JOB.replace("jobs.factorize:factorize", "nosuchmodule:f"),
                               ":3: [job] function 'nosuchmodule:f': no module named 'nosuchmodule'"),
    "no input": (GOOD_JOB.split("[input]")[0], "no [input] table"),
    "two inputs": (GOOD_JOB + "items = [1, 2]\n", ":6: [input] needs exactly one of"),
    "empty range": (GOOD_JOB.replace("[1, 100]", "[5, 5]"), ":7: [input] range [5, 5] holds no items"),
}


@pytest.mark.parametrize("case", list(BAD_JOBS))
def test_bad_job_file_is_one_sentence_with_file_and_line(tmp_path, case):
    text, expected = BAD_JOBS[case]
    job = tmp_path / "job.toml"
    job.write_text(text)
    proc = run_console("run", str(job))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert expected in message and str(job) in message
    assert "Traceback" not in proc.stderr


def test_module_that_raises_at_import_names_the_error(tmp_path):
    (tmp_path / "broken.py").write_text("import math\nVALUE = 1 / 0\ndef f(x):\n    return x\n")
    job = tmp_path / "job.toml"
    job.write_text(GOOD_JOB.replace("jobs.factorize:factorize", "broken:f").replace(
        "chunk_size = 10", 'chunk_size = 10\nfiles = ["broken.py"]'))
    proc = run_console("run", str(job))
    assert proc.returncode == 2
    assert "importing 'broken' raised ZeroDivisionError: division by zero (" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("text,message", [
    ('[job]\nfunction = "a:b"\nchunk_function = "a:c"\n[input]\nrange = [0, 3]\n', "exactly one of function"),
    ('[job]\nfunction = "a:b"\nretries = -1\n[input]\nrange = [0, 3]\n', ":3: [job] retries must be 0 or more"),
    ('[job]\nfunction = "a:b"\ntimeout = 0\n[input]\nrange = [0, 3]\n', ":3: [job] timeout must be more than 0"),
    ('[job]\nfunction = "a:b"\nreduce = "avg"\n[input]\nrange = [0, 3]\n', ":3: [job] reduce must be"),
    ('[job]\nfunction = "not a ref"\n[input]\nrange = [0, 3]\n', ":2: [job] function must look like"),
    ('[job]\nfunction = "a:b"\nfiles = ["nope.py"]\n[input]\nrange = [0, 3]\n', ":3: [job] files: 'nope.py' does not"),
    ('[job]\nfunction = "a:b"\n[input]\nfile = "missing.txt"\n', ":4: [input] file 'missing.txt' cannot be read"),
    ('[job]\nfunction = "a:b"\n[input]\nrange = [0, 3, 0]\n', "step must not be 0"),
    ('[job]\nfunction = "a:b"\n[input]\nrange = [0, 3]\n[extra]\n', "unknown table 'extra'"),
])
def test_job_file_errors(tmp_path, text, message):
    job = tmp_path / "job.toml"
    job.write_text(text)
    with pytest.raises(JobFileError) as caught:
        load_job(job)
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(job))


def test_input_file_items_are_lines(tmp_path):
    (tmp_path / "in.txt").write_text("a\n\nb\n c \n")
    job = tmp_path / "job.toml"
    job.write_text('[job]\nfunction = "a:b"\n[input]\nfile = "in.txt"\n')
    spec = load_job(job)
    assert len(spec.input) == 3 and spec.input.slice(1, 5) == ["b", "c"]


GOOD_INVENTORY = ('[defaults]\nuser = "pi"\n\n[[node]]\nname = "a"\nhost = "10.0.0.1"\n\n'
                  '[[node]]\nname = "b"\nhost = "10.0.0.2"\nworkers = 2\n')


@pytest.mark.parametrize("text,message", [
    (GOOD_INVENTORY.replace('name = "b"', 'name = "b'), ":9: not valid TOML"),
    (GOOD_INVENTORY.replace("workers = 2", "wrokers = 2"), ":11: node 'b': unknown key 'wrokers'"),
    (GOOD_INVENTORY.replace("workers = 2", 'workers = "two"'), ":11: node 'b': 'workers' must be an integer"),
    (GOOD_INVENTORY.replace("workers = 2", "workers = 0"), ":11: node 'b': workers must be at least 1"),
    (GOOD_INVENTORY.replace('name = "b"', 'name = "a"'), ":9: node name 'a' is used twice"),
    (GOOD_INVENTORY.replace('host = "10.0.0.2"', ""), ":8: node 'b': an ssh node needs host"),
    (GOOD_INVENTORY.replace('user = "pi"', "usr = 1"), ":2: unknown key 'usr' in [defaults]"),
    (GOOD_INVENTORY.replace("workers = 2", 'transport = "telnet"'), "transport must be \"ssh\" or \"local\""),
    (GOOD_INVENTORY.replace("workers = 2", "port = 70000"), ":11: node 'b': port must be between 1 and 65535"),
    ("[defaults]\n", "lists no nodes"),
])
def test_inventory_errors(tmp_path, text, message):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(inventory)
    assert message in str(caught.value)


def test_bad_inventory_exits_2_through_the_cli(tmp_path):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(GOOD_INVENTORY.replace("workers = 2", "wrokers = 2"))
    proc = run_console("run", "jobs/examples/factorize.toml", "--inventory", str(inventory))
    assert proc.returncode == 2
    assert f"{inventory}:11: node 'b': unknown key 'wrokers'" in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr


def test_missing_job_file_and_bad_option_exit_2(tmp_path):
    proc = run_console("run", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    assert run_console("run", "--no-such-option").returncode == 2


def test_version_names_the_package_and_python():
    proc = run_console("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("console 0.1.0, Python 3."), proc.stdout + proc.stderr


def test_default_inventory_is_this_machine():
    inventory = load_inventory(Path(__file__).resolve().parent.parent / "inventory.toml")
    assert [(n.name, n.transport) for n in inventory.nodes] == [("local", "local")]


def test_results_file_in_a_directory_that_cannot_exist_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_console("run", "jobs/examples/montecarlo.toml", "--output", str(blocker / "out.json"))
    assert proc.returncode == 2
    assert "cannot write the journal" in proc.stderr and "Traceback" not in proc.stderr


def test_an_inventory_may_name_a_dask_engine_instead_of_nodes(tmp_path):
    from console.inventory import load_inventory

    path = tmp_path / "inventory.toml"
    path.write_text('[engine]\ndask = "tcp://10.0.0.5:8786"\n')
    inventory = load_inventory(path)
    assert inventory.engine == "tcp://10.0.0.5:8786" and inventory.nodes == ()
    path.write_text('[engine]\nray = "x"\n')
    with pytest.raises(Exception, match=r"\[engine\] takes one key, dask ="):
        load_inventory(path)


def test_an_agent_started_early_does_not_outlive_a_bad_job_file(tmp_path):
    """`console run` starts the local agent before it reads the job file: a bad one still leaves no agent."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[job]\nfunction = "nope"\n[input]\nitems = [1]\n')
    started = time.time()
    proc = run_console("run", str(bad))
    assert proc.returncode == 2
    assert wait_for(lambda: not agents_started_after(started), 10), agents_started_after(started)
