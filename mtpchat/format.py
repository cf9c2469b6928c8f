"""The MTP GGUF format: metadata keys, tensor names and a validating reader.

docs/FORMAT.md describes the same thing for people; keep the two in step.
"""
from __future__ import annotations

import math
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


# bounds on MTP values; trained values are far inside them (alpha ~ 2 x rank, LoRA entries < 1)
ALPHA_MAX = 1e4
LORA_ABS_MAX = 1e3
MAX_MASKS = 64
TOKEN_TYPE_CONTROL = 3


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
    ok = {str: isinstance(value, str),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          bool: isinstance(value, (bool, int))}[kind]
    if not ok:
        raise FormatError(f"metadata key {key} has the wrong type")
    return kind(value)


def check_alpha(alpha) -> float:
    """The LoRA alpha of a checkpoint or an MTP GGUF: a finite number in (0, ALPHA_MAX]. A NaN or
    infinite alpha would reach ordinary tokens too (gate 0 x NaN = NaN), breaking exactness."""
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) \
            or not 0 < alpha <= ALPHA_MAX:
        raise FormatError(f"LoRA alpha {alpha!r} is invalid (must be a finite number in (0, {ALPHA_MAX:g}])")
    return float(alpha)


def check_eps(eps) -> float:
    """The sampler head's LayerNorm epsilon: finite, in (0, 1)."""
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or not 0 < eps < 1:
        raise FormatError(f"sampler norm epsilon {eps!r} is invalid (must be a finite number in (0, 1))")
    return float(eps)


def check_values(name: str, a, limit: float | None = None) -> None:
    """Every element of `a` finite (and within +-limit): NaN or inf in the adapter's matrices
    would reach ordinary tokens through 0 x inf, in the sampler head it would poison drafts."""
    x = np.asarray(a, dtype=np.float32)
    if not np.isfinite(x).all():
        raise FormatError(f"tensor {name} holds values that are not finite (NaN or infinity)")
    if limit is not None and x.size and float(np.abs(x).max()) > limit:
        raise FormatError(f"tensor {name} holds values beyond +-{limit:g}")


def open_gguf(path: str | Path, *, check: bool = True):
    """A GGUFFile over an untrusted file; any structural problem becomes FormatError, and with
    `check` (the default) so does any metadata value llama.cpp or mtpchat cannot handle
    (mtpchat/metadata.py)."""
    from . import metadata
    from .gguf_file import GGUFError, GGUFFile

    p = Path(path)
    if not p.exists():
        raise FormatError(f"no such file: {p}")
    if p.is_dir():
        raise FormatError(f"{p} is a directory, not a .gguf file")
    try:
        g = GGUFFile(p)
    except GGUFError as e:
        raise FormatError(f"{p}: {e}") from None
    except OSError as e:
        raise FormatError(f"cannot read {p}: {e.strerror}") from None
    if check:
        try:
            metadata.check(g)
        except FormatError as e:
            raise FormatError(f"{p.name}: {e}") from None
        metadata.mark_checked(p)
    return g


def read_mtp_info(g) -> MtpInfo | None:
    """The MTP metadata and sampler head of `g`, every value checked (None: a plain model)."""
    if KEY_VERSION not in g.kv:
        return None
    version = _get(g, KEY_VERSION, int)
    if version != FORMAT_VERSION:
        raise FormatError(f"MTP format version {version} is not supported (this mtpchat reads {FORMAT_VERSION})")
    tokens = g.kv.get("tokenizer.ggml.tokens", [])
    n_vocab = len(tokens) if isinstance(tokens, list) else 0
    mask_ids = _get(g, KEY_MASK_IDS, list)
    targets = _get(g, KEY_LORA_TARGETS, list)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in mask_ids):
        raise FormatError(f"{KEY_MASK_IDS} must be an array of integers")
    if not all(isinstance(t, str) for t in targets):
        raise FormatError(f"{KEY_LORA_TARGETS} must be an array of strings")
    info = MtpInfo(
        version=version,
        n_masks=_get(g, KEY_N_MASKS, int),
        mask_ids=list(mask_ids),
        lora_rank=_get(g, KEY_LORA_RANK, int),
        lora_alpha=_get(g, KEY_LORA_ALPHA, float),
        lora_targets=list(targets),
        sampler_act=_get(g, KEY_SAMPLER_ACT, str),
        sampler_norm=_get(g, KEY_SAMPLER_NORM, str),
        sampler_eps=_get(g, KEY_SAMPLER_EPS, float),
        sampler_residual=_get(g, KEY_SAMPLER_RESIDUAL, bool),
    )
    if not 1 <= info.n_masks <= MAX_MASKS or len(info.mask_ids) != info.n_masks:
        raise FormatError("mtp.n_masks does not match mtp.mask_token_ids")
    if any(not 0 <= i < n_vocab for i in info.mask_ids) or len(set(info.mask_ids)) != info.n_masks:
        raise FormatError("mask token ids are outside the vocabulary or repeated")
    # the gate applies the adapter to these ids: an ordinary or special token among them would
    # change ordinary tokens' outputs, and banning it would change the text
    types = g.kv.get("tokenizer.ggml.token_type")
    if isinstance(types, list) and any(types[i] != TOKEN_TYPE_CONTROL for i in info.mask_ids if i < len(types)):
        raise FormatError("mask token ids must be control tokens of their own")
    specials = {v for k, v in g.kv.items()
                if k.startswith("tokenizer.ggml.") and k.endswith("_token_id") and isinstance(v, int)}
    if specials & set(info.mask_ids):
        raise FormatError("a mask token id is also a special token (bos, eos, ...)")
    if (_get(g, KEY_SAMPLER_TYPE, str), _get(g, KEY_SAMPLER_INPUT, str)) != (SAMPLER_TYPE, SAMPLER_INPUT):
        raise FormatError("unknown sampler head type")
    if info.sampler_act != "silu" or info.sampler_norm != "layernorm" or not info.sampler_residual:
        raise FormatError(f"unsupported sampler head ({info.sampler_act}, {info.sampler_norm})")
    if g.kv_types[KEY_LORA_ALPHA][0].name != "FLOAT32":
        raise FormatError(f"{KEY_LORA_ALPHA} must be a float32")   # what the native loader reads
    check_alpha(info.lora_alpha)
    check_eps(info.sampler_eps)
    embd = g.tensors.get("token_embd.weight")
    if embd is None or len(embd.shape) != 2:
        raise FormatError("missing tensor token_embd.weight")
    n_embd = embd.shape[-1]
    if not 1 <= info.lora_rank <= n_embd:
        raise FormatError(f"{KEY_LORA_RANK} {info.lora_rank} is out of range (1..{n_embd})")
    _check_lora(g, info)
    if max(info.mask_ids) >= embd.shape[0]:
        raise FormatError("token_embd.weight has no rows for the mask tokens")
    check_values("token_embd.weight (mask rows)", g.rows("token_embd.weight", info.mask_ids))
    for name, shape in sampler_shapes(n_embd).items():
        t = g.tensors.get(SAMPLER_PREFIX + name)
        if t is None:
            raise FormatError(f"missing tensor {SAMPLER_PREFIX + name}")
        if t.type.name not in ("F32", "F16"):
            raise FormatError(f"tensor {t.name} must be F32 or F16")
        if t.shape != shape:
            raise FormatError(f"tensor {t.name} has shape {t.shape}, expected {shape}")
        info.sampler[name] = np.array(t.data, dtype=np.float32)
        check_values(t.name, info.sampler[name])
    return info


def _check_lora(g, info: MtpInfo) -> None:
    """The gated LoRA pairs: known targets of existing blocks, (rank, in) and (out, rank)
    matrices of F32/F16 with finite, bounded entries (gate 0 x inf = NaN on ordinary tokens)."""
    unknown = set(info.lora_targets) - set(LORA_TARGETS)
    if unknown:
        raise FormatError(f"unknown LoRA target {sorted(unknown)[0]!r}")
    pairs = 0
    for name, t in g.tensors.items():
        if not name.endswith((".lora_a", ".lora_b")):
            continue
        base = name[:-len(".lora_a")]
        parts = base.split(".")
        if len(parts) != 4 or parts[0] != "blk" or parts[2] not in info.lora_targets or parts[3] != "weight":
            raise FormatError(f"unexpected adapter tensor {name}")
        w = g.tensors.get(base)
        if w is None or len(w.shape) != 2:
            raise FormatError(f"adapter tensor {name} has no base weight {base}")
        if t.type.name not in ("F32", "F16"):
            raise FormatError(f"tensor {name} must be F32 or F16")
        n_out, n_in = w.shape
        want = (info.lora_rank, n_in) if name.endswith("_a") else (n_out, info.lora_rank)
        if t.shape != want:
            raise FormatError(f"tensor {name} has shape {t.shape}, expected {want}")
        other = base + (".lora_b" if name.endswith("_a") else ".lora_a")
        if other not in g.tensors:
            raise FormatError(f"tensor {other} is missing")
        check_values(name, t.data, LORA_ABS_MAX)
        pairs += 1
    if not pairs:
        raise FormatError("the MTP model has no LoRA tensors")
