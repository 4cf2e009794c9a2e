"""The scheduler as a pure state machine: events in, exact instruction lists out.

Modelled on dask's `distributed/tests/test_worker_state_machine.py`: every test
builds events, calls `Scheduler.handle` and asserts what comes back; the fixtures
run `validate()` at teardown. No cluster, no threads, no clock: time is the `t=`
on each event. A seeded random test drives long interleavings at the end.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from console.scheduler import (
    Cancel, ChunkAdded, ChunkFailed, ChunkFinished, ChunkGivenUp, ChunkOrder, Event, Failure, InputClosed,
    Instruction, InvalidTransition, JobCancelled, JobEnded, Journal, NodeDraining, NodeJoined, NodeLost, Scheduler,
    SendChunks, Tick,
)

WS1, PI3, WIN1 = "ws-1", "pi-3", "win-1"


@pytest.fixture
def make() -> Iterator[Callable[..., Scheduler]]:
    """make(total_items=100, chunk_size=10, **options): a fresh scheduler, validated at teardown."""
    made: List[Scheduler] = []

    def make_scheduler(total_items: int = 100, chunk_size: Optional[int] = 10, **options: object) -> Scheduler:
        scheduler = Scheduler(total_items, chunk_size, **options)  # type: ignore[arg-type]
        made.append(scheduler)
        return scheduler

    yield make_scheduler
    for scheduler in made:
        scheduler.validate()


@pytest.fixture
def s(make: Callable[..., Scheduler]) -> Scheduler:
    """100 items in chunks of 10, retries=2, prefetch=2: the usual job."""
    return make()


def order(chunk: int, attempt: int = 1, size: int = 10) -> ChunkOrder:
    """The order for chunk `chunk` of a job cut in fixed chunks of `size` (no resume)."""
    return ChunkOrder(chunk, attempt, chunk * size, size)


def done(chunk: int, node: str, size: int = 10) -> Journal:
    """The Journal instruction for the result `finished(...)` returns by default."""
    return Journal(chunk, chunk * size, size, node, b"r%d" % chunk)


def finished(chunk: int, node: str, t: float = 0.0, attempt: int = 1, seconds: float = 1.0) -> ChunkFinished:
    return ChunkFinished.dummy(chunk, node, attempt, result=b"r%d" % chunk, seconds=seconds, t=t)


def journals(instructions: Sequence[Instruction]) -> List[int]:
    return [i.chunk for i in instructions if isinstance(i, Journal)]


# -- credit ----------------------------------------------------------------------------

def test_credit_fills_workers_times_prefetch_in_one_send(s: Scheduler) -> None:
    """ws-1 comes up with 2 workers; prefetch 2 gives it 4 chunks in a single call, then nothing more."""
    assert s.handle(NodeJoined(WS1, 2)) == [SendChunks(WS1, (order(0), order(1), order(2), order(3)))]
    assert s.nodes[WS1].credit == 0
    assert s.counts["sent"] == 4
    assert s.handle(Tick(1.0)) == []


def test_each_result_frees_one_credit_for_exactly_one_new_chunk(s: Scheduler) -> None:
    """ws-1 (1 worker) holds chunks 0 and 1; each result it returns buys it exactly one more chunk."""
    assert s.handle(NodeJoined(WS1, 1)) == [SendChunks(WS1, (order(0), order(1)))]
    assert s.handle(finished(0, WS1, t=1)) == [done(0, WS1), SendChunks(WS1, (order(2),))]
    assert s.handle(finished(1, WS1, t=2)) == [done(1, WS1), SendChunks(WS1, (order(3),))]
    assert s.nodes[WS1].held == {2, 3}
    assert s.nodes[WS1].credit == 0


def test_two_results_in_one_batch_come_back_as_one_send(s: Scheduler) -> None:
    """ws-1 returns chunks 0 and 1 in one collect; the cluster gets both journals, then one SendChunks of 2."""
    s.handle(NodeJoined(WS1, 1))
    assert s.handle(finished(0, WS1, t=1), finished(1, WS1, t=1)) == [
        done(0, WS1), done(1, WS1), SendChunks(WS1, (order(2), order(3))),
    ]


class SimCluster:
    """Nodes that run what they are sent, FIFO on `workers` slots, at `s_per_item` each; time is simulated.

    It carries out SendChunks and Cancel like cluster.py does, returns results in
    time order and ticks every `tick` seconds, until the scheduler ends the job.
    """

    def __init__(self, scheduler: Scheduler, speeds: Dict[str, Tuple[int, float]], tick: float = 0.25) -> None:
        self.s = scheduler
        self.speeds = speeds
        self.tick = tick
        self.now = 0.0
        self.waiting: Dict[str, deque] = {name: deque() for name in speeds}
        self.running: Dict[str, Dict[int, ChunkOrder]] = {name: {} for name in speeds}
        self.heap: List[Tuple[float, int, str, ChunkOrder]] = []
        self.seq = 0
        self.journal: Counter = Counter()
        self.ended: List[str] = []

    def feed(self, *events: Event) -> None:
        out = self.s.handle(*events)
        self.s.validate()
        for instruction in out:
            if isinstance(instruction, SendChunks):
                self.waiting[instruction.node].extend(instruction.chunks)
            elif isinstance(instruction, Cancel):
                dropped = set(instruction.chunks)
                self.waiting[instruction.node] = deque(
                    o for o in self.waiting[instruction.node] if o.chunk not in dropped)
                for chunk in dropped:
                    self.running[instruction.node].pop(chunk, None)
            elif isinstance(instruction, Journal):
                self.journal[instruction.chunk] += 1
            elif isinstance(instruction, JobEnded):
                self.ended.append(instruction.status)
        for name, (workers, s_per_item) in self.speeds.items():
            while self.waiting[name] and len(self.running[name]) < workers:
                o = self.waiting[name].popleft()
                self.running[name][o.chunk] = o
                self.seq += 1
                heapq.heappush(self.heap, (self.now + o.count * s_per_item, self.seq, name, o))

    def run(self, max_steps: int = 100_000) -> None:
        self.feed(*(NodeJoined(name, workers, 0.0) for name, (workers, _) in self.speeds.items()))
        next_tick = self.tick
        for _ in range(max_steps):
            if self.s.status != "running":
                return
            if self.heap and self.heap[0][0] <= next_tick:
                self.now, _, name, o = heapq.heappop(self.heap)
                if self.running[name].get(o.chunk) != o:
                    continue  # cancelled while it ran
                del self.running[name][o.chunk]
                seconds = o.count * self.speeds[name][1]
                self.feed(ChunkFinished(name, o.chunk, o.attempt, b"r%d" % o.chunk, seconds, self.now))
            else:
                self.now = next_tick
                next_tick += self.tick
                self.feed(Tick(self.now))
        raise AssertionError(f"job still {self.s.status} after {max_steps} steps")


def test_fast_node_ends_up_with_more_chunks_than_slow_node(make: Callable[..., Scheduler]) -> None:
    """ws-1 is five times faster per item than pi-3, same worker count; credit alone gives ws-1 most chunks."""
    s = make(total_items=1000, chunk_size=10)
    sim = SimCluster(s, {WS1: (1, 0.01), PI3: (1, 0.05)})
    sim.run()
    assert sim.ended == ["ok"]
    assert set(sim.journal.values()) == {1} and len(sim.journal) == 100
    fast, slow = s.nodes[WS1].chunks_done, s.nodes[PI3].chunks_done
    assert fast + slow == 100
    assert fast > 3 * slow, (fast, slow)


# -- chunk cutting --------------------------------------------------------------------

def test_fixed_chunk_size_cuts_even_chunks_and_a_shorter_last_one(make: Callable[..., Scheduler]) -> None:
    """25 items in chunks of 10: 0-9, 10-19, 20-24; chunks_total is known before anything is cut."""
    s = make(total_items=25, chunk_size=10)
    assert (s.chunks_total, s.queued) == (3, 3)
    assert s.handle(NodeJoined(WS1, 2)) == [
        SendChunks(WS1, (ChunkOrder(0, 1, 0, 10), ChunkOrder(1, 1, 10, 10), ChunkOrder(2, 1, 20, 5))),
    ]
    assert (s.chunks_total, s.queued, len(s.chunks)) == (3, 0, 3)


def test_auto_chunk_sizes_double_from_one_until_a_result_is_measured(make: Callable[..., Scheduler]) -> None:
    """chunk_size "auto": before any result ws-1's 8 credits get chunks of 1, 2, 4, ... capped at 64."""
    s = make(total_items=10_000, chunk_size=None)
    assert s.chunks_total is None
    [send] = s.handle(NodeJoined(WS1, 4))
    assert isinstance(send, SendChunks)
    assert [o.count for o in send.chunks] == [1, 2, 4, 8, 16, 32, 64, 64]
    assert [o.start for o in send.chunks] == [0, 1, 3, 7, 15, 31, 63, 127]
    assert s.chunks_total is None and s.queued == 0


def test_auto_chunk_size_follows_measured_seconds_per_item(make: Callable[..., Scheduler]) -> None:
    """Chunk 0 (1 item) takes 25 ms, so the next chunk is 0.5 s / 25 ms = 20 items; chunk 1 (2 items, 130 ms)
    moves the running averages to 46 ms for 1.2 items, 38.3 ms an item, and the next chunk to 13 items."""
    s = make(total_items=10_000, chunk_size=None, prefetch=2, target_chunk_s=0.5)
    assert s.handle(NodeJoined(WS1, 1)) == [SendChunks(WS1, (ChunkOrder(0, 1, 0, 1), ChunkOrder(1, 1, 1, 2)))]
    assert s.handle(ChunkFinished.dummy(0, WS1, result=b"a", seconds=0.025, t=1)) == [
        Journal(0, 0, 1, WS1, b"a"), SendChunks(WS1, (ChunkOrder(2, 1, 3, 20),)),
    ]
    assert s.handle(ChunkFinished.dummy(1, WS1, result=b"b", seconds=0.13, t=2)) == [
        Journal(1, 1, 2, WS1, b"b"), SendChunks(WS1, (ChunkOrder(3, 1, 23, 13),)),
    ]


def test_auto_chunk_size_shares_the_remaining_items_down_to_the_finest_tail_chunk(
        make: Callable[..., Scheduler]) -> None:
    """An item takes 30 ms, so 5 s would be 166 items, but with 100 items and one worker each new chunk is at
    most ceil(remaining / 2): the tail gets finer instead of one node taking it all, down to TAIL_SHARE of the
    target's work (0.25 s, 8 items; finer, the tail would be a round trip every few items)."""
    s = make(total_items=100, chunk_size=None, prefetch=1, target_chunk_s=5.0)
    out = s.handle(NodeJoined(WS1, 1))
    sizes = []
    while s.status == "running":
        sends = [i for i in out if isinstance(i, SendChunks)]
        assert len(sends) == 1, out
        (o,) = sends[0].chunks
        sizes.append(o.count)
        out = s.handle(ChunkFinished.dummy(o.chunk, WS1, seconds=0.03 * o.count, t=len(sizes)))
    assert sizes == [1, 50, 25, 12, 8, 4]
    assert s.items_done == 100 and out[-1] == JobEnded("ok")


def test_a_node_whose_chunks_are_short_holds_more_of_them_and_fewer_again_when_they_grow(
        make: Callable[..., Scheduler]) -> None:
    """Chunks of 1 ms: ws-1 (2 workers, prefetch 2) is given enough for 20 ms a worker ahead, 21 chunks a worker;
    once its chunks take a second again, it gets none until it holds fewer than its 4 again."""
    s = make(total_items=1000, chunk_size=1, prefetch=2)
    [send] = s.handle(NodeJoined(WS1, 2))
    assert len(send.chunks) == 4
    [_, send] = s.handle(ChunkFinished.dummy(0, WS1, seconds=0.001, t=1))
    assert len(send.chunks) == 42 - 3 and len(s.nodes[WS1].held) == 42
    held = sorted(s.nodes[WS1].held)
    for chunk in held[:30]:
        out = s.handle(ChunkFinished.dummy(chunk, WS1, seconds=1.0, t=2))
        assert not any(isinstance(i, SendChunks) for i in out), "a node of slow chunks got more while it held 4"
    assert len(s.nodes[WS1].held) == 12 and s.nodes[WS1].capacity == 12
    for chunk in held[30:38]:
        s.handle(ChunkFinished.dummy(chunk, WS1, seconds=1.0, t=3))
    assert len(s.nodes[WS1].held) == 4
    [_, send] = s.handle(ChunkFinished.dummy(held[38], WS1, seconds=1.0, t=4))
    assert len(send.chunks) == 1 and len(s.nodes[WS1].held) == 4


def test_auto_chunks_are_long_once_cut_so_a_node_of_short_probe_chunks_holds_no_more_than_prefetch(
        make: Callable[..., Scheduler]) -> None:
    """chunk_size "auto" with trivial items: the probe chunks take 0.1 ms, which would earn ws-1 (2 workers)
    credit for 42, but the chunks cut next are sized for 0.5 s: it holds 4, as with long chunks, and the rest
    stays queued for the other nodes."""
    s = make(total_items=10_000_000, chunk_size=None, prefetch=2)
    [send] = s.handle(NodeJoined(WS1, 2))
    assert [o.count for o in send.chunks] == [1, 2, 4, 8]
    [_, send] = s.handle(ChunkFinished.dummy(0, WS1, seconds=0.0001, t=1))
    assert len(send.chunks) == 1 and send.chunks[0].count > 1000 and len(s.nodes[WS1].held) == 4
    assert s.nodes[WS1].capacity > 4


# -- exactly once ------------------------------------------------------------------------

def test_duplicate_result_for_a_done_chunk_is_dropped_and_logged(s: Scheduler) -> None:
    """ws-1 returns chunk 0 twice (a retransmit); only the first is journalled and counted."""
    s.handle(NodeJoined(WS1, 1))
    assert s.handle(finished(0, WS1, t=1)) == [done(0, WS1), SendChunks(WS1, (order(2),))]
    assert s.handle(finished(0, WS1, t=2)) == []
    assert s.handle(finished(0, PI3, t=3)) == []
    assert s.items_done == 10 and s.nodes[WS1].chunks_done == 1
    assert s.story(0)[-2:] == [
        (0, "dropped", "dropped", "duplicate result", WS1, 2.0),
        (0, "dropped", "dropped", "duplicate result", PI3, 3.0),
    ]


def test_node_lost_chunks_go_to_the_front_and_run_once_elsewhere(make: Callable[..., Scheduler]) -> None:
    """pi-3 drops while holding chunks 2 and 3; ws-1 gets them ahead of the uncut chunk 4, both run once
    on ws-1, and pi-3's late results (from before it dropped) are dropped."""
    s = make(total_items=60, chunk_size=10)
    assert s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1)) == [
        SendChunks(WS1, (order(0), order(1))), SendChunks(PI3, (order(2), order(3))),
    ]
    assert s.handle(NodeLost(PI3, "stream closed", t=1)) == []
    assert list(s.queue) == [2, 3] and s.counts["queued"] == 2
    assert s.handle(finished(0, WS1, t=2)) == [done(0, WS1), SendChunks(WS1, (order(2),))]
    assert s.handle(finished(2, PI3, t=2.5)) == []
    assert s.handle(finished(1, WS1, t=3)) == [done(1, WS1), SendChunks(WS1, (order(3),))]
    assert s.handle(finished(2, WS1, t=4)) == [done(2, WS1), SendChunks(WS1, (order(4),))]
    assert s.handle(ChunkFailed.dummy(3, PI3, kind="died", t=4.5)) == []
    assert s.handle(finished(3, WS1, t=5)) == [done(3, WS1), SendChunks(WS1, (order(5),))]
    assert s.chunks[2].failures == s.chunks[3].failures == 0
    assert [e[1:4] for e in s.story(2)] == [
        ("queued", "sent", "SendChunks"), ("sent", "queued", "NodeLost"), ("queued", "sent", "SendChunks"),
        ("dropped", "dropped", "result from a node that does not hold it"), ("sent", "done", "ChunkFinished"),
    ]


def test_journal_is_emitted_once_together_with_the_count(s: Scheduler) -> None:
    """ws-1 finishes chunk 0: the Journal is in the same instruction list that makes items_done move,
    ahead of any further work, and never again."""
    s.handle(NodeJoined(WS1, 1))
    assert s.items_done == 0
    out = s.handle(finished(0, WS1, t=1))
    assert out[0] == done(0, WS1)
    assert s.items_done == 10
    seen = journals(out)
    for t in range(2, 6):
        seen += journals(s.handle(finished(0, WS1, t=t), Tick(t)))
    assert seen == [0]


# -- retries ----------------------------------------------------------------------------

def test_retries_on_the_only_node_then_failed_for_good(make: Callable[..., Scheduler]) -> None:
    """ws-1 is the only node; chunk 0 raises, times out, then its worker dies: attempts 1, 2, 3 all run on
    ws-1 (timeout and died count as attempts), and with retries=2 the third failure is final, with its
    traceback kept for the failures panel."""
    s = make(total_items=10, chunk_size=10, retries=2, prefetch=1)
    assert s.handle(NodeJoined(WS1, 1)) == [SendChunks(WS1, (order(0, attempt=1),))]
    assert s.handle(ChunkFailed.dummy(0, WS1, 1, kind="error", error="ZeroDivisionError", t=1)) == [
        SendChunks(WS1, (order(0, attempt=2),)),
    ]
    assert s.handle(ChunkFailed.dummy(0, WS1, 2, kind="timeout", t=2)) == [SendChunks(WS1, (order(0, attempt=3),))]
    assert s.handle(ChunkFailed.dummy(0, WS1, 3, kind="died", error="killed", traceback="Traceback ...", t=3)) == [
        ChunkGivenUp(0, 0, 10, s.failures[-1]), JobEnded("failed"),
    ]
    assert s.chunks[0].state == "failed"
    assert [(f.attempt, f.kind, f.final) for f in s.failures] == [
        (1, "error", False), (2, "timeout", False), (3, "died", True),
    ]
    assert s.failures[-1] == Failure(0, WS1, 3, "died", "killed", "Traceback ...", True, 3.0)
    assert s.nodes[WS1].errors == 3


def test_retry_goes_to_the_node_where_it_has_not_failed(make: Callable[..., Scheduler]) -> None:
    """Chunk 0 raises on ws-1. ws-1 gets the next new chunk instead, and chunk 0's attempt 2 waits for
    pi-3's next free credit rather than running again where it just failed."""
    s = make(total_items=30, chunk_size=10, prefetch=1)
    assert s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1)) == [
        SendChunks(WS1, (order(0),)), SendChunks(PI3, (order(1),)),
    ]
    assert s.handle(ChunkFailed.dummy(0, WS1, 1, t=1)) == [SendChunks(WS1, (order(2),))]
    assert list(s.queue) == [0]
    assert s.handle(finished(1, PI3, t=2)) == [done(1, PI3), SendChunks(PI3, (order(0, attempt=2),))]
    assert s.handle(finished(0, PI3, t=3, attempt=2)) == [done(0, PI3)]
    assert s.handle(finished(2, WS1, t=4)) == [done(2, WS1), JobEnded("ok")]


def test_retry_returns_to_a_failing_node_once_every_node_failed_it(make: Callable[..., Scheduler]) -> None:
    """Chunk 0 fails on ws-1 then on pi-3: attempt 3 may go anywhere; the first node with credit takes it."""
    s = make(total_items=10, chunk_size=10, prefetch=1, retries=5)
    assert s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1)) == [SendChunks(WS1, (order(0),))]
    assert s.handle(ChunkFailed.dummy(0, WS1, 1, t=1)) == [SendChunks(PI3, (order(0, attempt=2),))]
    assert s.handle(ChunkFailed.dummy(0, PI3, 2, t=2)) == [SendChunks(WS1, (order(0, attempt=3),))]


def test_failure_from_a_node_that_does_not_hold_the_chunk_is_dropped(s: Scheduler) -> None:
    """pi-3 reports a failure for chunk 0, which ws-1 holds: nothing changes."""
    s.handle(NodeJoined(WS1, 1))
    assert s.handle(ChunkFailed.dummy(0, PI3, 1, t=1), ChunkFailed.dummy(99, WS1, 1, t=1)) == []
    assert s.chunks[0].failures == 0 and not s.failures


# -- nodes come and go ----------------------------------------------------------------------

def test_reconnect_with_the_same_name_starts_with_fresh_credit(make: Callable[..., Scheduler]) -> None:
    """pi-3 drops holding chunks 2 and 3 and comes back (same name, now 2 workers): it starts from a full
    credit of 4 and takes its old chunks first; its totals survive the reconnect."""
    s = make(total_items=100, chunk_size=10)
    s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1))
    s.handle(finished(2, PI3, t=1))  # pi-3 now holds 3 and 4
    assert s.nodes[PI3].held == {3, 4}
    assert s.handle(NodeLost(PI3, t=2)) == []
    assert s.nodes[PI3].credit == 0
    assert s.handle(NodeJoined(PI3, 2, t=3)) == [SendChunks(PI3, (order(3), order(4), order(5), order(6)))]
    assert s.nodes[PI3].capacity == 4 and s.nodes[PI3].chunks_done == 1


def test_rejoin_without_a_lost_event_takes_back_what_it_held(make: Callable[..., Scheduler]) -> None:
    """ws-1's agent restarts and says hello again without a NodeLost first: what it held returns to the
    queue and comes straight back to it with the new credit."""
    s = make(total_items=100, chunk_size=10)
    s.handle(NodeJoined(WS1, 1))
    s.handle(finished(0, WS1, t=1))  # holds 1 and 2
    assert s.handle(NodeJoined(WS1, 2, t=2)) == [SendChunks(WS1, (order(1), order(2), order(3), order(4)))]
    assert s.nodes[WS1].chunks_done == 1


def test_draining_node_finishes_what_it_holds_and_gets_nothing_new(make: Callable[..., Scheduler]) -> None:
    """The operator drains pi-3 while it holds chunks 2 and 3: both still count, no new chunk goes to it,
    and ws-1 keeps being fed."""
    s = make(total_items=60, chunk_size=10)
    s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1))
    assert s.handle(NodeDraining(PI3, t=1)) == []
    assert s.handle(finished(2, PI3, t=2)) == [done(2, PI3)]
    assert s.nodes[PI3].credit == 0
    assert s.handle(finished(0, WS1, t=3)) == [done(0, WS1), SendChunks(WS1, (order(4),))]
    assert s.handle(finished(3, PI3, t=4), Tick(10)) == [done(3, PI3)]
    assert s.nodes[PI3].held == set()


# -- the tail ---------------------------------------------------------------------------------

def test_tail_copy_on_idle_node_wins_and_late_original_is_dropped(make: Callable[..., Scheduler]) -> None:
    """Three chunks of 1 item on ws-1, pi-3, win-1. ws-1 finishes in 1 s; pi-3 and win-1 are slow. Nothing is
    queued, so once pi-3's chunk has been out twice the usual time, ws-1 gets a copy; ws-1's copy wins,
    pi-3 is told to cancel, its late result is dropped; ws-1 then copies win-1's chunk the same way."""
    s = make(total_items=3, chunk_size=1, prefetch=1)
    assert s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1), NodeJoined(WIN1, 1)) == [
        SendChunks(WS1, (order(0, size=1),)), SendChunks(PI3, (order(1, size=1),)),
        SendChunks(WIN1, (order(2, size=1),)),
    ]
    assert s.handle(finished(0, WS1, t=1, seconds=1)) == [done(0, WS1, size=1)]
    assert s.handle(Tick(1.9)) == []  # out 1.9 s, usual 1 s: not yet
    assert s.handle(Tick(2.5)) == [SendChunks(WS1, (order(1, size=1),))]
    assert set(s.chunks[1].holders) == {PI3, WS1} and s.chunks[1].state == "sent"
    assert s.handle(finished(1, WS1, t=3, seconds=0.5)) == [
        Cancel(PI3, (1,)), done(1, WS1, size=1), SendChunks(WS1, (order(2, size=1),)),
    ]
    assert s.nodes[PI3].held == set()
    assert s.handle(finished(1, PI3, t=3.2)) == []
    assert s.handle(finished(2, WIN1, t=4)) == [Cancel(WS1, (2,)), done(2, WIN1, size=1), JobEnded("ok")]
    assert s.items_done == 3 and s.nodes[WS1].chunks_done == 2 and s.nodes[PI3].chunks_done == 0


def test_tail_chunks_queued_on_a_node_still_answering_are_not_copied(make: Callable[..., Scheduler]) -> None:
    """pi-3 holds three chunks queued on its one worker, out longer than twice the usual, but it answers one
    every half second: it works through them, and idle ws-1 gets a copy only once pi-3 has been silent as long."""
    s = make(total_items=6, chunk_size=1, prefetch=3)
    s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1))
    for chunk in (0, 1, 2):
        s.handle(finished(chunk, WS1, t=0.1, seconds=0.1))
    assert s.handle(finished(3, PI3, t=0.45, seconds=0.45), Tick(0.8)) == [done(3, PI3, size=1)]
    assert s.handle(finished(4, PI3, t=0.9, seconds=0.45), Tick(1.3)) == [done(4, PI3, size=1)]
    assert s.handle(Tick(1.5)) == [SendChunks(WS1, (order(5, size=1),))]


def test_tail_original_wins_and_the_copy_is_cancelled(make: Callable[..., Scheduler]) -> None:
    """pi-3 is slow on chunk 1 and ws-1 gets a copy, but pi-3 answers first: ws-1's copy is cancelled."""
    s = make(total_items=2, chunk_size=1, prefetch=1)
    s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1))
    s.handle(finished(0, WS1, t=1, seconds=1))
    assert s.handle(Tick(3)) == [SendChunks(WS1, (order(1, size=1),))]
    assert s.handle(finished(1, PI3, t=3.5)) == [Cancel(WS1, (1,)), done(1, PI3, size=1), JobEnded("ok")]


def test_tail_copy_failing_leaves_the_original_running(make: Callable[..., Scheduler]) -> None:
    """ws-1's tail copy of chunk 1 raises; pi-3's original still runs, no attempt is used up, and ws-1 is not
    given that chunk again."""
    s = make(total_items=2, chunk_size=1, prefetch=1)
    s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1))
    s.handle(finished(0, WS1, t=1, seconds=1))
    assert s.handle(Tick(3)) == [SendChunks(WS1, (order(1, size=1),))]
    assert s.handle(ChunkFailed.dummy(1, WS1, 1, t=3.5)) == []
    assert s.handle(Tick(30)) == []
    assert (s.chunks[1].state, s.chunks[1].failures, list(s.chunks[1].holders)) == ("sent", 0, [PI3])
    assert [f.final for f in s.failures] == [False]
    assert s.handle(finished(1, PI3, t=31)) == [done(1, PI3, size=1), JobEnded("ok")]


# -- the job's end --------------------------------------------------------------------------------

def test_job_cancelled_cancels_every_chunk_in_flight_and_ignores_the_rest(make: Callable[..., Scheduler]) -> None:
    """The operator cancels while ws-1 holds chunks 1 and 4 and pi-3 holds 2 and 3: one Cancel per node,
    JobEnded("cancelled"), and whatever arrives afterwards changes nothing."""
    s = make(total_items=100, chunk_size=10)
    s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1))
    s.handle(finished(0, WS1, t=1))
    assert s.handle(JobCancelled(t=2)) == [Cancel(WS1, (1, 4)), Cancel(PI3, (2, 3)), JobEnded("cancelled")]
    assert s.status == "cancelled"
    assert (s.counts["done"], s.counts["cancelled"], s.chunks_total) == (1, 4, 5)
    assert s.handle(finished(1, WS1, t=3), ChunkFailed.dummy(2, PI3, t=3), Tick(9), NodeJoined(WIN1, 4, t=9),
                    NodeLost(PI3, t=10), JobCancelled(t=11)) == []
    assert s.items_done == 10


def test_job_ends_ok_exactly_once(make: Callable[..., Scheduler]) -> None:
    """ws-1 returns both chunks of a 20-item job: JobEnded("ok") once, nothing after."""
    s = make(total_items=20, chunk_size=10)
    s.handle(NodeJoined(WS1, 1))
    assert s.handle(finished(0, WS1, t=1)) == [done(0, WS1)]
    assert s.handle(finished(1, WS1, t=2)) == [done(1, WS1), JobEnded("ok")]
    assert s.handle(Tick(3)) == []
    assert s.handle(finished(1, WS1, t=4), NodeJoined(PI3, 2, t=4)) == []
    assert s.status == "ok"


def test_job_ends_failed_when_a_chunk_failed_for_good(make: Callable[..., Scheduler]) -> None:
    """retries=0: chunk 0 raises once and is failed; when chunk 1 is done the job ends "failed"."""
    s = make(total_items=20, chunk_size=10, retries=0)
    s.handle(NodeJoined(WS1, 1))
    assert s.handle(ChunkFailed.dummy(0, WS1, traceback="tb", t=1)) == [ChunkGivenUp(0, 0, 10, s.failures[-1])]
    assert s.chunks[0].state == "failed" and s.failures[-1].final
    assert s.handle(finished(1, WS1, t=2)) == [done(1, WS1), JobEnded("failed")]


# -- resume ------------------------------------------------------------------------------------------

def test_resume_skips_done_ranges_and_keeps_chunk_boundaries(make: Callable[..., Scheduler]) -> None:
    """An earlier run journalled items 0-9 and 20-29 of 45 (chunks of 10): the rest is cut at the same
    boundaries as before, 10-19, 30-39, 40-44, and chunks_total counts only those."""
    s = make(total_items=45, chunk_size=10, done_ranges=[(20, 10), (0, 10)])
    assert (s.resumed_items, s.chunks_total, s.queued) == (20, 3, 3)
    assert s.handle(NodeJoined(WS1, 2)) == [
        SendChunks(WS1, (ChunkOrder(0, 1, 10, 10), ChunkOrder(1, 1, 30, 10), ChunkOrder(2, 1, 40, 5))),
    ]
    assert (s.chunks_total, s.queued) == (3, 0)
    out = s.handle(*(ChunkFinished.dummy(c, WS1, t=1) for c in range(3)))
    assert out[-1] == JobEnded("ok") and s.items_done == 25


def test_resume_with_everything_done_ends_at_once(make: Callable[..., Scheduler]) -> None:
    """Every item was journalled before: the first event ends the job; nothing is sent."""
    s = make(total_items=30, chunk_size=10, done_ranges=[(0, 10), (10, 10), (20, 10)])
    assert (s.chunks_total, s.queued) == (0, 0)
    assert s.handle(Tick(0)) == [JobEnded("ok")]


def test_resume_auto_sized_chunks_stop_at_a_done_range(make: Callable[..., Scheduler]) -> None:
    """Auto chunk sizes never swallow items an earlier run journalled (3-9 here)."""
    s = make(total_items=20, chunk_size=None, done_ranges=[(3, 7)])
    [send] = s.handle(NodeJoined(WS1, 2))
    assert [(o.start, o.count) for o in send.chunks] == [(0, 1), (1, 2), (10, 4), (14, 6)]


# -- story and illegal moves --------------------------------------------------------------------------

def test_story_shows_every_move_of_one_chunk(s: Scheduler) -> None:
    """Chunk 0 goes to ws-1, ws-1 drops, it goes to pi-3 and is done there."""
    s.handle(NodeJoined(WS1, 1, t=0))
    s.handle(NodeLost(WS1, "reset", t=1))
    s.handle(NodeJoined(PI3, 1, t=2))
    s.handle(finished(0, PI3, t=3))
    assert s.story(0) == [
        (0, "queued", "sent", "SendChunks", WS1, 0.0),
        (0, "sent", "queued", "NodeLost", WS1, 1.0),
        (0, "queued", "sent", "SendChunks", PI3, 2.0),
        (0, "sent", "done", "ChunkFinished", PI3, 3.0),
    ]


def test_illegal_transition_raises_with_the_story(s: Scheduler) -> None:
    """A done chunk asked back to the queue is a scheduler bug: the error names the move and the story."""
    s.handle(NodeJoined(WS1, 1))
    s.handle(finished(0, WS1, t=1))
    with pytest.raises(InvalidTransition) as info:
        s._transition(s.chunks[0], "queued", "NodeLost", WS1, 2.0)
    message = str(info.value)
    assert "chunk 0: done -> queued on NodeLost from ws-1 is not allowed" in message
    assert repr(s.story(0)) in message and "'sent', 'done', 'ChunkFinished'" in message
    assert s.chunks[0].state == "done"


# -- random interleavings ------------------------------------------------------------------------------

def _random_done_ranges(rng: random.Random, total: int, chunk_size: Optional[int]) -> List[Tuple[int, int]]:
    """Ranges an earlier run could have journalled: whole fixed chunks, or any disjoint ranges for auto."""
    if rng.random() < 0.5:
        return []
    ranges = []
    if chunk_size is not None:
        for start in range(0, total, chunk_size):
            if rng.random() < 0.3:
                ranges.append((start, min(chunk_size, total - start)))
        return ranges
    pos = 0
    while pos < total:
        pos += rng.randint(0, 20)
        count = min(rng.randint(1, 15), total - pos)
        if count > 0 and rng.random() < 0.5:
            ranges.append((pos, count))
        pos += max(count, 1)
    return ranges


@pytest.mark.parametrize("seed", range(60))
def test_random_interleavings_count_every_chunk_exactly_once(seed: int) -> None:
    """Up to four nodes finish, fail, drop, rejoin, drain and send stale results in a seeded random order;
    validate() holds after every call, each done chunk is journalled once, and the job ends once."""
    rng = random.Random(seed)
    total = rng.randint(1, 150)
    chunk_size = rng.choice([None, 1, 3, 7, 10, 50])
    retries = rng.randint(0, 3)
    done_ranges = _random_done_ranges(rng, total, chunk_size)
    s = Scheduler(total, chunk_size, retries=retries, prefetch=rng.randint(1, 3), done_ranges=done_ranges,
                  target_chunk_s=0.3)
    names = [f"n{i}" for i in range(rng.randint(1, 4))]
    journal: Counter = Counter()
    ended: List[str] = []
    t = 0.0

    def feed(*events: Event) -> List[Instruction]:
        out = s.handle(*events)
        s.validate()
        for instruction in out:
            if isinstance(instruction, Journal):
                chunk = s.chunks[instruction.chunk]
                assert chunk.state == "done"
                assert (instruction.start, instruction.count) == (chunk.start, chunk.count)
                journal[instruction.chunk] += 1
            elif isinstance(instruction, SendChunks):
                tally = s.nodes[instruction.node]
                assert tally.alive and not tally.draining
                assert len({o.chunk for o in instruction.chunks}) == len(instruction.chunks)
                for o in instruction.chunks:
                    assert o.chunk in tally.held and o.attempt == s.chunks[o.chunk].attempt
            elif isinstance(instruction, Cancel):
                assert all(c not in s.nodes[instruction.node].held for c in instruction.chunks)
            elif isinstance(instruction, JobEnded):
                ended.append(instruction.status)
                assert instruction.status == s.status
        # a result is journalled in the same call that counts it
        assert s.items_done == sum(s.chunks[c].count for c in journal)
        return out

    feed(*(NodeJoined(name, rng.randint(1, 3), t) for name in names))
    for _ in range(5000):
        if s.status != "running":
            break
        t += rng.random() * 0.4
        held = [(name, c) for name, tally in s.nodes.items() for c in sorted(tally.held)]
        roll = rng.random()
        if roll < 0.45 and held:
            name, c = rng.choice(held)
            feed(ChunkFinished(name, c, s.chunks[c].attempt, b"v", rng.random(), t))
        elif roll < 0.58 and held:
            name, c = rng.choice(held)
            kind = rng.choice(["error", "timeout", "died"])
            feed(ChunkFailed(name, c, s.chunks[c].attempt, kind, "boom", "tb", rng.random(), t))
        elif roll < 0.63:
            feed(NodeLost(rng.choice(names), "gone", t))
        elif roll < 0.70:
            feed(NodeJoined(rng.choice(names), rng.randint(1, 3), t))
        elif roll < 0.72:
            feed(NodeDraining(rng.choice(names), t))
        elif roll < 0.82 and s.chunks:
            name, c = rng.choice(names), rng.choice(list(s.chunks))
            tally = s.nodes.get(name)
            if tally is None or c not in tally.held:  # a late or stray report: it must change nothing
                before = (s.counts["done"], s.counts["failed"], s.items_done, len(s.failures), s.chunks[c].failures)
                event = rng.choice([ChunkFinished(name, c, 1, b"late", 0.1, t), ChunkFailed(name, c, 1, t=t)])
                assert not journals(feed(event))
                after = (s.counts["done"], s.counts["failed"], s.items_done, len(s.failures), s.chunks[c].failures)
                assert after == before
        else:
            feed(Tick(t))
        if s.status == "running" and not any(n.alive and not n.draining for n in s.nodes.values()):
            feed(NodeJoined(rng.choice(names), rng.randint(1, 3), t))
    assert s.status in ("ok", "failed"), f"seed {seed}: still {s.status}, counts {s.counts}"
    assert ended == [s.status]
    assert all(c.state in ("done", "failed") for c in s.chunks.values())
    done_ids = {c.id for c in s.chunks.values() if c.state == "done"}
    assert set(journal) == done_ids and set(journal.values()) <= {1}
    assert s.items_done == sum(s.chunks[c].count for c in done_ids)
    failed_ids = {c.id for c in s.chunks.values() if c.state == "failed"}
    assert (s.status == "failed") == bool(failed_ids)
    assert Counter(f.chunk for f in s.failures if f.final) == Counter(failed_ids)
    # the chunks and the resumed ranges tile the input exactly
    spans = sorted([(c.start, c.count) for c in s.chunks.values()] + list(done_ranges))
    pos = 0
    for start, count in spans:
        assert start == pos and count > 0, (spans, total)
        pos += count
    assert pos == total
    if chunk_size is not None:
        assert all(c.count == chunk_size or c.start + c.count == total for c in s.chunks.values())


def test_result_of_a_stale_attempt_is_dropped(make):
    """ws-1 holds chunk 0 at attempt 2; a late answer for attempt 1 neither counts nor fails it."""
    s = make(total_items=10, chunk_size=10, retries=2)
    s.handle(NodeJoined("ws-1", 1, 0.0))
    s.handle(ChunkFailed.dummy(0, node="ws-1", attempt=1, t=1.0))
    assert s.chunks[0].attempt == 2 and s.chunks[0].state == "sent"
    assert s.handle(ChunkFinished.dummy(0, node="ws-1", attempt=1, t=2.0)) == []
    assert s.handle(ChunkFailed.dummy(0, node="ws-1", attempt=1, t=2.5)) == []
    assert s.chunks[0].state == "sent" and s.chunks[0].failures == 1
    assert [entry[3] for entry in s.story(0)][-2:] == ["result of stale attempt 1", "failure of stale attempt 1"]
    out = s.handle(ChunkFinished.dummy(0, node="ws-1", attempt=2, t=3.0))
    assert any(isinstance(i, Journal) for i in out)


def test_a_final_failure_is_not_retried_and_cancels_the_other_copy(make: Callable[..., Scheduler]) -> None:
    """pi-3 is slow on chunk 1 and ws-1 gets a tail copy; pi-3's value holds a type the job does not allow. It
    would fail the same way anywhere, so chunk 1 fails for good at once (retries left or not) and ws-1's copy
    is cancelled."""
    s = make(total_items=2, chunk_size=1, prefetch=1, retries=5)
    s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1))
    s.handle(finished(0, WS1, t=1, seconds=1))
    assert s.handle(Tick(3)) == [SendChunks(WS1, (order(1, size=1),))]
    assert s.handle(ChunkFailed.dummy(1, PI3, 1, kind="refused", error="holds a fractions:Fraction", final=True,
                                      t=3.5)) == [Cancel(WS1, (1,)), ChunkGivenUp(1, 1, 1, s.failures[-1]),
                                                  JobEnded("failed")]
    assert s.chunks[1].state == "failed" and s.chunks[1].failures == 1
    assert [(f.kind, f.final) for f in s.failures] == [("refused", True)]


# -- streaming jobs (the Python API) ------------------------------------------------------

def test_a_streaming_job_runs_the_chunks_it_is_given_and_ends_only_once_closed(
        make: Callable[..., Scheduler]) -> None:
    """Chunks of the caller's sizes (3, then 1) are numbered in order; the job idles when all are done and
    ends after InputClosed."""
    s = make(total_items=0, chunk_size=None, streaming=True)
    assert s.handle(NodeJoined(WS1, 1)) == []
    assert s.handle(ChunkAdded(3, t=1)) == [SendChunks(WS1, (ChunkOrder(0, 1, 0, 3),))]
    assert s.handle(ChunkAdded(1, t=1)) == [SendChunks(WS1, (ChunkOrder(1, 1, 3, 1),))]
    assert s.handle(ChunkFinished.dummy(0, WS1, result=b"a", t=2)) == [Journal(0, 0, 3, WS1, b"a")]
    assert s.handle(ChunkFinished.dummy(1, WS1, result=b"b", t=2)) == [Journal(1, 3, 1, WS1, b"b")]
    assert s.status == "running" and s.chunks_total is None and s.total_items == 4
    assert s.handle(InputClosed(t=3)) == [JobEnded("ok")]


def test_a_streaming_chunk_failed_for_good_is_given_up_and_the_job_goes_on(make: Callable[..., Scheduler]) -> None:
    s = make(total_items=0, chunk_size=None, streaming=True, retries=0)
    s.handle(NodeJoined(WS1, 1), ChunkAdded(2))
    assert s.handle(ChunkFailed.dummy(0, WS1, error="ValueError: no", t=1)) == [
        ChunkGivenUp(0, 0, 2, s.failures[-1])]
    assert s.status == "running"
    assert s.handle(ChunkAdded(1, t=2)) == [SendChunks(WS1, (ChunkOrder(1, 1, 2, 1),))]
    s.handle(ChunkFinished.dummy(1, WS1, t=3))
    assert s.handle(InputClosed(t=4)) == [JobEnded("failed")]


def test_a_streaming_job_reruns_its_slow_tail_while_open(make: Callable[..., Scheduler]) -> None:
    """Nothing is queued and the input is open: idle credit still re-runs a chunk out far longer than usual."""
    s = make(total_items=0, chunk_size=None, streaming=True, prefetch=1)
    s.handle(NodeJoined(WS1, 1), NodeJoined(PI3, 1), ChunkAdded(1, t=0), ChunkAdded(1, t=0))
    s.handle(ChunkFinished.dummy(0, WS1, seconds=1, t=1))
    assert s.handle(Tick(5)) == [SendChunks(WS1, (ChunkOrder(1, 1, 1, 1),))]


def test_a_streaming_job_keeps_no_settled_chunk(make: Callable[..., Scheduler]) -> None:
    """A long-lived executor's job: done, failed and cancelled chunks are dropped (only counted), a retransmitted
    result is still a duplicate, and the counts and invariants hold (validated at teardown)."""
    s = make(total_items=0, chunk_size=None, streaming=True, retries=0)
    s.handle(NodeJoined(WS1, 1))
    for i in range(1000):
        s.handle(ChunkAdded(2, t=i))
        s.handle(ChunkFinished.dummy(i, WS1, t=i + 0.5))
    assert s.chunks == {} and s.items_done == 2000 and s.counts["done"] == 1000
    s.handle(ChunkAdded(1, t=1001), ChunkAdded(1, t=1001))
    s.handle(ChunkFailed.dummy(1000, WS1, error="ValueError: no", t=1002))
    assert set(s.chunks) == {1001}
    s.handle(ChunkFinished.dummy(1001, WS1, t=1003))
    assert s.handle(ChunkFinished.dummy(1001, WS1, t=1004)) == []
    assert s.story(1001)[-1] == (1001, "dropped", "dropped", "duplicate result", WS1, 1004)
    assert s.items_done == 2001 and (s.counts["done"], s.counts["failed"]) == (1001, 1)
    s.handle(ChunkAdded(3, t=1005))
    s.handle(JobCancelled(t=1006))
    assert s.chunks == {} and s.counts["cancelled"] == 1


def test_chunks_cannot_be_added_to_a_fixed_or_closed_job(make: Callable[..., Scheduler]) -> None:
    with pytest.raises(InvalidTransition):
        make(total_items=10).handle(ChunkAdded(1))
    s = make(total_items=0, chunk_size=None, streaming=True)
    s.handle(ChunkAdded(1), InputClosed())
    assert s.status == "running"
    with pytest.raises(InvalidTransition):
        s.handle(ChunkAdded(1))


def test_auto_chunk_size_doubles_then_aims_at_the_target_and_leaves_every_worker_some(
        make: Callable[..., Scheduler]) -> None:
    s = make(total_items=0, chunk_size=None, streaming=True, target_chunk_s=0.5)
    assert [s.auto_chunk_size(None) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 64, 64]
    s.handle(NodeJoined(WS1, 2), ChunkAdded(10))
    s.handle(ChunkFinished.dummy(0, WS1, seconds=0.5, t=1))  # 50 ms an item
    assert s.auto_chunk_size(None) == 10
    assert s.auto_chunk_size(12) == 3
    assert s.auto_chunk_size(None, largest=4) == 4


def test_every_attempt_is_recorded_with_its_node_worker_times_and_outcome(make: Callable[..., Scheduler]) -> None:
    """Chunk 0 fails on ws-1's worker 1, then is done on pi-3 (its start is the worker's, not the send's); a
    chunk out on a node that is lost is an attempt "lost" from its send."""
    s = make(total_items=20, chunk_size=10, prefetch=1)
    s.handle(NodeJoined(WS1, 1, t=0), NodeJoined(PI3, 1, t=0))
    s.handle(ChunkFailed.dummy(0, WS1, seconds=1.0, t=2, worker="1"))
    s.handle(ChunkFinished.dummy(1, PI3, seconds=1.5, t=2.5, worker="0"))
    s.handle(NodeLost(WS1, t=4))
    s.handle(ChunkFinished.dummy(0, PI3, attempt=2, seconds=0.5, t=5, worker="0"))
    assert [(a.chunk, a.attempt, a.node, a.worker, a.start, a.end, a.outcome) for a in s.attempts] == [
        (0, 1, WS1, "1", 1.0, 2, "error"), (1, 1, PI3, "0", 1.0, 2.5, "done"), (0, 2, PI3, "0", 4.5, 5, "done"),
    ]
    s2 = make(total_items=10, chunk_size=10)
    s2.handle(NodeJoined(WS1, 1, t=1))
    s2.handle(NodeLost(WS1, t=3))
    assert [(a.node, a.worker, a.start, a.end, a.outcome) for a in s2.attempts] == [(WS1, "", 1, 3, "lost")]
