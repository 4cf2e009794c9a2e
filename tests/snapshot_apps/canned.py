"""Canned, deterministic cluster snapshots for the dashboard tests: three nodes and a running job.

ws-1 is a busy Linux x86_64 server, pi-3 a lost Raspberry Pi (armv7l) with an
error sentence, win-1 a Windows PC whose chunk 17 failed. Pure data; used by
`tests/snapshot_apps/dashboard.py` and the `tests/test_tui_*.py` modules.
"""

from __future__ import annotations

from console.snapshot import ChunkRecord, ClusterSnapshot, FailureRecord, JobSnapshot, NodeSnapshot

T0 = 1_700_000_000.0
"""Wall-clock time of the canned snapshot."""

TRACEBACK = """Traceback (most recent call last):
  File "C:\\Users\\op\\AppData\\Local\\cluster-console\\bundle\\nodeagent\\pool.py", line 88, in run_chunk
    results = [fn(item) for item in items]
  File "C:\\Users\\op\\AppData\\Local\\cluster-console\\bundle\\jobs\\factor.py", line 42, in factor
    return n // (d - d)
ZeroDivisionError: integer division or modulo by zero [chunk 17]
"""

WS1 = NodeSnapshot(
    name="ws-1",
    transport="ssh",
    address="10.0.0.11:22",
    tags=("linux", "fast"),
    state="busy",
    os="linux",
    arch="x86_64",
    python="3.11.7",
    cores=8,
    workers=8,
    workers_busy=7,
    cpu_percent=87.5,
    cpu_per_core=(95.0, 91.0, 88.0, 97.0, 76.0, 99.0, 82.0, 72.0),
    cpu_history=tuple(float(min(100, 4 * i) if i < 30 else 95 - (i % 6) * 4) for i in range(60)),
    mem_percent=41.0,
    mem_used=6_871_947_674,
    mem_total=17_179_869_184,
    load=(7.9, 7.52, 6.81),
    metrics_source="psutil",
    in_flight=14,
    chunks_done=42,
    items_done=42_000,
    errors=0,
    items_per_s=1234.5,
    busy_seconds=311.0,
    recent_chunks=(
        ChunkRecord(chunk=39, items=1000, seconds=7.41, outcome="done"),
        ChunkRecord(chunk=40, items=1000, seconds=7.02, outcome="done"),
        ChunkRecord(chunk=41, items=1000, seconds=7.88, outcome="done"),
        ChunkRecord(chunk=44, items=1000, seconds=7.19, outcome="duplicate"),
    ),
    log=(
        "agent 0.1.0 on ws-1: python 3.11.7, 8 workers, psutil 5.9.8",
        "serving rpyc on stdin/stdout",
        "pool: started 8 workers (fork)",
        "chunk 41 done in 7.88 s",
    ),
)

PI3 = NodeSnapshot(
    name="pi-3",
    transport="ssh",
    address="10.0.0.23:22",
    tags=("pi", "arm"),
    state="lost",
    error="pi-3 (10.0.0.23:22): no answer within 10 s (attempt 2 of 3).",
    os="linux",
    arch="armv7l",
    python="3.9.2",
    cores=4,
    workers=4,
    workers_busy=0,
    cpu_percent=None,
    cpu_per_core=None,
    cpu_history=(55.0, 60.0, 58.0, 61.0, 12.0),
    metrics_source="fallback",
    chunks_done=3,
    items_done=3_000,
    errors=0,
    items_per_s=0.0,
    log=("agent 0.1.0 on pi-3: python 3.9.2, 4 workers, no psutil (fallback metrics)",),
)

WIN1 = NodeSnapshot(
    name="win-1",
    transport="ssh",
    address="10.0.0.31:22",
    tags=("windows",),
    state="ready",
    os="windows",
    arch="AMD64",
    python="3.12.1",
    cores=4,
    workers=4,
    workers_busy=2,
    cpu_percent=48.0,
    cpu_per_core=(52.0, 40.0, 61.0, 39.0),
    cpu_history=tuple(float(40 + (i % 5) * 3) for i in range(60)),
    mem_percent=63.0,
    mem_used=5_411_658_793,
    mem_total=8_589_934_592,
    metrics_source="psutil",
    in_flight=4,
    chunks_done=19,
    items_done=19_000,
    errors=1,
    items_per_s=402.0,
    recent_chunks=(
        ChunkRecord(chunk=16, items=1000, seconds=9.9, outcome="done"),
        ChunkRecord(chunk=17, items=1000, seconds=0.12, outcome="failed"),
    ),
    log=("agent 0.1.0 on win-1: python 3.12.1, 4 workers (spawn)",),
)

FAILURE = FailureRecord(
    chunk=17,
    node="win-1",
    error="ZeroDivisionError: integer division or modulo by zero [chunk 17]",
    traceback=TRACEBACK,
    attempt=1,
    final=False,
    t=T0 - 30.0,
)

JOB = JobSnapshot(
    name="factor-primes",
    status="running",
    items_total=100_000,
    items_done=64_000,
    chunks_total=100,
    chunks_queued=18,
    chunks_in_flight=18,
    chunks_done=64,
    chunks_failed=0,
    elapsed_s=125.0,
    items_per_s=1636.5,
    eta_s=22.0,
    output_path="results/factor-primes.jsonl",
    history=tuple((float(t), 1650.0 * min(t, 20) / 20 + (90.0 if t % 7 == 0 else 0.0), min(35.0 + 3 * t, 92.0))
                  for t in range(126)),
)

SNAPSHOT = ClusterSnapshot(t=T0, nodes=(WS1, PI3, WIN1), job=JOB, failures=(FAILURE,))
"""The canned cluster: three nodes, a running job, one failure."""
