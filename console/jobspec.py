"""job.toml -> validated `JobSpec`, and the job's items by index.

Pure parsing and validation (reading an input file aside): no imports of the
job's code, no sockets. Every error names the file, line and key. Relative
paths in [job] files and [input] file are taken from the job file's directory;
[output] path from the current directory. Items are produced per chunk
(`JobInput.slice`), so a range of a billion numbers is never a list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

from console.errors import JobFileError
from console.tomlfile import Located, load
from nodeagent.cache import sha256

__all__ = ["JobSpec", "JobInput", "load_job", "parse_job", "requirement_problem"]

JOB_KEYS = {"name", "function", "chunk_function", "files", "chunk_size", "retries", "timeout", "reduce",
            "result_types", "max_reply_mb", "requires", "requirements"}
INPUT_KEYS = {"range", "items", "file"}
OUTPUT_KEYS = {"path"}
REDUCERS = ("sum", "merge", "list", "dict")


class JobInput:
    """The job's items: a range, an explicit list, or the lines of a file."""

    __slots__ = ("range", "items", "source")

    def __init__(self, range: Optional[Tuple[int, int, int]] = None, items: Optional[Tuple[Any, ...]] = None,
                 source: str = "") -> None:
        self.range = range
        """start, stop, step."""
        self.items = items
        """Explicit items (from [input] items, or the lines of [input] file)."""
        self.source = source
        """How the items were given, for messages and the job fingerprint."""

    def __len__(self) -> int:
        if self.range is not None:
            return len(range(*self.range))
        return len(self.items or ())

    def slice(self, start: int, count: int) -> Sequence[Any]:
        """Items start .. start+count-1: a range for a range input (it pickles as three numbers, however many
        items it holds; workers hand a chunk function a list), else a list."""
        if self.range is not None:
            first, _, step = self.range
            return range(first + start * step, first + (start + count) * step, step)
        return list((self.items or ())[start:start + count])


class JobSpec(NamedTuple):
    """A validated job file."""

    path: Path
    """The job file."""
    name: str
    """Job name, in the output and the UIs."""
    function: str
    """"module:function" reference of the job's code."""
    mode: str
    """"item": function called once per item; "chunk": once per chunk with its item list."""
    files: Tuple[Path, ...]
    """Extra local .py files or package directories shipped with the job."""
    chunk_size: Optional[int]
    """Items per chunk; None means "auto" (sized from measured chunk times)."""
    retries: int
    """Further attempts for a chunk that raises, dies or times out."""
    timeout: float
    """Seconds a chunk may run before its worker is killed."""
    reduce: str
    """"sum", "merge", "list", "dict" ({item: value}, per-item functions) or "module:function"."""
    input: JobInput
    """The items."""
    output: Path
    """Where the results JSON goes."""
    result_types: Tuple[str, ...] = ()
    """"module:qualname" of the types a chunk's value may hold beyond plain data (e.g. "fractions:Fraction")."""
    max_reply_mb: float = 256.0
    """The largest reply an agent may send; a larger one fails the node that sent it."""
    requires: Tuple[str, ...] = ()
    """PEP 508 requirements the job imports ("numpy>=1.26"), shipped to each node as wheels for its platform."""

    @property
    def combine(self) -> str:
        """What a worker does with one chunk's values before sending them: fold per-item results ("sum",
        "merge"), collect {item: value} ("dict"), check a chunk function's value fits "sum" or "merge"."""
        if self.reduce in ("sum", "merge") or self.reduce == "dict" and self.mode == "item":
            return self.reduce
        return "list"

    def refused_type(self, type_name: str, what: str) -> str:
        """The sentence for a value holding a type this job file does not allow ("fractions:Fraction")."""
        return (f"{what} holds a {type_name}, which {self.path} does not allow; if that type is expected, add "
                f"result_types = [\"{type_name}\"] to its [job] table.")

    def fingerprint(self) -> str:
        """What must not change between runs for --resume to be safe."""
        identity = [self.function, self.mode, self.chunk_size, self.reduce, self.input.source]
        return sha256(json.dumps(identity, default=str).encode()).hexdigest()[:16]


def load_job(path: Path, output: Optional[Path] = None) -> JobSpec:
    """Read and validate a job file; `output` overrides [output] path."""
    data, text = load(path, JobFileError)
    return parse_job(data, text, path, output)


def parse_job(data: Dict[str, Any], text: str, path: Path, output: Optional[Path] = None) -> JobSpec:
    """Validate parsed TOML; `text` is only used to find line numbers for errors."""
    err = Located(path, text, JobFileError)
    for key in data:
        if key not in ("job", "input", "output"):
            raise err(f"unknown table {key!r}; a job file has [job], [input] and [output].", None, 0, key)
    job = _table(err, data, "job", JOB_KEYS, required=True)
    inp = _table(err, data, "input", INPUT_KEYS, required=True)
    out = _table(err, data, "output", OUTPUT_KEYS, required=False)

    def want(table: str, key: str, value: Any, kind: Any, what: str) -> Any:
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise err(f"[{table}] {key} must be {what}, not {value!r}.", table, 0, key)
        return value

    name = want("job", "name", job.get("name", path.stem), str, "a string")
    if ("function" in job) == ("chunk_function" in job):
        raise err("[job] needs exactly one of function = \"module:f\" (called per item) "
                  "or chunk_function = \"module:f\" (called per chunk).", "job")
    mode = "item" if "function" in job else "chunk"
    key = "function" if mode == "item" else "chunk_function"
    function = want("job", key, job[key], str, "a \"module:function\" string")
    if not _is_ref(function):
        raise err(f"[job] {key} must look like \"package.module:function\", not {function!r}.", "job", 0, key)
    files = want("job", "files", job.get("files", []), list, "a list of paths")
    file_paths = []
    for entry in files:
        want("job", "files", entry, str, "a list of path strings")
        file_path = (path.parent / entry).resolve()
        if not file_path.exists():
            raise err(f"[job] files: {entry!r} does not exist (looked in {path.parent}).", "job", 0, "files")
        if not (file_path.is_dir() or file_path.suffix == ".py"):
            raise err(f"[job] files: {entry!r} is neither a .py file nor a package directory.", "job", 0, "files")
        file_paths.append(file_path)
    chunk_size = job.get("chunk_size", "auto")
    if chunk_size == "auto":
        chunk_size = None
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise err(f"[job] chunk_size must be a positive integer or \"auto\", not {chunk_size!r}.",
                  "job", 0, "chunk_size")
    retries = want("job", "retries", job.get("retries", 2), int, "an integer")
    if retries < 0:
        raise err("[job] retries must be 0 or more.", "job", 0, "retries")
    timeout = want("job", "timeout", job.get("timeout", 60), (int, float), "a number of seconds")
    if timeout <= 0:
        raise err("[job] timeout must be more than 0 seconds.", "job", 0, "timeout")
    reduce = want("job", "reduce", job.get("reduce", "list"), str, "a string")
    if reduce not in REDUCERS and not _is_ref(reduce):
        raise err(f"[job] reduce must be \"sum\", \"merge\", \"list\", \"dict\" or \"module:function\", not "
                  f"{reduce!r}.", "job", 0, "reduce")
    if reduce == "dict" and mode == "chunk":
        raise err("[job] reduce = \"dict\" collects {item: value} from a per-item function = \"module:f\"; a "
                  "chunk_function returns its chunk's own value (return a dict and use reduce = \"merge\").",
                  "job", 0, "reduce")
    result_types = want("job", "result_types", job.get("result_types", []), list,
                        'a list like ["fractions:Fraction"]')
    for ref in result_types:
        if not isinstance(ref, str) or not _is_ref(ref):
            raise err(f"[job] result_types entries look like \"module:Type\" (e.g. \"fractions:Fraction\"), "
                      f"not {ref!r}.", "job", 0, "result_types")
    max_reply_mb = want("job", "max_reply_mb", job.get("max_reply_mb", 256), (int, float), "a number of megabytes")
    if max_reply_mb <= 0:
        raise err("[job] max_reply_mb must be more than 0.", "job", 0, "max_reply_mb")
    requires = _requirements(err, job, path)
    job_input = _input(err, inp, path)
    if output is None:
        raw = out.get("path", f"{name}.results.json")
        if not isinstance(raw, str) or not raw:
            raise err(f"[output] path must be a file path string, not {raw!r}.", "output", 0, "path")
        output = Path(raw)
    return JobSpec(path=path, name=name, function=function, mode=mode, files=tuple(file_paths),
                   chunk_size=chunk_size, retries=retries, timeout=float(timeout), reduce=reduce,
                   input=job_input, output=output, result_types=tuple(result_types),
                   max_reply_mb=float(max_reply_mb), requires=requires)


def _requirements(err: Located, job: Dict[str, Any], path: Path) -> Tuple[str, ...]:
    """[job] requires = ["numpy>=1.26"] or requirements = "requirements.txt" (one requirement a line, # comments),
    each a PEP 508 requirement."""
    if "requires" in job and "requirements" in job:
        raise err("[job] takes requires = [...] or requirements = \"requirements.txt\", not both.", "job", 0,
                  "requirements")
    if "requirements" in job:
        raw = job["requirements"]
        if not isinstance(raw, str):
            raise err(f"[job] requirements must be a file path string, not {raw!r}.", "job", 0, "requirements")
        file_path = (path.parent / raw).resolve()
        try:
            text = file_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise err(f"[job] requirements {raw!r} cannot be read ({exc.strerror or exc}).", "job", 0,
                      "requirements") from None
        lines = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), 1)]
        entries = [(f"{file_path}:{n}", line) for n, line in lines if line]
        key = "requirements"
    else:
        listed = job.get("requires", [])
        if not isinstance(listed, list) or not all(isinstance(r, str) for r in listed):
            raise err(f"[job] requires must be a list of requirement strings like [\"numpy>=1.26\"], not {listed!r}.",
                      "job", 0, "requires")
        entries = [("[job] requires", r.strip()) for r in listed]
        key = "requires"
    for where, line in entries:
        problem = requirement_problem(line)
        if problem:
            raise err(f"{where}: {problem}", "job", 0, key)
    return tuple(line for _, line in entries)


def requirement_problem(line: str) -> str:
    """Why `line` cannot be one of a job's requirements, as a sentence; "" when it can."""
    from packaging.requirements import InvalidRequirement, Requirement  # only jobs with requirements load it

    if line.startswith("-"):
        return (f"{line!r} is a pip option; only requirements are read here (name the index or a wheelhouse "
                "folder in the inventory's [packages] table).")
    try:
        requirement = Requirement(line)
    except InvalidRequirement as exc:
        return f"{line!r} is not a requirement ({exc}); write it like \"numpy>=1.26\"."
    if requirement.url:
        return (f"{line!r} names a URL; nodes get wheels resolved by name and version (put the wheel in the "
                "inventory's wheelhouse folder and name it here).")
    return ""


def _is_ref(value: str) -> bool:
    module, sep, attr = value.partition(":")
    return bool(sep) and all(p.isidentifier() for p in module.split(".") + attr.split("."))


def _table(err: Located, data: Dict[str, Any], name: str, keys: set, required: bool) -> Dict[str, Any]:
    table = data.get(name)
    if table is None:
        if required:
            raise err(f"the job file has no [{name}] table.")
        return {}
    if not isinstance(table, dict):
        raise err(f"{name!r} must be a table: [{name}].", None, 0, name)
    for key in table:
        if key not in keys:
            raise err(f"unknown key {key!r} in [{name}]; known keys: {', '.join(sorted(keys))}.", name, 0, key)
    return table


def _input(err: Located, inp: Dict[str, Any], path: Path) -> JobInput:
    given = [k for k in ("range", "items", "file") if k in inp]
    if len(given) != 1:
        raise err("[input] needs exactly one of range = [start, stop, step], items = [...] "
                  "or file = \"inputs.txt\".", "input")
    if "range" in inp:
        bounds = inp["range"]
        if (not isinstance(bounds, list) or len(bounds) not in (2, 3)
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
            raise err(f"[input] range must be [start, stop] or [start, stop, step] integers, not {bounds!r}.",
                      "input", 0, "range")
        start, stop, step = (bounds + [1])[:3]
        if step == 0:
            raise err("[input] range step must not be 0.", "input", 0, "range")
        if not len(range(start, stop, step)):
            raise err(f"[input] range {bounds!r} holds no items.", "input", 0, "range")
        return JobInput(range=(start, stop, step), source=f"range {bounds}")
    if "items" in inp:
        items = inp["items"]
        if not isinstance(items, list) or not items:
            raise err("[input] items must be a non-empty list.", "input", 0, "items")
        return JobInput(items=tuple(items), source=f"items {json.dumps(items, default=str)}")
    raw = inp["file"]
    if not isinstance(raw, str):
        raise err(f"[input] file must be a path string, not {raw!r}.", "input", 0, "file")
    file_path = (path.parent / raw).resolve()
    try:
        lines = [line.strip() for line in file_path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise err(f"[input] file {raw!r} cannot be read ({exc.strerror or exc}).", "input", 0, "file") from None
    items_from_file = tuple(line for line in lines if line)
    if not items_from_file:
        raise err(f"[input] file {raw!r} holds no items (one item a line).", "input", 0, "file")
    digest = sha256("\n".join(items_from_file).encode()).hexdigest()[:16]
    return JobInput(items=items_from_file, source=f"file {file_path} {digest}")


