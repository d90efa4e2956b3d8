"""Circuit breakers per (provider, model): fail fast while a target is down, probe later."""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import CircuitConfig

Clock = Callable[[], float]
# Models come from clients on routes without a rewrite, so the registry must stay bounded.
MAX_CIRCUITS = 1024
_BUCKETS = 10  # the error-rate window is kept as this many counters, not one entry per request


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Permit(enum.Enum):
    """What `allow` granted: a normal attempt, or the one probe of a half-open circuit."""

    NORMAL = "normal"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class CircuitSnapshot:
    """One circuit as the readiness detail and the metrics module see it."""

    provider: str
    model: str
    state: CircuitState
    consecutive_failures: int
    window_requests: int
    window_failures: int
    retry_in_s: float | None  # open: seconds until one probe is let through


class _Window:
    """Requests and failures over the last `span_s` seconds, in a few time buckets."""

    def __init__(self, span_s: float) -> None:
        self._width = span_s / _BUCKETS
        self._span = span_s
        self._buckets: collections.deque[list[float]] = collections.deque()  # [start, n, fails]
        # The buckets' sums, kept as they change: every attempt asks for them.
        self._requests = self._failures = 0

    def add(self, now: float, failed: bool) -> None:
        if not self._buckets or now >= self._buckets[-1][0] + self._width:
            self._buckets.append([now, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        self._requests += 1
        if failed:
            bucket[2] += 1
            self._failures += 1

    def totals(self, now: float) -> tuple[int, int]:
        buckets = self._buckets
        while buckets and buckets[0][0] + self._width <= now - self._span:
            _, requests, failures = buckets.popleft()
            self._requests -= int(requests)
            self._failures -= int(failures)
        return self._requests, self._failures

    def clear(self) -> None:
        self._buckets.clear()
        self._requests = self._failures = 0


class CircuitBreaker:
    """Closed: attempts pass and results are counted. Open after `failures` consecutive
    failures, or an error rate of at least `error_rate` over `window_s` with `min_requests`.
    Open: attempts are refused until `cooldown_s` has passed; then one probe passes
    (half-open) and its result closes the circuit or opens it for another cooldown."""

    def __init__(
        self, config: CircuitConfig, clock: Clock = time.monotonic, generation: int = 0
    ) -> None:
        self.config = config
        self.generation = generation  # of the config whose settings apply (see the registry)
        self._clock = clock
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self._window = _Window(config.window_s)
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> Permit | None:
        """A permit for one attempt, or None while the circuit refuses attempts."""
        if self.state is CircuitState.CLOSED:
            return Permit.NORMAL
        if self.state is CircuitState.OPEN:
            if self._clock() < self._opened_at + self.config.cooldown_s:
                return None
            self.state = CircuitState.HALF_OPEN
        if self._probing:
            return None
        self._probing = True
        return Permit.PROBE

    def record(self, permit: Permit, ok: bool) -> None:
        """The result of an attempt made with `permit`."""
        if permit is Permit.PROBE:
            self._probing = False
            if ok:
                self._close()
            else:
                self._open()
            return
        if self.state is not CircuitState.CLOSED:
            return  # attempts started before the circuit opened do not decide its state
        now = self._clock()
        self._window.add(now, failed=not ok)
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        if self._should_open(now):
            self._open()

    def release(self, permit: Permit) -> None:
        """An attempt ended with no verdict on the provider (cancelled, client gone)."""
        if permit is Permit.PROBE:
            self._probing = False

    def reconfigure(self, config: CircuitConfig, generation: int) -> None:
        """New settings from a reloaded config; the state is kept (an open circuit stays
        open), and so are the window's counts unless the window's length changed."""
        if config.window_s != self.config.window_s:
            self._window = _Window(config.window_s)
        self.config, self.generation = config, generation

    def retry_in_s(self) -> float | None:
        if self.state is not CircuitState.OPEN:
            return None
        return max(0.0, self._opened_at + self.config.cooldown_s - self._clock())

    def shown_state(self) -> CircuitState:
        """The state as the circuit acts now: open past its cooldown, it lets its next
        request through as a probe, so it is shown half-open (not open for as long as no
        request comes, which would keep the open-circuit alert firing)."""
        if self.state is CircuitState.OPEN and self.retry_in_s() == 0.0:
            return CircuitState.HALF_OPEN
        return self.state

    def window(self) -> tuple[int, int]:
        """(requests, failures) in the current error-rate window."""
        return self._window.totals(self._clock())

    def _should_open(self, now: float) -> bool:
        if self.consecutive_failures >= self.config.failures:
            return True
        total, failed = self._window.totals(now)
        return total >= self.config.min_requests and failed / total >= self.config.error_rate

    def _open(self) -> None:
        self.state = CircuitState.OPEN
        self._opened_at = self._clock()

    def _close(self) -> None:
        self.state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self._window.clear()


class CircuitRegistry:
    """Every circuit of one gateway process, keyed by (provider name, model)."""

    def __init__(self, clock: Clock = time.monotonic, max_circuits: int = MAX_CIRCUITS) -> None:
        self._clock = clock
        self._max = max_circuits
        self._circuits: collections.OrderedDict[tuple[str, str], CircuitBreaker] = (
            collections.OrderedDict()
        )

    def get(
        self, provider: str, model: str, config: CircuitConfig, generation: int = 0
    ) -> CircuitBreaker:
        """The circuit of a target; the first route to use a target sets its thresholds, and
        after a reload (a config of a later `generation`) the first route of the new config
        to use it does. A request still running on an older config changes nothing."""
        key = (provider, model)
        circuit = self._circuits.get(key)
        if circuit is None:
            self._evict(room_for=1)
            circuit = self._circuits[key] = CircuitBreaker(config, self._clock, generation)
        elif circuit.generation < generation:
            circuit.reconfigure(config, generation)
        self._circuits.move_to_end(key)
        return circuit

    def snapshot(self) -> list[CircuitSnapshot]:
        out = []
        for (provider, model), circuit in self._circuits.items():
            total, failed = circuit.window()
            state = circuit.shown_state()
            out.append(
                CircuitSnapshot(
                    provider=provider,
                    model=model,
                    state=state,
                    consecutive_failures=circuit.consecutive_failures,
                    window_requests=total,
                    window_failures=failed,
                    retry_in_s=circuit.retry_in_s() if state is CircuitState.OPEN else None,
                )
            )
        return out

    def _evict(self, room_for: int) -> None:
        """Forget the least recently used closed circuits past the cap; open ones are kept."""
        excess = len(self._circuits) + room_for - self._max
        for key in [k for k, c in self._circuits.items() if c.state is CircuitState.CLOSED]:
            if excess <= 0:
                return
            del self._circuits[key]
            excess -= 1
