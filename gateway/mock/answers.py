"""The mock provider's deterministic brain: which answer a prompt gets, and its token counts.

Other parts of the product (demo, evals, budget tests) rely on these exact rules, so they are
kept small, pure and free of any wire format.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# fmt: off
POSITIVE = frozenset({
    "love", "loved", "great", "excellent", "good", "amazing", "happy", "wonderful", "fantastic",
    "best", "perfect", "recommend", "delighted", "superb", "pleased", "nice", "fast",
})
NEGATIVE = frozenset({
    "hate", "hated", "terrible", "awful", "bad", "worst", "broken", "disappointed",
    "disappointing", "poor", "slow", "refund", "useless", "horrible", "angry", "waste", "never",
})
# fmt: on
TOKENS_PER_MESSAGE = 3
ECHO_CHARS = 120

_REPLY_LINE = re.compile(r"^[ \t]*mock-reply:[ \t]*(.*?)[ \t\r]*$", re.MULTILINE)
_LETTERS = re.compile(r"[^\W\d_]+")
# A word with the whitespace before it; joining the pieces gives back the text.
_PIECE = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class Prompt:
    """What a request asks: one text per message (system included), and the last user text."""

    texts: tuple[str, ...]
    last_user: str

    @property
    def full_text(self) -> str:
        return "\n".join(self.texts)


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer actually sent, cut into word pieces, with its token counts."""

    pieces: tuple[str, ...]
    truncated: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Turn:
    """One answer as the wire modules render it: the answer plus its id, time and model."""

    serial: int
    created: int
    model: str
    answer: Answer


def text_tokens(text: str) -> int:
    """A text's token count: a quarter of its characters, rounded up, at least one."""
    return max(1, math.ceil(len(text) / 4))


def prompt_tokens(prompt: Prompt) -> int:
    return sum(text_tokens(text) for text in prompt.texts) + TOKENS_PER_MESSAGE * len(prompt.texts)


def sentiment_label(text: str) -> str:
    words = _LETTERS.findall(text.lower())
    positive = sum(word in POSITIVE for word in words)
    negative = sum(word in NEGATIVE for word in words)
    if positive > negative:
        return "positive"
    if negative > positive:
        return "negative"
    return "neutral"


def answer_text(prompt: Prompt, reply: str | None) -> str:
    """The full answer, by the first rule that applies.

    1. the scripted or header `reply`; 2. a `mock-reply: TEXT` line in the input; 3. a
    sentiment label when the input mentions "sentiment"; 4. an echo of the last user text.
    """
    if reply is not None:
        return reply
    full = prompt.full_text
    line = _REPLY_LINE.search(full)
    if line is not None:
        return line.group(1)
    lowered = full.lower()
    if "sentiment" in lowered:
        label = sentiment_label(prompt.last_user)
        if "json" in lowered:
            return f'{{"sentiment": "{label}"}}'
        if "one word" in lowered:
            return label
        return f"The sentiment of this text is {label}."
    return f"Mock answer: {prompt.last_user[:ECHO_CHARS]}"


def split_pieces(text: str) -> tuple[str, ...]:
    """Cut a text into words, each with the whitespace before it; trailing space stays last."""
    pieces = _PIECE.findall(text)
    if not pieces:
        return (text,) if text else ()
    tail = text[sum(len(piece) for piece in pieces) :]
    if tail:
        pieces[-1] += tail
    return tuple(pieces)


def compose(prompt: Prompt, reply: str | None, max_tokens: int | None, cached: int) -> Answer:
    """Answer a prompt: pick the text, cut it to `max_tokens` words, count the tokens."""
    pieces = split_pieces(answer_text(prompt, reply))
    truncated = max_tokens is not None and max_tokens < len(pieces)
    if truncated:
        pieces = pieces[: max(0, max_tokens or 0)]
    used = prompt_tokens(prompt)
    return Answer(
        pieces=pieces,
        truncated=truncated,
        prompt_tokens=used,
        completion_tokens=text_tokens("".join(pieces)),
        cached_tokens=min(max(0, cached), used),
    )
