"""Byte-level readers of the on-disk data formats: the code that sees untrusted bytes.

Parses the bytes of IDX files, CIFAR-10 python batches, image files and .npy/.npz arrays into numpy arrays.
No reader executes code from a file (batches are unpickled with numpy arrays and plain containers only),
and none allocates what a header declares before the bytes are there (data is read in READ_CHUNK pieces,
or its size is checked against the file first). Every failure is a UserError of one line naming the file;
the one exception is `npy_header`, a probe that raises ARRAY_FILE_ERRORS for its caller to judge.
`images` builds data sets on these readers.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import struct
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError

READ_CHUNK = 1 << 24   # bytes per read: a size field in a file never sizes an allocation
# What np.load / zipfile raise on a corrupt, truncated, encrypted or oversized .npy/.npz: RuntimeError is an
# encrypted zip member, NotImplementedError an unknown zip version or compression method, TokenError comes
# from numpy's repair of an unparsable header, MemoryError from a header declaring more than can be allocated.
ARRAY_FILE_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                     RuntimeError, tokenize.TokenError, MemoryError)


def why(exc: BaseException) -> str:
    """An exception as one line for a UserError: its message, or its type when the message is empty."""
    return " ".join(str(exc).split()) or type(exc).__name__


# ---------------------------------------------------------------- IDX

def _read_upto(f, n: int) -> bytes:
    """At most n bytes from f, read in READ_CHUNK pieces: memory follows the data, not a declared size."""
    parts = []
    while n > 0 and (chunk := f.read(min(n, READ_CHUNK))):
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _idx_dims(head: bytes, path: Path, magic: int) -> tuple[int, ...]:
    """The dimensions in an IDX header, after checking its magic number and length."""
    ndim = magic & 0xFF
    if len(head) < 4 or int.from_bytes(head[:4], "big") != magic:
        found = f"0x{int.from_bytes(head[:4], 'big'):08x}" if len(head) >= 4 else f"only {len(head)} bytes"
        raise UserError(f"{path} is not an IDX {'image' if ndim == 3 else 'label'} file: "
                        f"magic number {found}, expected 0x{magic:08x}")
    if len(head) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated: {len(head)} bytes, the IDX header alone needs {4 + 4 * ndim}")
    return struct.unpack(f">{ndim}I", head[4:])


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX ubyte file (magic 0x0803 images, 0x0801 labels), header and length checked.

    The data is read up to one byte past what the header declares, so neither a huge declared size
    nor a gzip bomb is ever allocated; the size is a Python int, which cannot overflow.
    """
    header = 4 + 4 * (magic & 0xFF)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            dims = _idx_dims(_read_upto(f, header), path, magic)
            size = math.prod(dims)
            data = _read_upto(f, size + 1)
    except (OSError, EOFError, zlib.error) as exc:  # bad gzip header or CRC, cut gzip stream, corrupt deflate data
        raise UserError(f"could not read {path}: {why(exc)}") from None
    if len(data) != size:
        found = f"found {header + len(data)}" if len(data) < size else "found more"
        raise UserError(f"{path} is {'truncated' if len(data) < size else 'too long'}: header {dims} implies "
                        f"{header + size} bytes, {found}{' (after decompression)' if path.suffix == '.gz' else ''}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


# ---------------------------------------------------------------- CIFAR-10 python batches

class ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a batch file cannot run code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("copyreg", "_reconstructor")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _unpickle_batch(path: Path) -> object:
    """The object pickled in `path`, built by ArrayUnpickler: plain containers and numpy arrays only."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"could not read {path}: {why(exc)}") from None
    try:  # from memory: a string or frame length past the end of the file is not handed to read() as a size
        return ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 (see below)
        # Deliberately broad: pickle documents its errors on bad data as open-ended (UnpicklingError, EOFError,
        # KeyError, IndexError, OverflowError, MemoryError, ...) and numpy's array and dtype reconstruction adds
        # its own. No code of the file's choosing can run here (find_class allows numpy arrays only), so every
        # exception is a verdict on the bytes.
        raise UserError(f"{path} is not a CIFAR-10 python batch: {why(exc)}") from None


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3072) pixels and integer (N,) labels in 0..9 from one CIFAR-10 python batch file."""
    if not path.is_file():
        raise UserError(f"CIFAR-10 batch {path} is missing: expected data_batch_1..5 and test_batch")
    batch = _unpickle_batch(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UserError(f"{path} is not a CIFAR-10 python batch: expected a dict with b'data' and b'labels'")
    try:
        x, y = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except (ValueError, TypeError, RecursionError) as exc:  # ragged or self-containing lists
        raise UserError(f"{path}: data and labels must be arrays or flat lists: {why(exc)}") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise UserError(f"{path}: data has shape {x.shape} and dtype {x.dtype}, expected uint8 (N, 3072)")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise UserError(f"{path}: labels have shape {y.shape}, expected {len(x)} integers in 0..9")
    return x, y


# ---------------------------------------------------------------- image files

def _pil_errors() -> tuple[type[Exception], ...]:
    """What PIL raises on a corrupt, truncated or oversized image file.

    OSError: unidentified or truncated files, decoder errors; ValueError: unparsable header fields, too little
    image data; SyntaxError: broken PNG chunks; DecompressionBombError/-Warning: a header declaring more
    than Image.MAX_IMAGE_PIXELS.
    """
    from PIL import Image

    return OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning


def image_header(p: Path) -> tuple[str, tuple[int, int]]:
    """Mode and size of an image file from its header; over Image.MAX_IMAGE_PIXELS is an error, not a warning."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                return im.mode, im.size
    except _pil_errors() as exc:
        raise UserError(f"could not read image {p}: {why(exc)}") from None


def decode_image(p: Path, mode: str, size: int | None) -> np.ndarray:
    """The pixels of one image file in `mode`, centre-cropped and resized to size×size if a size is given."""
    from PIL import Image

    try:
        with Image.open(p) as im:
            im = im.convert(mode)
            if size is not None:
                w, h = im.size
                s = min(w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
                if s != size:
                    im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except _pil_errors() as exc:
        raise UserError(f"could not decode image {p}: {why(exc)}") from None


# ---------------------------------------------------------------- .npy / .npz arrays

def npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of the .npy stream f, leaving f at the start of the data.

    Raises ARRAY_FILE_ERRORS on a bad header, not UserError: `is_image_set` reads that as "not an image array".
    """
    version = np.lib.format.read_magic(f)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = reader(f)
    return shape, dtype


def check_npy_size(path: Path) -> None:
    """A .npy stream must hold exactly the bytes its header declares: a huge declared shape is never allocated."""
    try:
        with open(path, "rb") as f:
            if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                return  # not a .npy stream (a zip, or garbage): np.load decides
            f.seek(0)
            shape, dtype = npy_header(f)
            declared, found = math.prod(shape) * dtype.itemsize, os.fstat(f.fileno()).st_size - f.tell()
    except ARRAY_FILE_ERRORS as exc:
        raise UserError(f"could not read {path}: {why(exc)}") from None
    if declared != found and not dtype.hasobject:  # object arrays are pickled: np.load(allow_pickle=False) refuses them
        raise UserError(f"{path} is {'truncated' if found < declared else 'too long'}: its header declares "
                        f"shape {shape} of {dtype} ({declared} bytes of data), the file holds {found}")


def refuse_complex(arr: np.ndarray, what: str) -> None:
    """A complex array is refused: casting it to real would silently drop the imaginary parts."""
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise UserError(f"{what} holds complex values ({arr.dtype}): expected real numbers")


def npz_member(data, key: str, path: Path) -> np.ndarray:
    """The array `key` of the open .npz `data` (read from `path`), decompressed and parsed only now."""
    try:
        return data[key]
    except ARRAY_FILE_ERRORS as exc:
        raise UserError(f"could not read {path} [{key}]: {why(exc)}") from None
