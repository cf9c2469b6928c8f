"""`mtpchat info`: what a GGUF holds, read from its header (no weights loaded)."""
from __future__ import annotations

import os

from . import format as F
from .models import resolve

# llama.cpp's general.file_type values, by name
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
              11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
              17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def describe(spec: str | None) -> dict:
    path = resolve(spec)
    g = F.open_gguf(path)
    info = F.read_mtp_info(g)
    arch = str(g.kv.get("general.architecture", "?"))
    types = {}
    for t in g.tensors.values():
        types[t.type.name] = types.get(t.type.name, 0) + 1
    ft = g.kv.get("general.file_type")
    d = {
        "path": str(path),
        "default_model": spec is None,
        "name": g.kv.get("general.name", os.path.basename(path)),
        "architecture": arch,
        "size_bytes": os.path.getsize(path),
        "size_label": g.kv.get("general.size_label"),
        "quantisation": FILE_TYPES.get(ft, str(ft)) if ft is not None else max(types, key=types.get),
        "tensor_types": types,
        "context_length": g.kv.get(f"{arch}.context_length"),
        "embedding_length": g.kv.get(f"{arch}.embedding_length"),
        "layers": g.kv.get(f"{arch}.block_count"),
        "vocab_size": len(g.kv.get("tokenizer.ggml.tokens", [])),
        "chat_template": "tokenizer.chat_template" in g.kv,
        "mtp": info is not None,
    }
    if info:
        d.update({"mtp_format_version": info.version, "mtp_masks": info.n_masks, "mtp_mask_ids": info.mask_ids,
                  "lora_rank": info.lora_rank, "lora_alpha": info.lora_alpha, "lora_targets": info.lora_targets,
                  "sampler": f"{F.SAMPLER_TYPE} {info.sampler_act} {info.sampler_norm} eps={info.sampler_eps:g} "
                             f"residual={info.sampler_residual}"})
    return d
