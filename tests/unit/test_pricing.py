"""Cost math in integer micro-dollars for every usage shape."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from gateway.config import PriceConfig
from gateway.context import Usage
from gateway.pricing import Price, PriceTable, usd


def test_openai_cost_prices_cached_tokens_at_the_cached_rate() -> None:
    price = PriceTable({}).get("gpt-4o-mini")
    assert price is not None
    # 800 plain x $0.15 + 200 cached x $0.075 + 500 out x $0.60, per 1M tokens.
    assert (
        price.cost_micro(Usage(input_tokens=1000, output_tokens=500, cached_input_tokens=200))
        == 435
    )


def test_anthropic_cost_prices_cache_reads_and_writes_apart() -> None:
    price = PriceTable({}).get("claude-sonnet-4-5")
    assert price is not None
    usage = Usage(
        input_tokens=1000 + 2000 + 400,
        output_tokens=100,
        cached_input_tokens=2000,
        cache_write_tokens=400,
    )
    # 1000 x $3 + 2000 x $0.30 + 400 x $3.75 + 100 x $15 = 3000 + 600 + 1500 + 1500
    assert price.cost_micro(usage) == 6600


def test_cost_is_rounded_up_to_the_next_micro_dollar() -> None:
    price = Price.of(PriceConfig(input=0.15))
    assert price.cost_micro(Usage(input_tokens=1)) == 1  # 0.15 micro-dollars is not free


def test_embeddings_cost_input_only() -> None:
    price = PriceTable({}).get("text-embedding-3-small")
    assert price is not None
    assert price.cost_micro(Usage(input_tokens=1_000_000)) == 20_000


def test_dated_model_names_fall_back_to_their_base_model() -> None:
    table = PriceTable({})
    assert table.get("gpt-4o-mini-2024-07-18") == table.get("gpt-4o-mini")
    assert table.get("gpt-4o-2024-08-06") == table.get("gpt-4o")
    assert table.get("claude-haiku-4-5-20251001") == table.get("claude-haiku-4-5")
    assert table.get("gpt-4o-minimal") is None
    assert "llama3" not in table


def test_config_prices_override_and_extend_the_bundled_table() -> None:
    table = PriceTable({"gpt-4o": PriceConfig(input=1, output=2), "llama3": PriceConfig(input=0.5)})
    assert table.get("gpt-4o") == Price.of(PriceConfig(input=1, output=2))
    assert table.get("llama3") == Price.of(PriceConfig(input=0.5))


def test_worst_case_ignores_cache_discounts() -> None:
    price = Price.of(PriceConfig(input=1, output=4, cached_input=0.1))
    assert price.worst_case_micro(1_000_000, 1_000_000) == 5_000_000


@pytest.mark.parametrize(("tokens_in", "tokens_out"), [(0, 0), (1, 0), (0, 1), (7, 3), (999, 4096)])
def test_worst_case_is_the_cost_of_every_token_at_full_price_rounded_up(
    tokens_in: int, tokens_out: int
) -> None:
    price = Price.of(PriceConfig(input=0.15, output=0.6, cached_input=0.075))
    usage = Usage(input_tokens=tokens_in, output_tokens=tokens_out)
    assert price.worst_case_micro(tokens_in, tokens_out) == price.cost_micro(usage)


def test_bundled_table_names_its_source_and_date() -> None:
    raw = json.loads(resources.files("gateway.data").joinpath("prices.json").read_text())
    assert "pricing" in raw["_source"]
    assert raw["_date"].startswith("20")
    assert len(raw["models"]) >= 20


def test_usd_formats_micro_dollars_exactly() -> None:
    assert usd(0) == "0.000000"
    assert usd(1_234_567) == "1.234567"
    assert usd(-5) == "-0.000005"
