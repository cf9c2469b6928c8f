"""A small, bounds-checked safetensors reader and writer.

Checkpoints are untrusted downloads, so nothing here unpickles anything and every offset in the
header is checked against the file size before numpy touches the data. Written by hand so that
`mtpchat convert` needs neither torch nor the `safetensors` package.

Layout: 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the raw
tensor bytes (offsets are relative to the end of the header).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

# safetensors dtype -> numpy dtype; BF16 has no numpy type and is widened to float32 on read
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
NUMPY_TO_ST = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
               np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("i1"): "I8", np.dtype("u1"): "U8"}
MAX_HEADER = 100 << 20  # the reference implementation's limit too
MAX_DIMS = 8            # numpy allows 64; checkpoint tensors have 1 or 2
MAX_DIM = 1 << 40
MAX_TENSOR_BYTES = 1 << 48


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class TensorFileError(ValueError):
    """The file is not a readable safetensors file."""


def read_header(path: str | Path) -> tuple[dict[str, dict], int]:
    """The checked tensor entries of `path` and the offset where tensor data begins."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise TensorFileError(f"{p.name} is truncated or not a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise TensorFileError(f"{p.name} is truncated or not a safetensors file (header of {n} bytes)")
            raw = f.read(n)
    except OSError as e:
        raise TensorFileError(f"cannot read {p}: {e.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nesting deeper than the stack
        raise TensorFileError(f"{p.name} is not a safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{p.name} is not a safetensors file (bad header)")
    header.pop("__metadata__", None)
    start = 8 + n
    spans = []
    for name, e in header.items():
        ok = (isinstance(e, dict) and isinstance(e.get("dtype"), str) and e["dtype"] in DTYPES
              and isinstance(e.get("shape"), list) and len(e["shape"]) <= MAX_DIMS
              and all(_is_int(s) and 0 <= s <= MAX_DIM for s in e["shape"])
              and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
              and all(_is_int(o) for o in e["data_offsets"]))
        if not ok:
            raise TensorFileError(f"{p.name}: tensor {name!r} has a malformed header entry")
        begin, end = e["data_offsets"]
        want = math.prod(e["shape"]) * DTYPES[e["dtype"]].itemsize
        if want > MAX_TENSOR_BYTES:   # keeps numpy's reshape far from int64 overflow
            raise TensorFileError(f"{p.name}: tensor {name!r} has an implausible shape {e['shape']}")
        if not 0 <= begin <= end or end - begin != want:
            raise TensorFileError(f"{p.name}: tensor {name!r} has inconsistent offsets")
        if start + end > size:
            raise TensorFileError(f"{p.name} is truncated: tensor {name!r} ends at byte {start + end}, "
                                  f"the file has {size}")
        if end > begin:
            spans.append((begin, end, name))
    # two tensors over the same bytes would alias each other (the format forbids it)
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise TensorFileError(f"{p.name}: tensors {n0!r} and {n1!r} overlap in the file")
    return header, start


def read_safetensors(path: str | Path, names=None) -> dict[str, np.ndarray]:
    """Tensors of `path` (all, or those in `names`) as numpy arrays; BF16 becomes float32."""
    header, start = read_header(path)
    out = {}
    mm = np.memmap(path, dtype=np.uint8, mode="r") if Path(path).stat().st_size else None
    for name, e in header.items():
        if names is not None and name not in names:
            continue
        begin, end = e["data_offsets"]
        dt = DTYPES[e["dtype"]]
        buf = mm[start + begin:start + end] if mm is not None else np.zeros(0, np.uint8)
        a = np.frombuffer(buf, dtype=dt).reshape(e["shape"])
        if e["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = np.array(a)  # a private copy: no view keeps the file open
    return out


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` as a safetensors file (used by tests and tools that build checkpoints)."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, offset = [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype not in NUMPY_TO_ST:
            raise TypeError(f"{name}: dtype {a.dtype} cannot be written")
        data = a.tobytes()
        header[name] = {"dtype": NUMPY_TO_ST[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep tensor data 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    return Path(path)
