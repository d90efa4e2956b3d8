"""Commands as RESP bytes, exactly as redis-py encodes them, for the coalesced client's
connection (see gateway.store.coalesce)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hiredis

# hiredis packs commands in C, several times faster. It packs bytes, str (UTF-8), int and
# float exactly as redis-py does, and refuses every other type, which then goes through
# redis-py's encoder.
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command
_UTF8 = ("utf-8", "strict")


def pack(commands: list[tuple[Any, ...]], encoder: Any) -> bytes:
    """RESP for several commands, as redis-py encodes them."""
    return b"".join(pack_one(command, encoder) for command in commands)


def pack_one(command: tuple[Any, ...], encoder: Any) -> bytes:
    """RESP for one command, as redis-py encodes it (a command name with a space is several
    words; values other than bytes, str, int and float go through the encoder)."""
    first = command[0]
    if (isinstance(first, str) and " " in first) or (isinstance(first, bytes) and b" " in first):
        command = (*first.split(), *command[1:])
    if (encoder.encoding, encoder.encoding_errors) == _UTF8:
        try:
            return _hiredis_pack(command)
        except TypeError:  # a type it does not pack (memoryview, bool): as redis-py does
            pass
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode(encoder.encoding, encoder.encoding_errors)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            value = b"%d" % arg
        else:  # floats, memoryviews; booleans and the rest raise DataError there
            value = encoder.encode(arg)
        out.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(out)
