"""Write one self-contained MTP GGUF: a base GGUF's tensors copied as they are, plus the
mask tokens (vocabulary entries and embedding rows), the gated LoRA, the sampler head and
the MTP metadata (mtpchat/format.py, docs/FORMAT.md)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mtpchat import format as F

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
    mask_tokens: list[str] | None = None                # token texts; default <|mtp_mask_j|>


def _copy_field(writer, g, key) -> None:
    vtype, sub = g.kv_types[key]
    writer.add_key_value(key, g.kv[key], vtype, sub_type=sub)


def _append_rows(tensor, rows: np.ndarray) -> np.ndarray:
    """The tensor's data with `rows` appended, in the tensor's own type (quantised if it is)."""
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    qtype = tensor.type
    if qtype == Q.F32:
        new = rows.astype(np.float32)
    elif qtype == Q.F16:
        new = rows.astype(np.float16)
    else:
        try:
            new = quants.quantize(rows.astype(np.float32), qtype)
        except (NotImplementedError, quants.QuantError):
            # K-quants and the like: gguf-py can only dequantise them, ggml itself can quantise
            from mtpchat.binding import quantize_rows
            try:
                new = quantize_rows(rows, qtype)
            except (NotImplementedError, OSError, AttributeError):
                raise F.FormatError(f"{tensor.name} is {qtype.name}: adding mask rows to that type is not supported yet") from None
    old = tensor.data
    return np.concatenate([old, new.reshape(len(rows), -1)], axis=0)


def write_mtp_gguf(base, out: str | Path, parts: MtpParts, *, force: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> Path:
    """Merge `parts` into `base`; atomic: a failure leaves no file and never an existing `out` touched.

    `progress(done_bytes, total_bytes)` is called as tensor data is written."""
    from gguf import GGUFWriter

    out = Path(out)
    if out.exists() and not force:
        raise F.FormatError(f"{out} exists (use --force to replace it)")
    # an already opened base (a GGUFFile) saves parsing a large vocabulary twice
    g = base if hasattr(base, "tensors") else F.open_gguf(base)
    if F.KEY_VERSION in g.kv:
        raise F.FormatError(f"{getattr(g, 'path', base)} is already an MTP model")
    arch = str(g.kv.get("general.architecture", ""))
    if arch not in F.SUPPORTED_ARCHS:
        raise F.FormatError(f"architecture '{arch}' is not supported yet (supported: {', '.join(F.SUPPORTED_ARCHS)})")
    embd = g.tensors.get("token_embd.weight")
    if embd is None:
        raise F.FormatError("base has no token_embd.weight")
    n_vocab = len(g.kv.get("tokenizer.ggml.tokens", []))
    n_vocab_embd, n_embd = embd.shape
    k = int(parts.mask_embd.shape[0])
    if parts.mask_embd.shape != (k, n_embd):
        raise F.FormatError(f"mask embeddings have shape {parts.mask_embd.shape}, base hidden size is {n_embd}")
    if n_vocab_embd != n_vocab:
        raise F.FormatError("base token_embd rows do not match its vocabulary")
    for name, (a, b) in parts.lora.items():
        t = g.tensors.get(name)
        if t is None:
            raise F.FormatError(f"LoRA target {name} is not in the base model")
        n_out, n_in = t.shape
        if a.shape != (parts.rank, n_in) or b.shape != (n_out, parts.rank):
            raise F.FormatError(f"LoRA {name}: A {a.shape} / B {b.shape} do not fit base weight ({n_out}, {n_in}) at rank {parts.rank}")
    for name, want in F.sampler_shapes(n_embd).items():
        if name not in parts.sampler or parts.sampler[name].shape != want:
            raise F.FormatError(f"sampler tensor {name} missing or not of shape {want}")
    F.check_alpha(parts.alpha)
    F.check_eps(parts.sampler_eps)
    mask_ids = list(range(n_vocab, n_vocab + k))
    mask_texts = list(parts.mask_tokens) if parts.mask_tokens else [F.mask_token_text(j + 1) for j in range(k)]
    if len(mask_texts) != k or len(set(mask_texts)) != k:
        raise F.FormatError(f"need {k} distinct mask token texts")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        writer = GGUFWriter(tmp, arch)
        if "general.alignment" in g.kv:  # keep the base's data alignment: the copied key declares it
            writer.data_alignment = int(g.kv["general.alignment"])
        extended = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
        for key in g.kv:
            if key.startswith("GGUF.") or key == "general.architecture" or key in extended:
                continue
            if key == f"{arch}.vocab_size":
                writer.add_uint32(key, n_vocab + k)
                continue
            _copy_field(writer, g, key)
        writer.add_array("tokenizer.ggml.tokens", list(g.kv["tokenizer.ggml.tokens"]) + mask_texts)
        if "tokenizer.ggml.scores" in g.kv:
            writer.add_array("tokenizer.ggml.scores", [float(x) for x in g.kv["tokenizer.ggml.scores"]] + [0.0] * k)
        types = [int(x) for x in g.kv.get("tokenizer.ggml.token_type", [1] * n_vocab)]
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

        for t in g.tensors.values():
            if t.name == "token_embd.weight":
                writer.add_tensor(t.name, _append_rows(t, parts.mask_embd), raw_dtype=t.type)
            elif t.name == "output.weight" and t.shape[0] == n_vocab:
                rows = parts.mask_output if parts.mask_output is not None else np.zeros((k, n_embd), np.float32)
                writer.add_tensor(t.name, _append_rows(t, rows), raw_dtype=t.type)
            else:
                writer.add_tensor(t.name, t.data, raw_dtype=t.type)
        lora_np = np.float16 if parts.lora_dtype == "F16" else np.float32
        for name in sorted(parts.lora):
            a, b = parts.lora[name]
            writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a, dtype=lora_np))
            writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b, dtype=lora_np))
        for name in F.SAMPLER_TENSORS:
            writer.add_tensor(F.SAMPLER_PREFIX + name, np.ascontiguousarray(parts.sampler[name], dtype=np.float32))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        _write_tensors(writer, progress)
        writer.close()
        _check_written(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _check_written(path: Path) -> None:
    """The file just written passes the checks every loader runs (mtpchat/metadata.py): convert
    never leaves a model that mtpchat run or info would refuse."""
    from mtpchat import metadata

    g = F.open_gguf(path, check=False)
    try:
        metadata.check(g)
    finally:
        del g


def _write_tensors(writer, progress) -> None:
    """GGUFWriter.write_tensors_to_file for one shard, reporting bytes written as it goes."""
    writer.write_ti_data_to_file()
    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())
    infos = list(writer.tensors[0].values())
    total, done = sum(ti.nbytes for ti in infos), 0
    for ti in infos:
        ti.tensor.tofile(fout)
        writer.write_padding(fout, ti.nbytes)
        ti.tensor = None  # the copied base data is a view of the mapped file: let it go
        done += ti.nbytes
        if progress is not None:
            progress(done, total)
    fout.flush()
    from gguf.gguf_writer import WriterState
    writer.state = WriterState.WEIGHTS
