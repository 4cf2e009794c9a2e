"""Jobs with requirements: wheels resolved per node platform, shipped once, imported ahead of the node's own.

The local runs here are offline: the wheels are small pure-Python ones built
by the test into a wheelhouse folder, and the inventory names that folder
alone, so pip never asks an index. Each run gets its own cache directory
(XDG_CACHE_HOME), so what is sent is known. numpy over a Linux node without
numpy and the emulated Windows node is in tests/test_windows_node.py.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from console.errors import InventoryError, JobFileError
from console.inventory import load_inventory
from console.jobspec import load_job
from console.packages import NodePlatform, PackageResolver, PackagesUnavailable, pip_platforms
from console.inventory import PackageSource
from helpers import run_console
from nodeagent.wheels import wheel_tags

TINY = '''VALUE = {value!r}


def scaled(x):
    return x * VALUE
'''


def make_wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A pure-Python wheel holding the module `name` with `source`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", source)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                        "Tag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


TINYJOB = "import tinypkg\n\n\ndef run(x):\n    return tinypkg.scaled(x)\n"
NOSUCHJOB = "import nosuchpkg\n\n\ndef run(x):\n    return x\n"


def write_lab(tmp_path: Path, requires: str, job_code: str = TINYJOB) -> tuple:
    """A wheelhouse with tinypkg 1.0 (VALUE 10) and 2.0 (VALUE 20), an inventory naming it alone, and a job
    calling tinyjob:run, whose module is `job_code`."""
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "tinypkg", "1.0", TINY.format(value=10))
    make_wheel(wheelhouse, "tinypkg", "2.0", TINY.format(value=20))
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[packages]\nwheelhouse = "wheelhouse"\n\n'
                         '[[node]]\nname = "local"\ntransport = "local"\nworkers = 2\n')
    (tmp_path / "tinyjob.py").write_text(job_code)
    job = tmp_path / "tiny.toml"
    job.write_text(f'[job]\nfunction = "tinyjob:run"\nfiles = ["tinyjob.py"]\nchunk_size = 5\nreduce = "sum"\n'
                   f'{requires}\n[input]\nrange = [0, 20]\n[output]\npath = "tiny.json"\n')
    return job, inventory


def run_job(tmp_path: Path, job: Path, inventory: Path):
    proc = run_console("run", str(job), "--inventory", str(inventory), env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
                       cwd=tmp_path)
    document = json.loads((tmp_path / "tiny.json").read_text()) if (tmp_path / "tiny.json").exists() else None
    return proc, document


# -- pure parts ------------------------------------------------------------------------------

def test_pip_gets_every_manylinux_tag_the_nodes_glibc_runs():
    tags = pip_platforms("manylinux_2_36_x86_64")
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux_2_5_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux2010_armv7l" not in pip_platforms("manylinux_2_31_armv7l")
    assert "manylinux2014_armv7l" in pip_platforms("manylinux_2_31_armv7l")
    assert pip_platforms("win_amd64") == ["win_amd64"] and pip_platforms("") == []


def test_this_machine_reports_its_wheel_tags():
    abi, platform = wheel_tags()
    assert abi.startswith("cp3") and platform.startswith("manylinux_2_") and platform.endswith("_x86_64")


def test_a_platform_without_binary_wheels_gets_a_sentence(tmp_path):
    resolver = PackageResolver(["numpy"], PackageSource(), tmp_path)
    with pytest.raises(PackagesUnavailable, match="takes no binary wheels"):
        resolver.wheels_for(NodePlatform("3.11", "cp311", ""))


@pytest.mark.parametrize("requires, message", [
    ('requires = ["numpy>="]', "is not a requirement"),
    ('requires = ["--index-url=https://example.org"]', "is a pip option"),
    ('requires = ["pkg @ https://example.org/pkg.whl"]', "names a URL"),
    ('requires = "numpy"', "must be a list of requirement strings"),
    ('requires = ["numpy"]\nrequirements = "r.txt"', "not both"),
    ('requirements = "missing.txt"', "cannot be read"),
])
def test_bad_requirements_name_the_file_and_line(tmp_path, requires, message):
    job, _ = write_lab(tmp_path, requires)
    with pytest.raises(JobFileError, match=message) as caught:
        load_job(job)
    assert str(caught.value).startswith(f"{job}:")


def test_a_requirements_file_beside_the_job(tmp_path):
    (tmp_path / "requirements.txt").write_text("# what the job imports\ntinypkg==2.0  # the new one\n\n")
    job, _ = write_lab(tmp_path, 'requirements = "requirements.txt"')
    assert load_job(job).requires == ("tinypkg==2.0",)


def test_the_inventory_names_a_wheelhouse_that_exists(tmp_path):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[packages]\nwheelhouse = "nowhere"\n\n[[node]]\nname = "local"\ntransport = "local"\n')
    with pytest.raises(InventoryError, match="is not a folder"):
        load_inventory(inventory)
    inventory.write_text('[packages]\nmirror = "x"\n\n[[node]]\nname = "local"\ntransport = "local"\n')
    with pytest.raises(InventoryError, match="unknown key 'mirror' in \\[packages\\]"):
        load_inventory(inventory)


# -- whole runs, offline -----------------------------------------------------------------------

def test_offline_a_job_imports_its_requirement_from_the_wheelhouse_and_a_second_run_sends_nothing(tmp_path):
    job, inventory = write_lab(tmp_path, 'requires = ["tinypkg==1.0"]')
    proc, document = run_job(tmp_path, job, inventory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert document["result"] == 10 * sum(range(20))
    assert document["packages"] == {"local": {"wheels": ["tinypkg 1.0"], "sent": 1}}
    proc, document = run_job(tmp_path, job, inventory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert document["packages"] == {"local": {"wheels": ["tinypkg 1.0"], "sent": 0}}


def test_two_jobs_needing_two_versions_on_one_node_do_not_collide(tmp_path):
    job, inventory = write_lab(tmp_path, 'requires = ["tinypkg==1.0"]')
    _, first = run_job(tmp_path, job, inventory)
    job.write_text(job.read_text().replace("tinypkg==1.0", "tinypkg>=2"))
    proc, second = run_job(tmp_path, job, inventory)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (first["result"], second["result"]) == (10 * sum(range(20)), 20 * sum(range(20)))
    assert second["packages"] == {"local": {"wheels": ["tinypkg 2.0"], "sent": 1}}
    assert len(list((tmp_path / "cache" / "cluster-console" / "wheels").iterdir())) == 2


def test_a_requirement_no_wheel_satisfies_is_a_sentence_and_no_node_is_usable(tmp_path):
    """The console lacks the package too: its import check leaves that to the nodes, which sit the job out."""
    job, inventory = write_lab(tmp_path, 'requires = ["nosuchpkg>=1"]', NOSUCHJOB)
    proc, document = run_job(tmp_path, job, inventory)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    sentence = document["node_errors"]["local"]
    assert sentence.startswith("local: no wheel of nosuchpkg>=1 for its Python 3.")
    assert "in its wheelhouse; it sits this job out" in sentence and "pip download --only-binary=:all:" in sentence
    assert "no wheel of nosuchpkg>=1" in proc.stdout + proc.stderr


def test_without_requires_a_missing_import_is_still_the_job_files_error(tmp_path):
    job, inventory = write_lab(tmp_path, "", NOSUCHJOB)
    proc, _ = run_job(tmp_path, job, inventory)
    assert proc.returncode == 2
    assert "No module named 'nosuchpkg'; install it, or name it in [job] requires" in proc.stderr


def test_the_python_api_ships_its_requirements_too(tmp_path, monkeypatch):
    from apicalls import tiny_scaled

    from console import connect

    _, inventory = write_lab(tmp_path, "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with connect(inventory, requires=["tinypkg==2.0"]) as cluster:
        assert list(cluster.map(tiny_scaled, range(10), chunksize=3)) == [20 * x for x in range(10)]
    with pytest.raises(ValueError, match="requires: 'tinypkg=2' is not a requirement"):
        connect(inventory, requires=["tinypkg=2"])


@pytest.mark.sshd
def test_numpy_on_an_emulated_aarch64_node_gets_aarch64_wheels(tmp_path):
    """Debian's arm64 Python under qemu-user behind a namespace's sshd (tests/aarch64node.py): pip resolves
    manylinux aarch64 wheels for it, and the job's answer is exact."""
    import aarch64node
    import netcluster

    reason = netcluster.skip_reason() or aarch64node.skip_reason()
    if reason:
        pytest.skip(reason)
    (tmp_path / "npjob.py").write_text("import numpy as np\n\n\ndef dot(n):\n"
                                       "    a = np.arange(n, dtype=np.int64)\n    return int(a @ a)\n")
    job = tmp_path / "np.toml"
    job.write_text('[job]\nfunction = "npjob:dot"\nfiles = ["npjob.py"]\nchunk_size = 10\nreduce = "sum"\n'
                   'requires = ["numpy>=1.26,<2.2"]\n[input]\nrange = [0, 40]\n[output]\npath = "np.json"\n')
    with netcluster.net_cluster(tmp_path / "net", n=1, session_env=aarch64node.session_env()) as cluster:
        inventory = cluster.write_inventory(tmp_path / "inventory.toml",
                                            overrides={"node1": {"python": str(aarch64node.python_path())}})
        proc = run_console("run", str(job), "--inventory", str(inventory), timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        document = json.loads((tmp_path / "np.json").read_text())
        assert document["result"] == sum(i * i for n in range(40) for i in range(n))
        assert document["packages"] == {"node1": {"wheels": ["numpy 2.1.3"], "sent": 1}}
        unpacked = cluster.node("node1").cache_dir / "cluster-console" / "wheels"
        assert list(unpacked.glob("*/numpy/_core/_multiarray_umath.cpython-311-aarch64-linux-gnu.so"))


def test_a_node_lacking_a_system_library_the_wheel_needs_sits_the_job_out_with_a_sentence(tmp_path):
    """The wheel imports, then its module fails as a binding does without its shared library: the node takes no
    more chunks of the job (here the only node: no node is usable, exit 3) and the sentence says what to do."""
    wheelhouse = tmp_path / "wheelhouse"
    make_wheel(wheelhouse, "glpkg", "1.0", 'raise ImportError("libGL.so.1: cannot open shared object file: No such '
                                           'file or directory")\n')
    job, inventory = write_lab(tmp_path, 'requires = ["glpkg"]', "def run(x):\n    import glpkg\n    return x\n")
    proc, document = run_job(tmp_path, job, inventory)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    sentence = document["node_errors"]["local"]
    assert sentence.startswith("local: the job's code does not import on its Python 3.")
    assert "(ImportError: libGL.so.1: cannot open shared object file" in sentence
    assert "install what is missing on local" in sentence
    assert document["chunks"]["done"] == 0 and len(document["attempts"]) <= 2 * 2
