"""Prices per model and the cost of a usage report, in integer micro-dollars."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gateway.config import PriceConfig
from gateway.context import Usage

MICRO = 1_000_000
# Prices are kept as pico-dollars per token (USD per 1M tokens x 10^6): integers, so cost
# sums are exact; a request's cost is rounded up to the next micro-dollar, never down.
_PICO_PER_MICRO = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    input: int
    output: int
    cached_input: int
    cache_write: int

    @classmethod
    def of(cls, config: PriceConfig) -> Price:
        return cls(
            input=_pico(config.input),
            output=_pico(config.output),
            cached_input=_pico(
                config.input if config.cached_input is None else config.cached_input
            ),
            cache_write=_pico(config.input if config.cache_write is None else config.cache_write),
        )

    def cost_micro(self, usage: Usage) -> int:
        cached, written = usage.cached_input_tokens, usage.cache_write_tokens
        plain = max(0, usage.input_tokens - cached - written)
        pico = (
            plain * self.input
            + cached * self.cached_input
            + written * self.cache_write
            + usage.output_tokens * self.output
        )
        return -(-pico // _PICO_PER_MICRO)

    def worst_case_micro(self, input_tokens: int, output_tokens: int) -> int:
        """The most a request can cost: no cache discount, every output token used (what
        `cost_micro` gives for that usage)."""
        pico = input_tokens * self.input + output_tokens * self.output
        return -(-pico // _PICO_PER_MICRO)


def _pico(usd_per_million: float) -> int:
    return round(usd_per_million * MICRO)


# Snapshot suffixes providers add to a model name: -2024-08-06, -20250929, -latest.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class PriceTable:
    """Bundled prices overlaid with the config's; a dated snapshot is priced as its model
    (`gpt-4o-mini-2024-07-18` as `gpt-4o-mini`). Any other unknown name is unpriced."""

    def __init__(self, overrides: dict[str, PriceConfig]) -> None:
        self._prices = {name: Price.of(p) for name, p in {**bundled(), **overrides}.items()}

    def __contains__(self, model: str) -> bool:
        return self.get(model) is not None

    def names(self) -> frozenset[str]:
        return frozenset(self._prices)

    def get(self, model: str) -> Price | None:
        price = self._prices.get(model)
        if price is None:
            price = self._prices.get(_SNAPSHOT.sub("", model))
        return price


def bundled() -> dict[str, PriceConfig]:
    """The price table shipped with the package (source and date inside the file)."""
    raw: dict[str, Any] = json.loads(
        resources.files("gateway.data").joinpath("prices.json").read_text(encoding="utf-8")
    )
    return {name: PriceConfig(**entry) for name, entry in raw["models"].items()}


def usd(micro: int) -> str:
    """Micro-dollars as a decimal USD string for headers and JSON (no float rounding)."""
    if micro < 0:
        return f"-{usd(-micro)}"
    # printf-style: a third cheaper than an f-string here, on every request's path
    return "%d.%06d" % divmod(micro, MICRO)  # noqa: UP031
