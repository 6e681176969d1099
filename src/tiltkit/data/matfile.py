"""A strict reader of the numeric arrays in a MATLAB level-5 MAT-file (the format of SVHN's .mat files).

scipy.io.loadmat parses these files in C and can crash the interpreter (a segmentation fault, measured
here) on a corrupt or crafted file; this reader is pure Python over numpy buffers, so bad bytes can only
give a UserError naming the file. It reads what a data set needs and refuses nothing else silently:

    file       = 128-byte header ("IM": little-endian, "MI": big-endian; version 0x0100) + elements
    element    = tag (type u32, n bytes u32) + data (a matrix's sub-elements padded to 8 bytes); a tag
                 whose upper 16 bits are set is "small": n in those bits, the data in the tag's second word
    miCOMPRESSED (15): zlib stream of one element;  miMATRIX (14): sub-elements
                 array flags (class in the low byte, complex bit 0x800), dimensions (int32),
                 name (int8), real part (any numeric type, cast to the class; column-major)

Numeric, real matrices come back as numpy arrays of their class's dtype; variables of other classes
(cell, struct, char, sparse, object) and complex ones are skipped.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError

MI_MATRIX, MI_COMPRESSED = 14, 15
STORAGE = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
COMPLEX = 0x800


class _Corrupt(Exception):
    """Raised inside the parser; read_mat5 turns it into a UserError naming the file."""


def _tag(buf: bytes, pos: int, order: str, end: int, pad: bool = True) -> tuple[int, bytes, int]:
    """(type, data, position after the element) of the element at `pos`; sub-elements of a matrix are
    padded to 8 bytes, top-level elements are not (their sizes already are, or they are compressed)."""
    if pos + 8 > end:
        raise _Corrupt(f"truncated: an element tag at byte {pos} runs past the end ({end} bytes)")
    kind, n = struct.unpack_from(order + "II", buf, pos)
    if kind >> 16:  # small element: n and type share the first word, the data is the second
        n, kind = kind >> 16, kind & 0xFFFF
        if n > 4:
            raise _Corrupt(f"a small element at byte {pos} claims {n} bytes (at most 4)")
        return kind, buf[pos + 4:pos + 4 + n], pos + 8
    if pos + 8 + n > end:
        raise _Corrupt(f"truncated: an element at byte {pos} declares {n} bytes, {end - pos - 8} remain")
    return kind, buf[pos + 8:pos + 8 + n], pos + 8 + n + (-n % 8 if pad else 0)


def _numbers(kind: int, data: bytes, order: str, what: str) -> np.ndarray:
    if kind not in STORAGE:
        raise _Corrupt(f"{what} is stored as type {kind}, not a numeric type")
    dtype = np.dtype(STORAGE[kind]).newbyteorder(order)
    if len(data) % dtype.itemsize:
        raise _Corrupt(f"{what} has {len(data)} bytes, not a whole number of {dtype.itemsize}-byte values")
    return np.frombuffer(data, dtype=dtype)


def _matrix(data: bytes, order: str) -> tuple[str, np.ndarray | None]:
    """(name, array or None when skipped) of a miMATRIX element's data."""
    kind, flags, pos = _tag(data, 0, order, len(data))
    flags = _numbers(kind, flags, order, "the array flags")
    if len(flags) < 1:
        raise _Corrupt("a matrix has no array flags")
    cls, is_complex = int(flags[0]) & 0xFF, bool(int(flags[0]) & COMPLEX)
    kind, dims, pos = _tag(data, pos, order, len(data))
    dims = tuple(int(d) for d in _numbers(kind, dims, order, "the dimensions"))
    if len(dims) < 2 or min(dims) < 0:
        raise _Corrupt(f"a matrix has dimensions {dims}: expected two or more sizes ≥ 0")
    kind, name, pos = _tag(data, pos, order, len(data))
    name = name.decode("latin-1")
    if cls not in CLASSES or is_complex:
        return name, None
    kind, real, pos = _tag(data, pos, order, len(data))
    values = _numbers(kind, real, order, f"variable {name!r}")
    if len(values) != math.prod(dims):
        raise _Corrupt(f"variable {name!r} holds {len(values)} values, its dimensions {dims} need {math.prod(dims)}")
    return name, values.reshape(dims, order="F").astype(CLASSES[cls])


def _inflate(data: bytes) -> bytes:
    """A miCOMPRESSED element's zlib stream, decompressed (memory grows with the output, chunk by chunk)."""
    d, parts = zlib.decompressobj(), []
    while data:
        parts.append(d.decompress(data, 1 << 24))
        data = d.unconsumed_tail
    return b"".join(parts)


def read_mat5(path: Path) -> dict[str, np.ndarray]:
    """The numeric, real variables of the level-5 MAT-file `path` by name."""
    try:
        buf = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"could not read {path}: {exc.strerror or exc}") from None
    if buf[:10] == b"MATLAB 7.3":
        raise UserError(f"{path} is a MAT-file v7.3 (HDF5), which tiltkit does not read: save it with -v7")
    if len(buf) < 128 or buf[126:128] not in (b"IM", b"MI"):
        raise UserError(f"{path} is not a level-5 MAT-file: no 'IM'/'MI' endian mark at bytes 126–127")
    order = "<" if buf[126:128] == b"IM" else ">"
    out, pos = {}, 128
    try:
        while pos < len(buf):
            kind, data, pos = _tag(buf, pos, order, len(buf), pad=False)
            if kind == MI_COMPRESSED:
                inner = _inflate(data)
                kind, data, _ = _tag(inner, 0, order, len(inner), pad=False)
            if kind == MI_MATRIX:
                name, array = _matrix(data, order)
                if array is not None:
                    out[name] = array
    except _Corrupt as exc:
        raise UserError(f"{path} is not a readable MAT-file: {exc}") from None
    except zlib.error as exc:
        raise UserError(f"{path} is not a readable MAT-file: a compressed element is corrupt ({exc})") from None
    return out
