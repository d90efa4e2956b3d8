"""Deterministic embedding vectors derived from a hash of each input, and their encodings."""

from __future__ import annotations

import base64
import hashlib
import struct

import orjson

from gateway.mock.answers import text_tokens

DEFAULT_DIMENSIONS = 16
MAX_DIMENSIONS = 8192
_HALF_RANGE = (2**32 - 1) / 2  # maps an unsigned 32-bit integer onto [-1, 1]


def _input_bytes(value: str | list[int]) -> bytes:
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def float32_bytes(value: str | list[int], dimensions: int) -> bytes:
    """`dimensions` little-endian float32 values in [-1, 1], a pure function of the input."""
    seed = _input_bytes(value)
    raw = bytearray()
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.blake2b(seed, digest_size=64, salt=counter.to_bytes(16, "little")).digest()
        counter += 1
    integers = struct.unpack(f"<{dimensions}I", raw[: 4 * dimensions])
    return struct.pack(f"<{dimensions}f", *(i / _HALF_RANGE - 1.0 for i in integers))


def encode(vector: bytes, encoding_format: str) -> list[float] | str:
    """The vector as OpenAI sends it: a float list, or base64 of the float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(vector).decode()
    return list(struct.unpack(f"<{len(vector) // 4}f", vector))


def input_tokens(value: str | list[int]) -> int:
    return len(value) if isinstance(value, list) else text_tokens(value)
