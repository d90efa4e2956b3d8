"""The words and numbers both reports show: money, rates, summary rows, the comparison sentence."""

from __future__ import annotations

from collections.abc import Callable

from gateway.eval.summary import ALPHA, Gate, SideSummary, Summary

FOLD_CHARS = 240


def usd(micros: int) -> str:
    return f"${micros / 1_000_000:.6f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def fold(text: str, limit: int = FOLD_CHARS) -> str:
    """A long answer shortened to `limit` characters, saying how much was left out."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()} … (+{len(text) - limit} chars)"


def summary_rows(summary: Summary) -> list[tuple[str, str, str]]:
    """(measure, value for A, value for B) for every summary measure."""
    rows = []
    for name, cell in _MEASURES:
        rows.append((name, cell(summary.A), cell(summary.B)))
    return rows


def _latency(s: SideSummary) -> str:
    if s.latency_mean_ms is None or s.latency_p95_ms is None:
        return "n/a"
    return f"{s.latency_mean_ms:.0f} ms / {s.latency_p95_ms:.0f} ms"


_MEASURES: tuple[tuple[str, Callable[[SideSummary], str]], ...] = (
    ("model", lambda s: s.model),
    ("pass rate", lambda s: f"{pct(s.pass_rate)} of {s.passed + s.failed}"),
    ("passed / failed", lambda s: f"{s.passed} / {s.failed}"),
    ("errors", lambda s: str(s.errors)),
    ("awaiting manual verdict", lambda s: str(s.unscored)),
    ("malformed answers", lambda s: f"{s.malformed} of {s.answers} ({pct(s.malformed_rate)})"),
    ("consistency across repetitions", lambda s: pct(s.consistency)),
    ("latency mean / p95", _latency),
    ("tokens in / out", lambda s: f"{s.prompt_tokens} / {s.completion_tokens}"),
    ("cost", lambda s: usd(s.cost_micros)),
)


def comparison_line(summary: Summary) -> str:
    c = summary.comparison
    chance = (
        f"is unlikely to be chance (p < {ALPHA:g})"
        if c.significant
        else f"could be chance (p ≥ {ALPHA:g})"
    )
    return (
        f"B against A over {c.paired} paired cases: {c.wins} wins, {c.losses} losses, "
        f"{c.ties} ties. Exact McNemar p = {c.p_value:.4g}: the difference {chance}."
    )


def gate_line(gate: Gate) -> str:
    return f"{'OK' if gate.passed else 'WORSE'}: {gate.reason}"
