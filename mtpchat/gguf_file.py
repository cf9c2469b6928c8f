"""A small, bounds-checked GGUF reader over a memory map.

gguf's GGUFReader builds a numpy view per array element and takes seconds on a 49k-token
vocabulary (6.6 s for SmolLM2 here); mtpchat opens files at every start, so it reads the header
itself: metadata values, tensor infos, and tensor data as views of the map. Every offset and
count is checked against the file size: a GGUF is untrusted input.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

_SCALARS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}
_NP = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}


class GGUFError(ValueError):
    pass


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]        # numpy order (ggml ne reversed)
    type: GGMLQuantizationType
    offset: int                   # absolute file offset
    nbytes: int
    data: np.ndarray              # F32/F16: typed array of `shape`; else uint8 (rows, bytes per row)


class GGUFFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            try:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:
                raise GGUFError(f"{self.path} is empty") from None
        self._buf = memoryview(self._map)
        self._pos = 0
        self.kv: dict[str, object] = {}
        self.kv_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]] = {}
        self.tensors: dict[str, Tensor] = {}
        self._parse()

    # -- primitive reads, each bounds-checked ------------------------------------------------

    def _take(self, n: int) -> int:
        if n < 0 or self._pos + n > len(self._buf):
            raise GGUFError("unexpected end of file (truncated?)")
        p = self._pos
        self._pos += n
        return p

    def _unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self._buf, self._take(size))[0]

    def _str(self) -> str:
        n = self._unpack("<Q")
        p = self._take(n)
        return bytes(self._buf[p:p + n]).decode("utf-8", "replace")

    def _value(self, vtype: int):
        if vtype == GGUFValueType.STRING:
            return self._str()
        if vtype == GGUFValueType.ARRAY:
            sub = GGUFValueType(self._unpack("<I"))
            n = self._unpack("<Q")
            if sub == GGUFValueType.STRING:
                if n > len(self._buf) // 8:
                    raise GGUFError("array length exceeds the file")
                return [self._str() for _ in range(n)], sub
            if sub not in _SCALARS:
                raise GGUFError(f"unsupported array element type {sub}")
            dt = np.dtype(_SCALARS[sub])
            p = self._take(n * dt.itemsize)
            return np.frombuffer(self._buf, dtype=dt, count=n, offset=p).tolist(), sub
        if vtype not in _SCALARS:
            raise GGUFError(f"unknown metadata type {vtype}")
        return self._unpack(_SCALARS[GGUFValueType(vtype)])

    def _parse(self) -> None:
        if len(self._buf) < 24 or bytes(self._buf[:4]) != b"GGUF":
            raise GGUFError("not a GGUF file")
        self._pos = 4
        version = self._unpack("<I")
        if version not in (2, 3):
            raise GGUFError(f"GGUF version {version} is not supported")
        n_tensors, n_kv = self._unpack("<Q"), self._unpack("<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise GGUFError("implausible tensor or key count")
        for _ in range(n_kv):
            key = self._str()
            try:
                vtype = GGUFValueType(self._unpack("<I"))
            except ValueError:
                raise GGUFError(f"unknown metadata type for {key}") from None
            value = self._value(vtype)
            sub = None
            if vtype == GGUFValueType.ARRAY:
                value, sub = value
            self.kv[key] = value
            self.kv_types[key] = (vtype, sub)
        infos = []
        for _ in range(n_tensors):
            name = self._str()
            n_dims = self._unpack("<I")
            if not 1 <= n_dims <= 4:
                raise GGUFError(f"tensor {name} has {n_dims} dimensions")
            ne = [self._unpack("<Q") for _ in range(n_dims)]
            try:
                qtype = GGMLQuantizationType(self._unpack("<I"))
            except ValueError:
                raise GGUFError(f"tensor {name} has an unknown type") from None
            infos.append((name, ne, qtype, self._unpack("<Q")))
        align = self.kv.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise GGUFError("invalid general.alignment")
        data_start = (self._pos + align - 1) // align * align
        for name, ne, qtype, rel in infos:
            block, type_size = GGML_QUANT_SIZES[qtype]
            if any(d <= 0 for d in ne) or ne[0] % block:
                raise GGUFError(f"tensor {name} has an invalid shape")
            n_el = int(np.prod(ne, dtype=np.uint64))
            nbytes = n_el // block * type_size
            start = data_start + rel
            if start + nbytes > len(self._buf):
                raise GGUFError(f"tensor {name} lies outside the file (truncated?)")
            shape = tuple(reversed(ne))
            if qtype in _NP:
                data = np.frombuffer(self._buf, dtype=_NP[qtype], count=n_el, offset=start).reshape(shape)
            else:
                rows = n_el // ne[0]
                data = np.frombuffer(self._buf, dtype=np.uint8, count=nbytes, offset=start).reshape(rows, -1)
            if name in self.tensors:
                raise GGUFError(f"tensor {name} appears twice")
            self.tensors[name] = Tensor(name, shape, qtype, start, nbytes, data)

    def rows(self, name: str, ids) -> np.ndarray:
        """Rows of a 2-D tensor as float32, dequantised."""
        from gguf import quants

        t = self.tensors[name]
        raw = t.data[np.asarray(ids)]
        if t.type in _NP:
            return raw.astype(np.float32)
        return quants.dequantize(raw, t.type).astype(np.float32).reshape(len(raw), -1)
