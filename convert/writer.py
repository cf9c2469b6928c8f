"""Write one self-contained MTP GGUF: a base GGUF's tensors copied as they are, plus the
mask tokens (vocabulary entries and embedding rows), the gated LoRA, the sampler head and
the MTP metadata (mtpchat/format.py, docs/FORMAT.md)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from mtpchat import format as F

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
TOKEN_TYPE_CONTROL = 3


@dataclass
class MtpParts:
    """Everything an MTP checkpoint adds to a base model, as float32 arrays in (out, in) order."""
    mask_embd: np.ndarray                               # (k, n_embd): rows appended to token_embd
    lora: dict[str, tuple[np.ndarray, np.ndarray]]      # "blk.0.attn_q.weight" -> (A (r, in), B (out, r))
    rank: int
    alpha: float
    sampler: dict[str, np.ndarray]                      # F.SAMPLER_TENSORS -> array
    mask_output: np.ndarray | None = None               # (k, n_embd) rows for an untied output matrix
    sampler_eps: float = 1e-5
    lora_dtype: str = "F32"                             # F32 or F16


def _copy_field(writer, field) -> None:
    from gguf import GGUFValueType

    vtype = field.types[0]
    sub = field.types[1] if vtype == GGUFValueType.ARRAY and len(field.types) > 1 else None
    writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)


def _append_rows(tensor, rows: np.ndarray) -> np.ndarray:
    """The tensor's data with `rows` appended, in the tensor's own type (quantised if it is)."""
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    qtype = tensor.tensor_type
    if qtype == Q.F32:
        new = rows.astype(np.float32)
    elif qtype == Q.F16:
        new = rows.astype(np.float16)
    else:
        try:
            new = quants.quantize(rows.astype(np.float32), qtype)
        except (NotImplementedError, quants.QuantError):
            raise F.FormatError(f"{tensor.name} is {qtype.name}: adding mask rows to that type is not supported yet") from None
    old = np.asarray(tensor.data)
    return np.concatenate([old.reshape(old.shape[0], -1).view(new.dtype).reshape(old.shape[0], -1),
                           new.reshape(len(rows), -1)], axis=0)


def write_mtp_gguf(base: str | Path, out: str | Path, parts: MtpParts, *, force: bool = False) -> Path:
    """Merge `parts` into `base`; atomic: a failure leaves no file and never an existing `out` touched."""
    from gguf import GGUFWriter

    out = Path(out)
    if out.exists() and not force:
        raise F.FormatError(f"{out} exists (use --force to replace it)")
    reader = F.open_gguf(base)
    if F.KEY_VERSION in reader.fields:
        raise F.FormatError(f"{base} is already an MTP model")
    arch = str(reader.fields["general.architecture"].contents())
    if arch not in SUPPORTED_ARCHS:
        raise F.FormatError(f"architecture '{arch}' is not supported yet (supported: {', '.join(SUPPORTED_ARCHS)})")
    tensors = {t.name: t for t in reader.tensors}
    embd = tensors.get("token_embd.weight")
    if embd is None:
        raise F.FormatError("base has no token_embd.weight")
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    n_embd = int(embd.shape[0])
    k = int(parts.mask_embd.shape[0])
    if parts.mask_embd.shape != (k, n_embd):
        raise F.FormatError(f"mask embeddings have shape {parts.mask_embd.shape}, base hidden size is {n_embd}")
    if int(embd.shape[1]) != n_vocab:
        raise F.FormatError("base token_embd rows do not match its vocabulary")
    for name, (a, b) in parts.lora.items():
        t = tensors.get(name)
        if t is None:
            raise F.FormatError(f"LoRA target {name} is not in the base model")
        n_in, n_out = int(t.shape[0]), int(t.shape[1])
        if a.shape != (parts.rank, n_in) or b.shape != (n_out, parts.rank):
            raise F.FormatError(f"LoRA {name}: A {a.shape} / B {b.shape} do not fit base weight ({n_out}, {n_in}) at rank {parts.rank}")
    for name in F.SAMPLER_TENSORS:
        want = {"fc1.weight": (n_embd, 2 * n_embd), "fc2.weight": (n_embd, n_embd)}.get(name, (n_embd,))
        if name not in parts.sampler or parts.sampler[name].shape != want:
            raise F.FormatError(f"sampler tensor {name} missing or not of shape {want}")
    mask_ids = list(range(n_vocab, n_vocab + k))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        writer = GGUFWriter(tmp, arch)
        extended = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name == "general.architecture" or field.name in extended:
                continue
            if field.name == f"{arch}.vocab_size":
                writer.add_uint32(field.name, n_vocab + k)
                continue
            _copy_field(writer, field)
        tokens = [str(x) for x in reader.fields["tokenizer.ggml.tokens"].contents()]
        writer.add_array("tokenizer.ggml.tokens", tokens + [F.mask_token_text(j + 1) for j in range(k)])
        if "tokenizer.ggml.scores" in reader.fields:
            scores = [float(x) for x in reader.fields["tokenizer.ggml.scores"].contents()]
            writer.add_array("tokenizer.ggml.scores", scores + [0.0] * k)
        types = [int(x) for x in reader.fields["tokenizer.ggml.token_type"].contents()]
        writer.add_array("tokenizer.ggml.token_type", types + [TOKEN_TYPE_CONTROL] * k)

        writer.add_uint32(F.KEY_VERSION, F.FORMAT_VERSION)
        writer.add_uint32(F.KEY_N_MASKS, k)
        writer.add_array(F.KEY_MASK_IDS, mask_ids)
        writer.add_uint32(F.KEY_LORA_RANK, parts.rank)
        writer.add_float32(F.KEY_LORA_ALPHA, float(parts.alpha))
        targets = sorted({n.split(".")[2] for n in parts.lora})
        writer.add_array(F.KEY_LORA_TARGETS, targets)
        writer.add_string(F.KEY_SAMPLER_TYPE, F.SAMPLER_TYPE)
        writer.add_string(F.KEY_SAMPLER_INPUT, F.SAMPLER_INPUT)
        writer.add_string(F.KEY_SAMPLER_ACT, "silu")
        writer.add_string(F.KEY_SAMPLER_NORM, "layernorm")
        writer.add_float32(F.KEY_SAMPLER_EPS, float(parts.sampler_eps))
        writer.add_bool(F.KEY_SAMPLER_RESIDUAL, True)

        for t in reader.tensors:
            if t.name == "token_embd.weight":
                writer.add_tensor(t.name, _append_rows(t, parts.mask_embd), raw_dtype=t.tensor_type)
            elif t.name == "output.weight" and int(t.shape[1]) == n_vocab:
                rows = parts.mask_output if parts.mask_output is not None else np.zeros((k, n_embd), np.float32)
                writer.add_tensor(t.name, _append_rows(t, rows), raw_dtype=t.tensor_type)
            else:
                writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
        lora_np = np.float16 if parts.lora_dtype == "F16" else np.float32
        for name in sorted(parts.lora):
            a, b = parts.lora[name]
            writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a, dtype=lora_np))
            writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b, dtype=lora_np))
        for name in F.SAMPLER_TENSORS:
            writer.add_tensor(F.SAMPLER_PREFIX + name, np.ascontiguousarray(parts.sampler[name], dtype=np.float32))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
