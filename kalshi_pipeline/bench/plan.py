"""How big and how long each scenario is: the full run, `--quick`, and a scale for smoke tests.

Every wait in a scenario is bounded by these figures (plus fixed margins), so a run's length is
known in advance: the full run takes about 37 minutes (10 of them chaos, 10 the books check, 2.5
the books scenario's synthetic day; the engine's start-up reconciliation of 25,000 markets takes
most of a minute in a few scenarios), `--quick` about 4.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

SCENARIOS = (
    "throughput",  # firehose into DuckDB, the loopback limit, our writer alone, the seed pattern
    "latency",  # 1k ticks/s: tick to stored, tick to visible to a reader process
    "storage",  # mode both: bytes per tick, WebSocket vs polling per hour
    "cpu",  # 200 ticks/s over 25k markets: CPU share of one core
    "memory",  # 50k ticks/s: peak RSS
    "locked",  # the database held by another process: peak RSS, backlog, catch-up
    "analysts",  # five analyst clients query the live stream: does it keep its pace?
    "scaling",  # 1k, 10k, 100k markets: throughput, memory, HTTP pass time
    "compression",  # the firehose with permessage-deflate on and off: CPU and bytes per tick
    "books",  # a day of order-book deltas: bytes per delta, book at T, deltas stored per second
    "books_throughput",  # order-book firehose into DuckDB against the delta loopback limit
    "books_check",  # books and trades recorded with dropped frames, held to the exchange's ledger
    "chaos",  # faults at random, SIGKILL and a handover every 90 s, checked against the ledger
)


@dataclass(frozen=True)
class Plan:
    name: str
    throughput_frames: int = 500_000
    throughput_markets: int = 2_000
    seed_frames: int = 20_000
    seed_max_s: float = 8.0
    replay_max_s: float = 20.0
    latency_rate: float = 1_000.0
    latency_markets: int = 5_000
    latency_s: float = 60.0
    # the reader polls often enough that its own interval adds ~10 ms, not half of 100 ms: the
    # figure is when a tick becomes visible, not how rarely someone happens to look
    reader_interval_ms: float = 20.0
    reader_jitter: float = 0.5
    storage_markets: int = 25_000
    storage_rate: float = 200.0
    storage_s: float = 60.0
    cpu_markets: int = 25_000
    cpu_rate: float = 200.0
    cpu_warmup_s: float = 10.0
    cpu_s: float = 60.0
    cpu_floor_s: float = 20.0
    memory_rate: float = 50_000.0
    memory_markets: int = 2_000
    memory_s: float = 20.0
    locked_rate: float = 5_000.0
    locked_hold_s: float = 60.0
    analysts_rate: float = 1_000.0
    analysts_markets: int = 1_000
    analysts_s: float = 30.0
    scaling_markets: tuple[int, ...] = (1_000, 10_000, 100_000)
    scaling_frames: int = 200_000
    scaling_wait_s: float = 30.0  # per size and feed; past it the rate so far is reported
    compression_frames: int = 200_000
    compression_markets: int = 2_000
    books_markets: int = 500
    books_deltas: int = 3_000_000  # a day at about 35 deltas/s over the 500 markets
    books_queries: int = 300
    books_throughput_frames: int = 500_000
    books_throughput_markets: int = 1_000  # the order-book firehose moves half of them (<= 500)
    books_check_markets: int = 500
    books_check_rate: float = 200.0  # ticker changes per second over them (books change more)
    books_check_s: float = 600.0
    books_check_drop_every_s: float = 30.0  # one order-book or trade frame dropped
    books_check_times: int = 20  # moments at which a book is compared
    chaos_s: float = 600.0
    chaos_kill_every_s: float = 90.0
    chaos_handover_every_s: float = 90.0  # a successor started, half a period off the kills
    chaos_handover_wait_s: float = 60.0  # for the predecessor to hand over and exit; not scaled
    chaos_fault_gap_s: tuple[float, float] = (8.0, 20.0)
    chaos_markets: int = 1_000
    chaos_rate: float = 200.0
    chaos_lifetime: str = "5m"
    pause_s: float = 2.0  # small fixed waits: a warm-up, letting the last changes land
    settle_s: float = 90.0  # at most this long for start-up (reconciling every market)
    scale: float = 1.0

    def scaled(self, factor: float) -> Plan:
        """Every size and duration times `factor`, with floors that keep each scenario
        meaningful (a few hundred frames, a couple of seconds)."""
        if factor == 1.0:
            return self
        f = factor
        return replace(
            self,
            name=f"{self.name} x{f:g}",
            scale=self.scale * f,
            throughput_frames=max(5_000, int(self.throughput_frames * f)),
            throughput_markets=max(200, int(self.throughput_markets * f)),
            seed_frames=max(500, int(self.seed_frames * f)),
            seed_max_s=max(1.0, self.seed_max_s * f),
            replay_max_s=max(5.0, self.replay_max_s * f),
            latency_s=max(2.0, self.latency_s * f),
            latency_markets=max(500, int(self.latency_markets * f)),
            storage_markets=max(500, int(self.storage_markets * f)),
            storage_s=max(3.0, self.storage_s * f),
            cpu_markets=max(500, int(self.cpu_markets * f)),
            cpu_warmup_s=max(1.0, self.cpu_warmup_s * f),
            cpu_s=max(2.0, self.cpu_s * f),
            cpu_floor_s=max(2.0, self.cpu_floor_s * f),
            memory_s=max(2.0, self.memory_s * f),
            memory_rate=max(1_000.0, self.memory_rate * f),
            memory_markets=max(200, int(self.memory_markets * f)),
            locked_rate=max(500.0, self.locked_rate * f),
            chaos_markets=max(200, int(self.chaos_markets * f)),
            settle_s=max(20.0, self.settle_s * f),
            pause_s=min(self.pause_s, max(0.5, self.pause_s * f * 10)),
            scaling_wait_s=max(10.0, self.scaling_wait_s * f),
            locked_hold_s=max(2.0, self.locked_hold_s * f),
            analysts_s=max(3.0, self.analysts_s * f),
            analysts_markets=max(200, int(self.analysts_markets * f)),
            scaling_markets=tuple(sorted({max(100, int(m * f)) for m in self.scaling_markets})),
            scaling_frames=max(5_000, int(self.scaling_frames * f)),
            compression_frames=max(5_000, int(self.compression_frames * f)),
            compression_markets=max(200, int(self.compression_markets * f)),
            books_markets=max(20, int(self.books_markets * f)),
            books_deltas=max(3_000, int(self.books_deltas * f)),
            books_queries=max(20, int(self.books_queries * f)),
            books_throughput_frames=max(2_000, int(self.books_throughput_frames * f)),
            books_throughput_markets=max(100, int(self.books_throughput_markets * f)),
            books_check_markets=max(50, int(self.books_check_markets * f)),
            books_check_rate=max(20.0, self.books_check_rate * f),
            books_check_s=max(20.0, self.books_check_s * f),
            books_check_drop_every_s=max(4.0, self.books_check_drop_every_s * f),
            chaos_s=max(8.0, self.chaos_s * f),
            chaos_kill_every_s=max(4.0, self.chaos_kill_every_s * f),
            chaos_handover_every_s=max(4.0, self.chaos_handover_every_s * f),
            chaos_fault_gap_s=(
                max(1.0, self.chaos_fault_gap_s[0] * f),
                max(2.0, self.chaos_fault_gap_s[1] * f),
            ),
        )

    def describe(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FULL = Plan(name="full")
QUICK = Plan(
    name="quick",
    throughput_frames=100_000,
    throughput_markets=1_000,
    seed_frames=5_000,
    seed_max_s=3.0,
    replay_max_s=10.0,
    latency_markets=1_000,
    latency_s=8.0,
    storage_markets=1_000,
    storage_s=8.0,
    cpu_markets=1_000,
    cpu_warmup_s=2.0,
    cpu_s=8.0,
    cpu_floor_s=4.0,
    memory_markets=1_000,
    memory_s=5.0,
    locked_hold_s=5.0,
    analysts_s=8.0,
    scaling_markets=(1_000, 10_000),
    scaling_frames=20_000,
    scaling_wait_s=8.0,
    compression_frames=40_000,
    compression_markets=1_000,
    books_deltas=300_000,
    books_queries=100,
    books_throughput_frames=100_000,
    books_check_markets=100,
    books_check_s=45.0,
    books_check_drop_every_s=8.0,
    chaos_markets=1_000,
    chaos_s=75.0,
    chaos_kill_every_s=25.0,
    chaos_handover_every_s=25.0,
    chaos_fault_gap_s=(4.0, 10.0),
    settle_s=30.0,
    pause_s=1.0,
)
