"""JSON on the hot path without the `json` package.

`json.decoder` and `json.encoder` import `re` at load time (~3 ms of a
container start); the C accelerator `_json` they wrap needs none of it. The
stdlib `json` module is still used where its extras pay (indentation for
humans, line/column numbers in error messages).
"""
import _json
import sys

from ocirun.oslite import decimal


def _parse_constant(name: str) -> float:
    return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


# what _json.make_scanner reads from a JSONDecoder (a namespace, not a
# class: a class costs ~15 µs to create at every start); integers through
# oslite.decimal, not int() (see there: ~190 KiB of peak RSS)
_scan = _json.make_scanner(type(sys.implementation)(
    strict=True, object_hook=None, object_pairs_hook=None, parse_float=float,
    parse_int=decimal, parse_constant=_parse_constant))
_encode = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, True)
_encode_sorted = _json.make_encoder(None, None, _json.encode_basestring_ascii, None, ":", ",",
                                   True, False, True)
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
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise ValueError("extra data after the JSON document")
    return obj


def dumps(obj) -> str:
    """Compact JSON (no spaces), ASCII-only."""
    return "".join(_encode(obj, 0))


def dumps_canonical(obj) -> str:
    """Compact, ASCII, keys sorted: json.dumps(obj, sort_keys=True,
    separators=(",", ":")), e.g. for cache keys."""
    return "".join(_encode_sorted(obj, 0))


def dumps_pretty(obj, indent: int = 2) -> str:
    """What json.dumps(obj, indent=indent) prints (for `state`, `list`,
    `ps`), without loading the json package (and with it re and enum)."""
    out: list[str] = []
    _pretty(obj, " " * indent, 0, out)
    return "".join(out)


def _pretty(o, ind: str, level: int, out: list) -> None:
    if isinstance(o, dict) and o:
        pad = "\n" + ind * (level + 1)
        sep = "{"
        for k, v in o.items():
            out.append(sep + pad)
            out.append("".join(_encode(k if isinstance(k, str) else _key(k), 0)))
            out.append(": ")
            _pretty(v, ind, level + 1, out)
            sep = ","
        out.append("\n" + ind * level + "}")
    elif isinstance(o, (list, tuple)) and o:
        pad = "\n" + ind * (level + 1)
        sep = "["
        for v in o:
            out.append(sep + pad)
            _pretty(v, ind, level + 1, out)
            sep = ","
        out.append("\n" + ind * level + "]")
    else:
        out.append("".join(_encode(o, 0)))


def _key(k) -> str:
    """json's conversion of a non-string key."""
    if k is True:
        return "true"
    if k is False:
        return "false"
    if k is None:
        return "null"
    if isinstance(k, float):
        return "".join(_encode(k, 0))
    return str(k)
