"""In-process cache counters for metrics and the admin view, with a consistent snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.context import Usage


@dataclass(frozen=True, slots=True)
class CacheStatsSnapshot:
    """The counters at one moment, since the process started."""

    hits: int
    misses: int
    bypasses: int
    stale: int  # stale answers served because every upstream target failed
    errors: int  # Redis failures and timeouts (each one failed open)
    stores: int  # entries written
    not_stored: int  # successful answers that could not be stored (incomplete, too large)
    saved_input_tokens: int  # usage of the original answers served on HIT and STALE
    saved_output_tokens: int

    @property
    def hit_rate(self) -> float:
        """Hits among requests that looked the cache up (bypasses and stale excluded)."""
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


@dataclass(slots=True)
class CacheStats:
    """Mutable counters; one per app. Only the event loop's thread touches them."""

    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    stale: int = 0
    errors: int = 0
    stores: int = 0
    not_stored: int = 0
    saved_input_tokens: int = 0
    saved_output_tokens: int = 0

    def record(self, status: str | None, usage: Usage | None) -> None:
        """Count one finished request by its final `x-gateway-cache` status."""
        if status == "HIT":
            self.hits += 1
        elif status == "MISS":
            self.misses += 1
        elif status == "BYPASS":
            self.bypasses += 1
        elif status == "STALE":
            self.stale += 1
        if status in ("HIT", "STALE") and usage is not None:
            self.saved_input_tokens += usage.input_tokens
            self.saved_output_tokens += usage.output_tokens

    def snapshot(self) -> CacheStatsSnapshot:
        return CacheStatsSnapshot(
            hits=self.hits,
            misses=self.misses,
            bypasses=self.bypasses,
            stale=self.stale,
            errors=self.errors,
            stores=self.stores,
            not_stored=self.not_stored,
            saved_input_tokens=self.saved_input_tokens,
            saved_output_tokens=self.saved_output_tokens,
        )
