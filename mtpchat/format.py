"""The MTP GGUF format: metadata keys, tensor names and a validating reader.

docs/FORMAT.md describes the same thing for people; keep the two in step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1

KEY_VERSION = "mtp.version"
KEY_N_MASKS = "mtp.n_masks"
KEY_MASK_IDS = "mtp.mask_token_ids"
KEY_LORA_RANK = "mtp.lora.rank"
KEY_LORA_ALPHA = "mtp.lora.alpha"
KEY_LORA_TARGETS = "mtp.lora.target_modules"
KEY_SAMPLER_TYPE = "mtp.sampler.type"
KEY_SAMPLER_ACT = "mtp.sampler.activation"
KEY_SAMPLER_NORM = "mtp.sampler.norm"
KEY_SAMPLER_EPS = "mtp.sampler.norm_eps"
KEY_SAMPLER_RESIDUAL = "mtp.sampler.residual"
KEY_SAMPLER_INPUT = "mtp.sampler.input"

# out = z + LN2(SiLU(fc2(LN1(SiLU(fc1([E(prev); z]))))))  -- docs/DESIGN.md §1.3
SAMPLER_TYPE = "mlp2"
SAMPLER_INPUT = "concat(embed(prev),hidden)"
SAMPLER_TENSORS = ("fc1.weight", "fc1.bias", "norm1.weight", "norm1.bias",
                   "fc2.weight", "fc2.bias", "norm2.weight", "norm2.bias")
SAMPLER_PREFIX = "mtp.sampler."

def sampler_shapes(d: int) -> dict[str, tuple[int, ...]]:
    """The shape of every sampler tensor for hidden size d (numpy order: (out, in))."""
    return {name: {"fc1.weight": (d, 2 * d), "fc2.weight": (d, d)}.get(name, (d,)) for name in SAMPLER_TENSORS}


# base architectures the gated adapter and the MTP file support (dense llama/qwen/gemma blocks)
SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")

# the linear layers of a llama/qwen/gemma block, by their GGUF names
LORA_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def lora_tensor_names(block: int, target: str) -> tuple[str, str]:
    base = f"blk.{block}.{target}.weight"
    return base + ".lora_a", base + ".lora_b"


def mask_token_text(j: int) -> str:
    """Text of mask token m_j (1-based)."""
    return f"<|mtp_mask_{j}|>"


class FormatError(ValueError):
    """The file is not a valid (MTP) GGUF."""


@dataclass
class MtpInfo:
    """MTP metadata of a GGUF; `None` from `read_mtp_info` means a plain model."""
    version: int
    n_masks: int
    mask_ids: list[int]
    lora_rank: int
    lora_alpha: float
    lora_targets: list[str]
    sampler_act: str
    sampler_norm: str
    sampler_eps: float
    sampler_residual: bool
    sampler: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _get(g, key, kind, required=True):
    if key not in g.kv:
        if required:
            raise FormatError(f"missing metadata key {key}")
        return None
    value = g.kv[key]
    if kind is list:
        if not isinstance(value, list):
            raise FormatError(f"metadata key {key} must be an array")
        return value
    if isinstance(value, list) or (kind is str) != isinstance(value, str):
        raise FormatError(f"metadata key {key} has the wrong type")
    return kind(value)


def open_gguf(path: str | Path):
    """A GGUFFile over an untrusted file; any structural problem becomes FormatError."""
    from .gguf_file import GGUFError, GGUFFile

    p = Path(path)
    if not p.exists():
        raise FormatError(f"no such file: {p}")
    if p.is_dir():
        raise FormatError(f"{p} is a directory, not a .gguf file")
    try:
        return GGUFFile(p)
    except GGUFError as e:
        raise FormatError(f"{p}: {e}") from None
    except OSError as e:
        raise FormatError(f"cannot read {p}: {e.strerror}") from None


def read_mtp_info(g) -> MtpInfo | None:
    if KEY_VERSION not in g.kv:
        return None
    version = _get(g, KEY_VERSION, int)
    if version != FORMAT_VERSION:
        raise FormatError(f"MTP format version {version} is not supported (this mtpchat reads {FORMAT_VERSION})")
    n_vocab = len(g.kv.get("tokenizer.ggml.tokens", []))
    info = MtpInfo(
        version=version,
        n_masks=_get(g, KEY_N_MASKS, int),
        mask_ids=[int(x) for x in _get(g, KEY_MASK_IDS, list)],
        lora_rank=_get(g, KEY_LORA_RANK, int),
        lora_alpha=_get(g, KEY_LORA_ALPHA, float),
        lora_targets=[str(x) for x in _get(g, KEY_LORA_TARGETS, list)],
        sampler_act=_get(g, KEY_SAMPLER_ACT, str),
        sampler_norm=_get(g, KEY_SAMPLER_NORM, str),
        sampler_eps=_get(g, KEY_SAMPLER_EPS, float),
        sampler_residual=bool(_get(g, KEY_SAMPLER_RESIDUAL, int)),
    )
    if not 1 <= info.n_masks <= 64 or len(info.mask_ids) != info.n_masks:
        raise FormatError("mtp.n_masks does not match mtp.mask_token_ids")
    if any(not 0 <= i < n_vocab for i in info.mask_ids) or len(set(info.mask_ids)) != info.n_masks:
        raise FormatError("mask token ids are outside the vocabulary or repeated")
    if (_get(g, KEY_SAMPLER_TYPE, str), _get(g, KEY_SAMPLER_INPUT, str)) != (SAMPLER_TYPE, SAMPLER_INPUT):
        raise FormatError("unknown sampler head type")
    if info.sampler_act != "silu" or info.sampler_norm != "layernorm":
        raise FormatError(f"unsupported sampler head ({info.sampler_act}, {info.sampler_norm})")
    embd = g.tensors.get("token_embd.weight")
    n_embd = embd.shape[-1] if embd is not None else -1
    for name, shape in sampler_shapes(n_embd).items():
        t = g.tensors.get(SAMPLER_PREFIX + name)
        if t is None:
            raise FormatError(f"missing tensor {SAMPLER_PREFIX + name}")
        if t.type.name not in ("F32", "F16"):
            raise FormatError(f"tensor {t.name} must be F32 or F16")
        if t.shape != shape:
            raise FormatError(f"tensor {t.name} has shape {t.shape}, expected {shape}")
        info.sampler[name] = np.array(t.data, dtype=np.float32)
    return info
