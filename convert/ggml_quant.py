"""Quantise float rows with llama.cpp's own `ggml_quantize_chunk`.

gguf-py quantises only the simple block types (Q4_0 … Q8_0); K-quants and IQ types need ggml's
C code. The libggml-base that llama_cpp already loads sits next to libllama, so the same
library (and therefore the same rounding) that reads the model also writes its new rows.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

_lib = None


def _ggml():
    global _lib
    if _lib is None:
        import llama_cpp.llama_cpp as L  # loads libllama and, through it, libggml-base

        folder = Path(L._lib._name).parent
        cands = sorted(folder.glob("libggml-base.*")) + sorted(folder.glob("ggml-base.*"))
        if not cands:
            raise OSError(f"libggml-base not found next to {L._lib._name}")
        lib = ctypes.CDLL(str(cands[0]))
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_row_size.restype = ctypes.c_size_t
        _lib = lib
    return _lib


def quantize_rows(rows: np.ndarray, qtype: int) -> np.ndarray:
    """`rows` (n, n_per_row) float32 as ggml type `qtype`: uint8 array (n, row_bytes).

    Raises NotImplementedError for types that need an importance matrix (IQ1/IQ2 …): rows made
    without one would be poor, and we have none."""
    lib = _ggml()
    qtype = int(qtype)
    if lib.ggml_quantize_requires_imatrix(qtype):
        raise NotImplementedError("this type needs an importance matrix")
    src = np.ascontiguousarray(rows, dtype=np.float32)
    n, n_per_row = src.shape
    row_bytes = lib.ggml_row_size(qtype, n_per_row)
    dst = np.zeros((n, row_bytes), dtype=np.uint8)
    written = lib.ggml_quantize_chunk(qtype, src.ctypes.data, dst.ctypes.data, 0, n, n_per_row, None)
    if written != dst.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {dst.nbytes}")
    return dst
