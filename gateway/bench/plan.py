"""What one benchmark run measures: its options and the ordered list of phases (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Target = Literal["direct", "forwarder", "gateway-miss", "gateway-hit"]
StreamTarget = Literal["direct", "forwarder", "gateway"]
WRK_TARGETS: tuple[Target, ...] = ("direct", "forwarder", "gateway-miss", "gateway-hit")
STREAM_TARGETS: tuple[StreamTarget, ...] = ("direct", "forwarder", "gateway")


# Long streams: an answer of this many words, one event each, this many ms apart, as a fast
# model streams its tokens: each arrives in a read of its own, and a proxy pays per read.
LONG_WORDS = 200
LONG_CHUNK_DELAY_MS = 5

# The benchmark flushes this database at its start and end: never point it at real data.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"


@dataclass(frozen=True, slots=True)
class Options:
    """Everything a run is parameterised by; the defaults are the documented full run."""

    out: str | None = None
    duration_s: float = 10.0
    warmup_s: float = 2.0
    connections: tuple[int, ...] = (1, 16, 64)
    latencies_ms: tuple[int, ...] = (0, 50)
    stream_connections: int = 16
    stream_duration_s: float = 10.0
    # Each proxy phase (wrk's and the streaming client's) runs this many times, the targets
    # taking turns, and the report gives the median: a machine whose speed drifts over
    # minutes then moves every target alike, and one disturbed run does not decide a target.
    rounds: int = 3
    soak_s: float = 0.0
    workers: bool = True
    redis_url: str = DEFAULT_REDIS_URL
    pin: bool = True
    quick: bool = False


QUICK = Options(
    duration_s=3.0,
    warmup_s=1.0,
    connections=(16,),
    latencies_ms=(0, 50),
    stream_duration_s=3.0,
    rounds=1,
    quick=True,
)


@dataclass(frozen=True, slots=True)
class Phase:
    """One wrk run: a target at one provider latency and one number of connections."""

    target: Target
    latency_ms: int
    connections: int
    round: int = 0  # which of the repeated runs (see Options.rounds)

    @property
    def name(self) -> str:
        return f"{self.target} {self.latency_ms}ms c{self.connections} #{self.round + 1}"


@dataclass(frozen=True, slots=True)
class StreamPhase:
    """One run of the streaming client: time to first token through a target."""

    target: StreamTarget
    latency_ms: int
    connections: int
    round: int = 0  # which of the repeated runs (see Options.rounds)
    words: int = 0  # the answer's length: 0, the mock's short one; else LONG_WORDS
    chunk_delay_ms: int = 0

    @property
    def name(self) -> str:
        long = f" {self.words} words" if self.words else ""
        return f"{self.target} {self.latency_ms}ms c{self.connections}{long} #{self.round + 1}"


def wrk_phases(options: Options) -> list[Phase]:
    """Grouped by latency, then connections, so every proxy is compared with `direct` under
    the same conditions; `direct` runs again at the end of each group, so that a disturbed
    baseline cannot flatter the proxies (the better of the two counts). In between, the
    proxies take turns for `rounds` rounds, so each round's ratios compare runs a few seconds
    apart. A cache hit never calls the provider, so its latency does not change it: it is
    measured at the first latency only."""
    phases: list[Phase] = []
    first = options.latencies_ms[0] if options.latencies_ms else 0
    proxies = [t for t in WRK_TARGETS if t != "direct"]
    for latency in options.latencies_ms:
        for connections in options.connections:
            phases.append(Phase("direct", latency, connections))
            for round_ in range(max(1, options.rounds)):
                for target in proxies:
                    if target == "gateway-hit" and latency != first:
                        continue
                    phases.append(Phase(target, latency, connections, round_))
            phases.append(Phase("direct", latency, connections, 1))
    return phases


def stream_phases(options: Options) -> list[StreamPhase]:
    """As `wrk_phases`: at each latency, `direct` before and after the proxies, which take
    turns for `rounds` rounds. Then long answers (LONG_WORDS words, trickled), at 0 ms: what
    a stream costs per read."""
    groups = [(latency, 0, 0) for latency in options.latencies_ms]
    groups.append((0, LONG_WORDS, LONG_CHUNK_DELAY_MS))
    phases: list[StreamPhase] = []
    conns = options.stream_connections
    proxies = [t for t in STREAM_TARGETS if t != "direct"]
    for latency, words, delay in groups:
        phases.append(StreamPhase("direct", latency, conns, 0, words, delay))
        for round_ in range(max(1, options.rounds)):
            for target in proxies:
                phases.append(StreamPhase(target, latency, conns, round_, words, delay))
        phases.append(StreamPhase("direct", latency, conns, 1, words, delay))
    return phases
