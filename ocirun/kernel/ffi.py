"""The smallest C-call layer: `_ctypes` (the C half of ctypes) on its own.

The `ctypes` package costs ~2.5 ms and ~0.4 MiB to import (it builds dozens
of types and loads `types`, `struct`, `ctypes._endian`); a container start
needs only "call a libc function with integers and byte buffers". This
module gives exactly that on the C extension, for ~0.7 ms. Structures are
packed as bytes (`_struct`), so nothing here needs ctypes.Structure.

Used only inside ocirun.kernel; libseccomp (compile on a cache miss) still
uses the full ctypes package.
"""
from __future__ import annotations

import _ctypes
import sys
from ocirun import oslite as os

from _ctypes import addressof, get_errno  # noqa: F401  (re-exported)

_RTLD_NOW = 2


class c_long(_ctypes._SimpleCData):
    _type_ = "l"


class c_char(_ctypes._SimpleCData):
    _type_ = "c"


def _library(path: str | None):
    """A dlopen()ed library: what CFuncPtr((name, lib)) reads is lib._handle
    (a namespace, not a class of our own: each class costs ~15 µs a start)."""
    return type(sys.implementation)(_handle=_ctypes.dlopen(path, _RTLD_NOW))


class _ErrnoFunc(_ctypes.CFuncPtr):
    """A libc call that sets errno; returns int unless its restype says."""
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO


class _PyApiFunc(_ctypes.CFuncPtr):
    """A call made with the GIL held: a raw clone() must come back in the
    child with the interpreter state it left with; the interpreter's own
    C API."""
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO | \
        _ctypes.FUNCFLAG_PYTHONAPI


libc = _library(None)


def int_func(name: str, lib=libc):
    """A C function returning int; pass ints (as C int), bytes or None."""
    return _ErrnoFunc((name, lib))


def long_func(name: str, lib=libc, gil: bool = False):
    """A C function returning long; wrap long arguments in c_long."""
    f = (_PyApiFunc if gil else _ErrnoFunc)((name, lib))
    f.restype = c_long
    return f


def python_api_func(name: str):
    """One of the interpreter's void(void) C functions (PyOS_*Fork*)."""
    f = _PyApiFunc((name, libc))
    f.restype = None
    return f


_buffer_types: dict[int, type] = {}


def char_array(n: int) -> type:
    """The C type char[n] (its from_address() views memory as bytes)."""
    t = _buffer_types.get(n)
    if t is None:
        t = _buffer_types[n] = type(f"char_{n}", (_ctypes.Array,),
                                    {"_type_": c_char, "_length_": n})
    return t


def buffer(init: bytes | int):
    """A writable C char array (its .raw is the bytes), zeroed or copied from
    `init`; pass it where C wants a pointer, or take addressof() it."""
    b = char_array(init if isinstance(init, int) else len(init))()
    if not isinstance(init, int):
        b.raw = init
    return b


def error(what: str, path: str | None = None) -> OSError:
    """OSError for the errno the last call left."""
    e = get_errno()
    if path is not None:
        return OSError(e, os.strerror(e), path)
    return OSError(e, f"{what}: {os.strerror(e)}" if what else os.strerror(e))
