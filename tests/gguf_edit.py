"""Copies of a GGUF with some metadata values replaced or removed: hostile inputs for the tests
(tests/test_fuzz_metadata.py, tests/test_hostile.py). Tensors are copied as they are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFValueType as T

from mtpchat.gguf_file import GGUFFile

# a Python value written with the type it has in a GGUF
INT = {T.UINT8, T.INT8, T.UINT16, T.INT16, T.UINT32, T.INT32, T.UINT64, T.INT64}


def rewrite(src: str | Path, dst: str | Path, set: dict | None = None, drop=(),
            tensors: dict[str, np.ndarray] | None = None) -> Path:
    """`src` copied to `dst` with `set` = {key: (value, type[, element type])} written over (or
    added to) its metadata, the keys in `drop` left out, and tensor data replaced by `tensors`
    (same shape and type)."""
    from gguf import GGUFWriter

    g = GGUFFile(src)
    set = dict(set or {})
    arch = set.pop("general.architecture", (g.kv["general.architecture"], T.STRING))[0]
    w = GGUFWriter(dst, str(arch))
    if "general.alignment" in g.kv:
        w.data_alignment = int(g.kv["general.alignment"])
    for key, value in g.kv.items():
        if key in drop or key in set or key == "general.architecture":
            continue
        vtype, sub = g.kv_types[key]
        w.add_key_value(key, value, vtype, sub_type=sub)
    for key, spec in set.items():
        value, vtype, *sub = spec
        w.add_key_value(key, value, vtype, sub_type=sub[0] if sub else None)
    for t in g.tensors.values():
        data = t.data if not tensors or t.name not in tensors else np.asarray(tensors[t.name], t.data.dtype)
        w.add_tensor(t.name, np.ascontiguousarray(data), raw_dtype=t.type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    del g
    return Path(dst)


def tiny_of_arch(src: str | Path, dst: str | Path, arch: str) -> Path:
    """The tiny llama GGUF of tests/synthetic.py as another supported architecture: its keys
    renamed, and the norms qwen3 (q/k norms) and gemma3 (q/k and post norms) also need."""
    from gguf import GGUFWriter

    g = GGUFFile(src)
    old = str(g.kv["general.architecture"])
    w = GGUFWriter(dst, arch)
    for key, value in g.kv.items():
        if key == "general.architecture":
            continue
        vtype, sub = g.kv_types[key]
        name = arch + key[len(old):] if key.startswith(old + ".") else key
        w.add_key_value(name, value, vtype, sub_type=sub)
    n_embd = g.tensors["token_embd.weight"].shape[1]
    head_dim = n_embd // int(g.kv[f"{old}.attention.head_count"])
    for t in g.tensors.values():
        w.add_tensor(t.name, np.ascontiguousarray(t.data), raw_dtype=t.type)
    extra = {"qwen3": ("attn_q_norm", "attn_k_norm"),
             "gemma3": ("attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm")}.get(arch, ())
    for i in range(int(g.kv[f"{old}.block_count"])):
        for name in extra:
            size = n_embd if name.startswith("post") else head_dim
            w.add_tensor(f"blk.{i}.{name}.weight", np.ones(size, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    del g
    return Path(dst)
