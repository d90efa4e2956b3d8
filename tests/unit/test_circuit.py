"""Circuit breakers: open on failures, refuse while open, one probe after the cooldown."""

from __future__ import annotations

from gateway.circuit import CircuitBreaker, CircuitRegistry, CircuitState, Permit
from gateway.config import CircuitConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, **options: float) -> CircuitBreaker:
    config = CircuitConfig(**{"failures": 3, "cooldown_s": 10.0, **options})
    return CircuitBreaker(config, clock)


def _fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = breaker.allow()
        assert permit is not None
        breaker.record(permit, ok=False)


def test_closed_circuit_lets_attempts_through() -> None:
    assert _breaker(Clock()).allow() is Permit.NORMAL


def test_opens_after_n_consecutive_failures_and_refuses() -> None:
    breaker = _breaker(Clock())
    _fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    _fail(breaker)
    assert breaker.state is CircuitState.OPEN
    assert breaker.allow() is None


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = _breaker(Clock())
    _fail(breaker, 2)
    breaker.record(Permit.NORMAL, ok=True)
    _fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED


def test_after_cooldown_exactly_one_probe_goes_through() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 9.9
    assert breaker.allow() is None
    clock.now += 0.2
    assert breaker.allow() is Permit.PROBE
    assert breaker.allow() is None  # a second request while the probe is out


def test_successful_probe_closes_the_circuit() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 10
    assert breaker.allow() is Permit.PROBE
    breaker.record(Permit.PROBE, ok=True)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow() is Permit.NORMAL


def test_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 10
    assert breaker.allow() is Permit.PROBE
    breaker.record(Permit.PROBE, ok=False)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_in_s() == 10.0
    clock.now += 5
    assert breaker.allow() is None


def test_cancelled_probe_lets_the_next_request_probe() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    clock.now += 10
    permit = breaker.allow()
    assert permit is Permit.PROBE
    breaker.release(permit)
    assert breaker.allow() is Permit.PROBE


def test_late_results_of_attempts_started_before_opening_are_ignored() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    _fail(breaker, 3)
    breaker.record(Permit.NORMAL, ok=True)
    assert breaker.state is CircuitState.OPEN


def test_opens_on_error_rate_once_enough_requests_were_seen() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=100, error_rate=0.5, min_requests=10, window_s=30)
    for i in range(9):
        breaker.record(Permit.NORMAL, ok=i % 2 == 0)  # alternate: never 2 failures in a row
    assert breaker.state is CircuitState.CLOSED  # 9 requests: below min_requests
    breaker.record(Permit.NORMAL, ok=False)
    assert breaker.state is CircuitState.OPEN  # 5 of 10 failed


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=100, error_rate=0.5, min_requests=4, window_s=10)
    for _ in range(3):
        breaker.record(Permit.NORMAL, ok=False)
    clock.now += 30
    breaker.record(Permit.NORMAL, ok=True)
    assert breaker.state is CircuitState.CLOSED  # 3 of 4 failed, but 3 of them long ago
    assert breaker.window() == (1, 0)


def test_registry_keeps_one_circuit_per_provider_and_model() -> None:
    registry = CircuitRegistry(clock=Clock())
    config = CircuitConfig(failures=1)
    a = registry.get("openai", "gpt-4o", config)
    assert registry.get("openai", "gpt-4o", config) is a
    assert registry.get("openai", "gpt-4o-mini", config) is not a
    _fail(a)
    states = {(s.provider, s.model): s.state for s in registry.snapshot()}
    assert states == {
        ("openai", "gpt-4o"): CircuitState.OPEN,
        ("openai", "gpt-4o-mini"): CircuitState.CLOSED,
    }


def test_snapshot_of_an_open_circuit_says_when_it_probes() -> None:
    clock = Clock()
    registry = CircuitRegistry(clock=clock)
    _fail(registry.get("anthropic", "claude", CircuitConfig(failures=1, cooldown_s=30)))
    clock.now += 12
    (snap,) = registry.snapshot()
    assert snap.retry_in_s == 18.0
    assert (snap.consecutive_failures, snap.window_requests, snap.window_failures) == (1, 1, 1)


def test_registry_forgets_least_recent_closed_circuits_but_keeps_open_ones() -> None:
    registry = CircuitRegistry(clock=Clock(), max_circuits=3)
    config = CircuitConfig(failures=1)
    _fail(registry.get("p", "open-one", config))
    for model in ["a", "b", "c", "d"]:
        registry.get("p", model, config)
    assert [s.model for s in registry.snapshot()] == ["open-one", "c", "d"]


def test_the_window_counts_what_its_buckets_hold_as_they_expire() -> None:
    clock = Clock()
    breaker = _breaker(clock, failures=1000, error_rate=1.0, min_requests=1000, window_s=10)
    seen: list[tuple[float, bool]] = []
    for i in range(200):
        clock.now += (i * 7 % 5) * 0.3  # uneven steps: buckets open and expire in between
        ok = i % 3 != 0
        breaker.record(Permit.NORMAL, ok=ok)
        seen.append((clock.now, ok))
        # Every bucket started within the last 11 s (the span plus one bucket's width) is
        # kept whole; the exact edge is the bucket's, so count a request by its own time
        # only where that cannot differ.
        requests, failures = breaker.window()
        recent = [failed for at, failed in ((t, not ok) for t, ok in seen) if at > clock.now - 9]
        assert len(recent) <= requests <= len([t for t, _ in seen if t > clock.now - 11])
        assert sum(recent) <= failures <= requests
    clock.now += 60
    assert breaker.window() == (0, 0)
    breaker.record(Permit.NORMAL, ok=False)
    assert breaker.window() == (1, 1)


def test_a_later_configs_settings_apply_to_the_circuit_it_keeps_and_an_older_ones_do_not() -> None:
    clock = Clock()
    registry = CircuitRegistry(clock=clock)
    circuit = registry.get("p", "m", CircuitConfig(failures=1, cooldown_s=10), generation=1)
    _fail(circuit)
    longer = CircuitConfig(failures=1, cooldown_s=60)
    assert registry.get("p", "m", longer, generation=2) is circuit
    assert (circuit.state, circuit.retry_in_s()) == (CircuitState.OPEN, 60.0)
    # A request still running on the config before the reload changes nothing back.
    registry.get("p", "m", CircuitConfig(failures=1, cooldown_s=10), generation=1)
    assert circuit.config == longer


def test_an_open_circuit_whose_cooldown_is_over_is_shown_half_open() -> None:
    """Its next request is the probe: /readyz and the metrics must not show it open (and the
    open-circuit alert keep firing) for as long as no request comes to it."""
    clock = Clock()
    registry = CircuitRegistry(clock=clock)
    _fail(registry.get("p", "m", CircuitConfig(failures=1, cooldown_s=30)))
    clock.now += 29
    assert [s.state for s in registry.snapshot()] == [CircuitState.OPEN]
    clock.now += 1
    (snap,) = registry.snapshot()
    assert (snap.state, snap.retry_in_s) == (CircuitState.HALF_OPEN, None)
