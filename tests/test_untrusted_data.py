"""Untrusted data files: random, truncated and bit-flipped bytes in every image format we read.

Each reader must either return sane data or raise UserError with one line naming the file; any other
exception fails the test. Property tests are derandomized (same examples on every run) and small.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tiltkit.data import formats
from tiltkit.data.images import is_image_set, load_images
from tiltkit.data.matfile import STORAGE, read_mat5
from tiltkit.data.toy import load_points
from tiltkit.errors import UserError

# conftest's autouse fixture only pins torch to one thread: harmless to share between examples
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
RNG = np.random.default_rng(0)

# ------------------------------------------------------------------ valid small files in the real formats

IDX_X = RNG.integers(0, 256, (3, 5, 4), dtype=np.uint8)
IDX_Y = np.array([0, 7, 9], dtype=np.uint8)


def _idx(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.tobytes()


IDX = {"images": _idx(IDX_X, 0x803), "labels": _idx(IDX_Y, 0x801)}
IDX_NAMES = {"images": "train-images-idx3-ubyte", "labels": "train-labels-idx1-ubyte"}


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote cifar-10-batches-py: str (read back as bytes) as BINSTRING, numpy.core names.

    (Python 3 writes bytes at protocol 2 as a call to _codecs.encode, which the batch reader rightly refuses.)
    """
    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)
    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)
    dispatch[type] = save_global


def _py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, 2).dump(obj)
    return buf.getvalue()


CIFAR_X = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
CIFAR_BATCH = {b"batch_label": b"testing batch 1 of 1", b"data": CIFAR_X, b"labels": [3, 9]}
CIFAR = {"python2": _py2_pickle(CIFAR_BATCH), "protocol4": pickle.dumps(CIFAR_BATCH, protocol=4)}


def _image(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


PIXELS = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)
IMAGES = {".png": _image(PIXELS, "PNG"), ".jpg": _image(PIXELS, "JPEG")}


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz(compressed: bool, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


ARR_X = RNG.integers(0, 256, (3, 1, 4, 5), dtype=np.uint8)
ARRAYS = {"npy": (".npy", _npy(ARR_X)), "npz": (".npz", _npz(False, x=ARR_X, y=np.array([1, 2, 3]))),
          "npz-deflated": (".npz", _npz(True, x=ARR_X, y=np.array([1, 2, 3])))}

# ------------------------------------------------------------------ strategies and checks


def _flip(valid: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(valid)
    for i, b in flips:
        out[i] = b
    return bytes(out)


@st.composite
def mutated(draw, valid: bytes) -> tuple[bytes, int]:
    """`valid` cut short or with 1-4 bytes replaced, and how many bytes may now differ (-1: cut)."""
    if draw(st.booleans()):
        return valid[:draw(st.integers(0, len(valid) - 1))], -1
    flips = draw(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=4))
    return _flip(valid, flips), len(flips)


def _load_or_refuse(path: Path, *args, **kwargs):
    """load_images(*args) or None when it raised UserError, whose one-line message must name `path`."""
    try:
        return load_images(*args, **kwargs)
    except UserError as exc:
        msg = str(exc)
        assert str(path) in msg and "\n" not in msg, msg
        return None


def _refused(path: Path, *args, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        load_images(*args, **kwargs)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg, msg
    return msg


def _refused_with_peak(path: Path, *args, **kwargs) -> tuple[str, int]:
    """(_refused's message, the peak bytes Python allocated while refusing)."""
    tracemalloc.start()
    try:
        msg = _refused(path, *args, **kwargs)
        return msg, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ IDX


def _idx_dir(root: Path, which: str, stored: bytes, suffix: str = "") -> Path:
    """A train split whose `which` file is IDX_NAMES[which] + suffix holding `stored`; the other file is valid."""
    for kind, name in IDX_NAMES.items():
        if kind != which:
            (root / name).write_bytes(IDX[kind])
    path = root / (IDX_NAMES[which] + suffix)
    path.write_bytes(stored)
    return path


@FUZZ
@given(raw=st.binary(max_size=300), which=st.sampled_from(["images", "labels"]),
       form=st.sampled_from(["raw", "gzip of garbage", "garbage named .gz"]))
def test_idx_random_bytes(raw, which, form):
    stored = gzip.compress(raw, mtime=0) if form == "gzip of garbage" else raw
    with tempfile.TemporaryDirectory() as d:
        path = _idx_dir(Path(d), which, stored, "" if form == "raw" else ".gz")
        assert _load_or_refuse(path, d) is None


@FUZZ
@given(which=st.sampled_from(["images", "labels"]), gz=st.booleans(), data=st.data())
def test_idx_truncated_or_flipped(which, gz, data):
    raw, n_flips = data.draw(mutated(gzip.compress(IDX[which], mtime=0) if gz else IDX[which]))
    with tempfile.TemporaryDirectory() as d:
        path = _idx_dir(Path(d), which, raw, ".gz" if gz else "")
        got = _load_or_refuse(path, d)
    if got is not None:  # a harmless flip (in the pixels or labels, or a gzip header field)
        assert n_flips > 0 and got.x.shape == (3, 1, 5, 4) and got.y.shape == (3,)
        assert int((got.x[:, 0].numpy() != IDX_X).sum() + (got.y.numpy() != IDX_Y).sum()) <= n_flips


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dims, expect", [((2**31, 2**31, 4), "truncated"), ((2**32 - 1,) * 3, "truncated"),
                                          ((3, 0, 7), "positive height and width")])
def test_idx_huge_or_empty_dims(gz, dims, expect):
    """2^31·2^31·4 wrapped to 0 in int64: the old size check passed an empty file and reshape raised ValueError.

    (3, 0, 7) with no data is a consistent file of three 0×7 images: refused too.
    """
    header = struct.pack(">4I", 0x803, *dims)
    with tempfile.TemporaryDirectory() as d:
        path = _idx_dir(Path(d), "images", gzip.compress(header) if gz else header, ".gz" if gz else "")
        start = time.perf_counter()
        assert expect in _refused(path, d)
        assert time.perf_counter() - start < 5


def test_idx_gzip_bomb_is_not_decompressed():
    """A small .gz whose header declares 3 tiny images but which inflates to 64 MiB: refused, not inflated."""
    bomb = gzip.compress(IDX["images"] + bytes(64 << 20), compresslevel=9, mtime=0)
    with tempfile.TemporaryDirectory() as d:
        path = _idx_dir(Path(d), "images", bomb, ".gz")
        msg, peak = _refused_with_peak(path, d)
    assert "too long" in msg and peak < 16 << 20, (msg, peak)


def test_idx_corrupt_deflate_data():
    """A flipped byte inside the deflate stream made zlib.error escape."""
    raw = bytearray(gzip.compress(IDX["images"], mtime=0))
    raw[10] |= 0b110  # the first deflate block (after the 10-byte gzip header) gets the reserved type 11
    with tempfile.TemporaryDirectory() as d:
        _refused(_idx_dir(Path(d), "images", bytes(raw), ".gz"), d)


# ------------------------------------------------------------------ CIFAR-10 python batches


def _cifar_dir(root: Path, raw: bytes) -> Path:
    (root / "test_batch").write_bytes(raw)
    return root / "test_batch"


@FUZZ
@given(raw=st.binary(max_size=400))
def test_cifar_random_bytes(raw):
    with tempfile.TemporaryDirectory() as d:
        path = _cifar_dir(Path(d), raw)
        assert _load_or_refuse(path, d, "test") is None


@FUZZ
@given(proto=st.sampled_from(sorted(CIFAR)), data=st.data())
def test_cifar_truncated_or_flipped(proto, data):
    raw, n_flips = data.draw(mutated(CIFAR[proto]))
    with tempfile.TemporaryDirectory() as d:
        path = _cifar_dir(Path(d), raw)
        got = _load_or_refuse(path, d, "test")
    if got is not None:
        assert n_flips > 0 and got.x.shape == (2, 3, 32, 32) and got.y.shape == (2,)
        assert int((got.x.numpy().reshape(2, 3072) != CIFAR_X).sum()) <= n_flips
        assert 0 <= got.y.min() and got.y.max() <= 9


class _Evil:
    """Pickles as a call to `func(*args)`: what a hostile batch file would do."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_pickles(marker: Path, inner: Path) -> dict[str, bytes]:
    """Batch files that create `marker` if unpickled without restriction; `inner` is a helper file they may load."""
    import builtins
    import copyreg
    import subprocess

    make = f"open({str(marker)!r}, 'w').close()"
    inner.write_bytes(pickle.dumps(_Evil(builtins.exec, make)))
    return {"os.system": pickle.dumps(_Evil(os.system, f"touch {marker}")),
            "eval": pickle.dumps(_Evil(builtins.eval, make), protocol=2),
            "exec inside the data": pickle.dumps({b"data": _Evil(builtins.exec, make), b"labels": [0]}),
            "subprocess": pickle.dumps(_Evil(subprocess.call, ["touch", str(marker)]), protocol=4),
            # a numpy function that is not array reconstruction: np.load of a pickle that runs code
            "numpy.load": pickle.dumps(_Evil(np.load, str(inner), None, True)),
            # copyreg._reconstructor is allowed (old numpy pickles), but its class arguments go through the check
            "copyreg._reconstructor": pickle.dumps(_Evil(copyreg._reconstructor, Path, object, None), protocol=2),
            # protocol 0 with a Python 2 module name: the name mapping must not open a way around the check
            "__builtin__.eval": f"c__builtin__\neval\n(V{make}\ntR.".encode()}


def test_cifar_pickle_cannot_run_code():
    with tempfile.TemporaryDirectory() as d:
        marker, inner = Path(d) / "pwned", Path(d) / "inner.pkl"
        evil = _evil_pickles(marker, inner)
        for name, raw in evil.items():
            path = _cifar_dir(Path(d), raw)
            msg = _refused(path, d, "test")
            assert "not a CIFAR-10 python batch" in msg and "refusing to unpickle" in msg, (name, msg)
            assert not marker.exists(), f"{name}: the batch file ran code"
        pickle.loads(evil["eval"])  # the payloads are live: unrestricted unpickling does run them
        assert marker.exists()


def test_cifar_ragged_or_self_containing_labels():
    """np.asarray of ragged or recursive lists raised ValueError."""
    loop: list = []
    loop.append(loop)
    with tempfile.TemporaryDirectory() as d:
        for labels in ([1, [2, 3]], loop):
            path = _cifar_dir(Path(d), pickle.dumps({b"data": CIFAR_X[:1], b"labels": labels}))
            _refused(path, d, "test")
        path = _cifar_dir(Path(d), pickle.dumps({b"data": [[1, 2], [3]], b"labels": [1, 2]}))
        _refused(path, d, "test")


def test_cifar_huge_length_fields():
    """BINBYTES8 / FRAME lengths near 2^63 made the unpickler raise OverflowError / MemoryError."""
    with tempfile.TemporaryDirectory() as d:
        for raw in (b"\x80\x04\x8e" + struct.pack("<Q", 2**63 + 5) + b"abc.",     # BINBYTES8
                    b"\x80\x04\x95" + struct.pack("<Q", 2**62) + b"}.",           # FRAME
                    b"\x80\x02X" + struct.pack("<I", 2**32 - 1) + b"abc."):       # BINUNICODE, 4 GiB
            _refused(_cifar_dir(Path(d), raw), d, "test")


# ------------------------------------------------------------------ image folders


@FUZZ
@given(raw=st.binary(max_size=300), suffix=st.sampled_from(sorted(IMAGES)))
def test_image_folder_random_bytes(raw, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"a{suffix}"
        path.write_bytes(raw)
        got = _load_or_refuse(path, d)
    assert got is None or (got.x.ndim == 4 and len(got.x) == 1)  # some formats have no magic number


@FUZZ
@given(suffix=st.sampled_from(sorted(IMAGES)), size=st.sampled_from([None, 4]), data=st.data())
def test_image_folder_truncated_or_flipped(suffix, size, data):
    raw, _ = data.draw(mutated(IMAGES[suffix]))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / f"good{suffix}").write_bytes(IMAGES[suffix])
        path = Path(d) / f"mutated{suffix}"
        path.write_bytes(raw)
        got = _load_or_refuse(path, d, size=size)
    if got is not None:  # a JPEG decodes a flipped byte as different pixels
        assert got.x.shape == ((2, 3, 6, 8) if size is None else (2, 3, 4, 4))


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [100_000, 10_000])  # over 2× and just over Image.MAX_IMAGE_PIXELS
def test_image_decompression_bomb_is_refused(side):
    """100000² raised DecompressionBombError; 10000² only warned, then decoding allocated 300 MB."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bomb.png"
        path.write_bytes(_png_header_only(side, side))
        msg, peak = _refused_with_peak(path, d)
    assert "exceeds limit" in msg and peak < 16 << 20, (msg, peak)


def test_truncated_png_is_a_user_error():
    """The header pass accepts a cut PNG; decoding it raised OSError 'image file is truncated'."""
    big = _image(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), "PNG")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cut.png"
        path.write_bytes(big[:len(big) // 2])
        assert "could not decode image" in _refused(path, d)


# ------------------------------------------------------------------ .npy / .npz arrays


@FUZZ
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".npy", ".npz"]), split=st.sampled_from(["train", "test"]))
def test_array_file_random_bytes(raw, suffix, split):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"a{suffix}"
        path.write_bytes(raw)
        assert is_image_set(str(path)) in (True, False)
        assert _load_or_refuse(path, str(path), split) is None


@FUZZ
@given(kind=st.sampled_from(sorted(ARRAYS)), data=st.data())
def test_array_file_truncated_or_flipped(kind, data):
    suffix, valid = ARRAYS[kind]
    raw, n_flips = data.draw(mutated(valid))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"a{suffix}"
        path.write_bytes(raw)
        assert is_image_set(str(path)) in (True, False)
        got = _load_or_refuse(path, str(path))
    if got is not None:  # a flip in the pixels, or in padding of the header
        assert n_flips > 0 and got.x.shape == ARR_X.shape
        assert int((got.x.numpy() != ARR_X).sum()) <= n_flips


@pytest.mark.parametrize("shape", ["(1000000000000, 3, 4)", "(4294967296, 4294967296, 4)", "(3, 1, 4, 5000000)"])
def test_npy_huge_declared_shape_is_not_allocated(shape):
    """A header declaring 12 TB made np.load raise MemoryError (or allocate it, where it fits)."""
    raw = _npy(ARR_X)
    end = raw.index(b"\n") + 1
    header = raw[10:end].decode().replace(str(ARR_X.shape), shape)
    header = header.rstrip().ljust(end - 11) + "\n"
    assert len(header) == end - 10
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "huge.npy"
        path.write_bytes(raw[:10] + header.encode() + raw[end:])
        msg, peak = _refused_with_peak(path, str(path))
    assert "truncated" in msg and peak < 16 << 20, (msg, peak)


def test_npz_corrupt_member():
    """A bad CRC inside an .npz member surfaced as zipfile.BadZipFile from data[key]."""
    _, valid = ARRAYS["npz"]
    raw = bytearray(valid)
    raw[valid.index(b"\x93NUMPY") + 130] ^= 0xFF  # a pixel of x.npy (after its 128-byte header): only the CRC tells
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bad.npz"
        path.write_bytes(bytes(raw))
        assert "[x]" in _refused(path, str(path))


def test_zip_named_npy_still_loads():
    """The .npy size check applies to .npy streams only: np.load decides by content, not by name."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "arrays.npy"
        path.write_bytes(ARRAYS["npz"][1])
        assert np.array_equal(load_images(str(path)).x.numpy(), ARR_X)


# ------------------------------------------------------------------ the readers of tiltkit.data.formats, called directly

FORMAT_READERS = {  # name: (reader, valid bytes, file suffix)
    "read_idx": (lambda p: formats.read_idx(p, 0x803), IDX["images"], ""),
    "read_cifar_batch": (formats.read_cifar_batch, CIFAR["protocol4"], ""),
    "image_header": (formats.image_header, IMAGES[".png"], ".png"),
    "decode_image": (lambda p: formats.decode_image(p, "RGB", None), IMAGES[".jpg"], ".jpg"),
    "check_npy_size": (formats.check_npy_size, ARRAYS["npy"][1], ".npy"),
}


@pytest.mark.parametrize("name", list(FORMAT_READERS))
def test_format_readers_refuse_with_one_line(name):
    """Each reader in formats, not only the loaders above it, turns bad bytes into one UserError naming the file."""
    read, valid, suffix = FORMAT_READERS[name]
    refused = 0
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"file{suffix}"
        path.write_bytes(valid)
        read(path)
        for bad in [valid[:n] for n in (0, 1, 7, 20, len(valid) // 2, len(valid) - 1)] + [valid[:6] + b"junk" * 9]:
            path.write_bytes(bad)
            try:
                read(path)
            except UserError as exc:
                assert str(path) in str(exc) and "\n" not in str(exc), (name, str(exc))
                refused += 1
    assert refused, f"{name} accepted every cut or garbled file"


def test_array_unpickler_refuses_code():
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle"):
        formats.ArrayUnpickler(io.BytesIO(pickle.dumps(_Evil(os.system, "true"))), encoding="bytes").load()


# ------------------------------------------------------------------ SVHN MAT-files (data/matfile.py)
# scipy.io.loadmat crashed the interpreter (SIGSEGV in its C reader) on a few bit-flipped copies of such a
# file, which no test can catch; read_mat5 is pure Python, so these properties can hold.


def _savemat(compress: bool, **arrays) -> bytes:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays, do_compression=compress)
    return buf.getvalue()


SVHN_X = RNG.integers(0, 256, (32, 32, 3, 2), dtype=np.uint8)
SVHN_Y = np.array([[10.0], [3.0]])  # doubles, as in the real files
SVHN = {c: _savemat(c, X=SVHN_X, y=SVHN_Y) for c in (False, True)}


def _mat5(order: str, variables: list[tuple[str, int, int, np.ndarray]]) -> bytes:
    """A level-5 MAT-file written by hand: (name, class, storage type, values) per variable, in byte order
    `order`, each value stored in the given miTYPE (MATLAB stores doubles compactly, e.g. as uint8)."""
    def element(kind: int, data: bytes) -> bytes:
        return struct.pack(order + "II", kind, len(data)) + data + bytes(-len(data) % 8)

    body = b""
    for name, cls, storage, values in variables:
        dims = np.array(values.shape, dtype=order + "i4").tobytes()
        stored = values.astype(np.dtype(STORAGE[storage]).newbyteorder(order)).tobytes(order="F")
        matrix = (element(6, struct.pack(order + "II", cls, 0)) + element(5, dims) + element(1, name.encode())
                  + element(storage, stored))
        body += element(14, matrix)
    header = b"MATLAB 5.0 MAT-file, written by hand".ljust(116) + bytes(8) + struct.pack(order + "H", 0x0100)
    return header + (b"IM" if order == "<" else b"MI") + body


def _svhn_dir(root: Path, stored: bytes) -> Path:
    path = root / "train_32x32.mat"
    path.write_bytes(stored)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_mat5_reads_what_scipy_reads(tmp_path, compress):
    import scipy.io

    arrays = {"X": SVHN_X, "y": SVHN_Y, "f": RNG.standard_normal((3, 5)).astype(np.float32),
              "i": np.arange(-4, 4, dtype=np.int16).reshape(2, 4), "text": "skipped", "cell": [[1, 2], "a"]}
    (tmp_path / "a.mat").write_bytes(_savemat(compress, **arrays))
    ours, theirs = read_mat5(tmp_path / "a.mat"), scipy.io.loadmat(tmp_path / "a.mat")
    assert set(ours) == {"X", "y", "f", "i"}  # char and cell variables are skipped
    for k in ours:
        assert ours[k].dtype == theirs[k].dtype and np.array_equal(ours[k], theirs[k]), k


@pytest.mark.parametrize("order", ["<", ">"])
def test_mat5_casts_compact_storage_to_the_class_in_either_byte_order(tmp_path, order):
    y = np.array([[10.0], [3.0], [255.0]])
    (tmp_path / "a.mat").write_bytes(_mat5(order, [("y", 6, 2, y), ("w", 12, 3, np.array([[-7, 300]]))]))
    got = read_mat5(tmp_path / "a.mat")  # class double stored as miUINT8; class int32 stored as miINT16
    assert got["y"].dtype == np.float64 and np.array_equal(got["y"], y)
    assert got["w"].dtype == np.int32 and got["w"].tolist() == [[-7, 300]]


def test_svhn_loads_through_mat5(tmp_path):
    _svhn_dir(tmp_path, SVHN[True])
    d = load_images("svhn", "train", data_dir=tmp_path)
    assert d.y.tolist() == [0, 3] and np.array_equal(d.x[1].numpy(), SVHN_X[..., 1].transpose(2, 0, 1))


def test_mat5_v73_and_non_mat_files_are_refused(tmp_path):
    path = _svhn_dir(tmp_path, b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00".ljust(512, b"\0"))
    assert "v7.3 (HDF5)" in _refused(path, "svhn", "train", data_dir=tmp_path)
    path.write_bytes(b"\x89HDF\r\n" + bytes(300))
    assert "not a level-5 MAT-file" in _refused(path, "svhn", "train", data_dir=tmp_path)


@FUZZ
@given(raw=st.binary(max_size=400), header=st.booleans())
def test_svhn_random_bytes(raw, header):
    stored = SVHN[False][:128] + raw if header else raw  # past a valid header too
    with tempfile.TemporaryDirectory() as d:
        path = _svhn_dir(Path(d), stored)
        assert _load_or_refuse(path, "svhn", "train", data_dir=d) is None


@FUZZ
@given(compress=st.booleans(), data=st.data())
def test_svhn_truncated_or_flipped(compress, data):
    raw, n_flips = data.draw(mutated(SVHN[compress]))
    with tempfile.TemporaryDirectory() as d:
        path = _svhn_dir(Path(d), raw)
        got = _load_or_refuse(path, "svhn", "train", data_dir=d)
    if got is not None:  # a flip in the header text, the pixels, or (compressed) nowhere it matters
        assert n_flips > 0 and got.x.shape == (2, 3, 32, 32) and got.y.shape == (2,)
        assert int((got.x.numpy() != SVHN_X.transpose(3, 2, 0, 1)).sum()) <= n_flips


# ------------------------------------------------------------------ point files (toy-style data: .npy, .csv)

POINTS = RNG.standard_normal((20, 2))
POINT_FILES = {".npy": _npy(POINTS), ".csv": ("x,y\n" + "\n".join(f"{a:.4f},{b:.4f}" for a, b in POINTS)).encode()}


@FUZZ
@given(suffix=st.sampled_from(sorted(POINT_FILES)), data=st.data())
def test_point_files_truncated_flipped_or_random(suffix, data):
    raw = data.draw(st.one_of(mutated(POINT_FILES[suffix]).map(lambda m: m[0]), st.binary(max_size=200)))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"points{suffix}"
        path.write_bytes(raw)
        try:
            points = load_points(path)
        except UserError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
    assert points.dtype == np.float32 and points.ndim == 2 and np.isfinite(points).all()


def test_point_values_past_float32_are_refused(tmp_path):
    np.save(tmp_path / "big.npy", np.array([[1.0, 2.0], [3.0, 1e300]]))  # finite in float64, inf in float32
    with pytest.raises(UserError, match="infinite"):
        load_points(tmp_path / "big.npy")
