"""JSON on the hot path without the `json` package.

`json.decoder` and `json.encoder` import `re` at load time (~3 ms of a
container start); the C accelerator `_json` they wrap needs none of it. The
stdlib `json` module is still used where its extras pay (indentation for
humans, line/column numbers in error messages).
"""
from __future__ import annotations

import _json


class _Ctx:
    """The attributes _json.make_scanner reads from a JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


_scan = _json.make_scanner(_Ctx())
_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, True)
_WS = " \t\n\r"


def loads(data: bytes | str):
    """Parse a JSON document; ValueError if it is not exactly one."""
    s = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if s.startswith("\ufeff"):
        s = s[1:]
    i = 0
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except (StopIteration, SystemError):
        # SystemError: the C scanner could not build its JSONDecodeError
        # because json.decoder is not loaded; the caller asks json for details
        raise ValueError("not a JSON document") from None
    finally:
        _Ctx.memo.clear()
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise ValueError("extra data after the JSON document")
    return obj


def dumps(obj) -> str:
    """Compact JSON (no spaces), ASCII-only."""
    return "".join(_encode(obj, 0))
