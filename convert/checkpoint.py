"""The MTP checkpoint format (docs/CHECKPOINT.md) at the numpy level: its constants and names,
reading and checking a folder, and turning it into `MtpParts` for a base GGUF (and back).

    mtp_config.json               what the parts are (format "mtpchat-checkpoint", version 1)
    adapter_model.safetensors     gated LoRA, PEFT names, Hugging Face (un-permuted) layout
    sampler.safetensors           fc1/norm1/fc2/norm2 weights and biases
    mask_embeddings.safetensors   mask_embeddings (k, d) [+ mask_output (k, d) for untied outputs]
    resume/                       trainer only (optimizer state, step); converters ignore it

`mtpchat convert` and the trainer (train/checkpoint.py, which writes the tensors from torch) both
take the format from here. Every check that can fail on user input raises `ConvertError` with
one readable line.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtpchat import format as F

from .tensorfile import TensorFileError, read_header, read_safetensors
from .writer import MtpParts

FORMAT = "mtpchat-checkpoint"
FORMAT_VERSION = 1
CONFIG = "mtp_config.json"
ADAPTER = "adapter_model.safetensors"
SAMPLER = "sampler.safetensors"
MASKS = "mask_embeddings.safetensors"
RESUME = "resume"
FILES = (CONFIG, ADAPTER, SAMPLER, MASKS)    # what a checkpoint folder holds (besides a base model)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# what PEFT puts before `layers.` for a causal LM; readers match from `layers.` on (PEFT_NAME)
PEFT_PREFIX = "base_model.model.model."

# Hugging Face module name -> GGUF tensor name of the same linear layer
HF_TO_GGUF = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")   # under self_attn; the rest under mlp
# `...layers.{i}.self_attn.q_proj.lora_A.weight`; the prefix before `layers` varies with the
# model class (model., model.language_model., ...), so only the tail is matched
PEFT_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$")
# architectures whose llama.cpp converter permutes Q/K rows for its rope layout
PERMUTED_QK = ("llama",)
SAMPLER_EPS = 1e-5


class ConvertError(Exception):
    """A checkpoint cannot be read or converted; the message is shown to the user as it is."""


@dataclass
class Checkpoint:
    folder: Path
    config: dict
    arch: str
    hidden_size: int
    vocab_size: int
    n_masks: int
    mask_tokens: list[str]
    rank: int
    alpha: float
    targets: list[str]
    sampler_eps: float


# -- names --------------------------------------------------------------------------------------

def peft_stem(layer: int, module: str) -> str:
    """`layers.{i}.self_attn.q_proj` / `layers.{i}.mlp.down_proj`: a LoRA module's path in the block."""
    return f"layers.{layer}.{'self_attn' if module in ATTENTION_MODULES else 'mlp'}.{module}"


def peft_name(stem: str, ab: str, prefix: str = PEFT_PREFIX) -> str:
    """The adapter tensor name of LoRA matrix `ab` ("A" or "B") of the module at `stem`."""
    return f"{prefix}{stem}.lora_{ab}.weight"


# -- mtp_config.json ----------------------------------------------------------------------------

def make_config(*, base_model: str, architecture: str, hidden_size: int, vocab_size: int, n_masks: int,
                rank: int, alpha: float, targets, mask_tokens=None, norm_eps: float = SAMPLER_EPS,
                training: dict | None = None) -> dict:
    """The mtp_config.json of a checkpoint (docs/CHECKPOINT.md)."""
    cfg = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "base_model": base_model,
        "architecture": architecture, "hidden_size": int(hidden_size), "vocab_size": int(vocab_size),
        "n_masks": int(n_masks),
        "mask_tokens": list(mask_tokens or [F.mask_token_text(j + 1) for j in range(n_masks)]),
        "lora": {"rank": int(rank), "alpha": float(alpha), "target_modules": list(targets)},
        "sampler": {"type": F.SAMPLER_TYPE, "input": F.SAMPLER_INPUT, "activation": "silu",
                    "norm": "layernorm", "norm_eps": float(norm_eps), "residual": True,
                    "hidden_size": int(hidden_size)},
    }
    if training:
        cfg["training"] = training
    return cfg


def write_config(folder: Path, cfg: dict) -> None:
    (Path(folder) / CONFIG).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def pickle_instead(folder: Path, stem: str) -> Path | None:
    """A pickle file standing where `stem`.safetensors should be (adapter_model.bin, ...)."""
    for suffix in PICKLE_SUFFIXES:
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    return None


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConvertError(msg)


def _int(cfg: dict, key: str, where: str = CONFIG) -> int:
    v = cfg.get(key)
    _require(isinstance(v, int) and not isinstance(v, bool) and v > 0, f"{where}: '{key}' must be a positive integer")
    return v


def read_config(folder: str | Path) -> dict:
    """mtp_config.json of `folder` as a dict, checked to be this format and version only."""
    folder = Path(folder)
    _require(folder.is_dir(), f"{folder} is not a folder")
    cfg_path = folder / CONFIG
    if not cfg_path.is_file():
        if not any(folder.iterdir()):
            raise ConvertError(f"{folder} is empty: an MTP checkpoint needs {CONFIG} and its safetensors files")
        raise ConvertError(f"{folder} is not an MTP checkpoint: {CONFIG} is missing")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{cfg_path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ConvertError(f"{cfg_path} is not valid JSON: nested too deeply") from None
    _require(isinstance(cfg, dict), f"{CONFIG} must hold a JSON object")
    _require(cfg.get("format") == FORMAT, f"{CONFIG}: 'format' must be \"{FORMAT}\"")
    version = cfg.get("format_version")
    _require(version == FORMAT_VERSION,
             f"checkpoint format version {version!r} is not supported (this mtpchat reads version {FORMAT_VERSION})")
    return cfg


def load_checkpoint(folder: str | Path) -> Checkpoint:
    """Read and check mtp_config.json; the tensor files are checked when they are read."""
    folder = Path(folder)
    cfg = read_config(folder)
    arch = cfg.get("architecture")
    _require(arch in F.SUPPORTED_ARCHS,
             f"architecture {arch!r} is not supported yet (supported: {', '.join(F.SUPPORTED_ARCHS)})")
    d = _int(cfg, "hidden_size")
    vocab = _int(cfg, "vocab_size")
    k = _int(cfg, "n_masks")
    _require(k <= 64, f"{CONFIG}: n_masks {k} is more than 64")
    masks = cfg.get("mask_tokens", [F.mask_token_text(j + 1) for j in range(k)])
    _require(isinstance(masks, list) and len(masks) == k and all(isinstance(m, str) and m for m in masks)
             and len(set(masks)) == k, f"{CONFIG}: 'mask_tokens' must list {k} distinct strings")

    lora = cfg.get("lora")
    _require(isinstance(lora, dict), f"{CONFIG}: 'lora' section missing")
    rank = _int(lora, "rank", f"{CONFIG} lora")
    alpha = lora.get("alpha")
    _require(isinstance(alpha, (int, float)) and not isinstance(alpha, bool), f"{CONFIG}: lora 'alpha' must be a number")
    try:   # Python's json reads NaN and Infinity; a NaN alpha would reach ordinary tokens
        F.check_alpha(alpha)
    except F.FormatError as e:
        raise ConvertError(f"{CONFIG}: {e}") from None
    targets = lora.get("target_modules")
    _require(isinstance(targets, list) and targets and all(isinstance(t, str) and t in HF_TO_GGUF for t in targets)
             and len(set(targets)) == len(targets),
             f"{CONFIG}: lora 'target_modules' must be a non-empty subset of {', '.join(HF_TO_GGUF)}")

    s = cfg.get("sampler")
    _require(isinstance(s, dict), f"{CONFIG}: 'sampler' section missing")
    want = {"type": F.SAMPLER_TYPE, "input": F.SAMPLER_INPUT, "activation": "silu", "norm": "layernorm", "residual": True}
    for key, value in want.items():
        _require(s.get(key, value) == value, f"sampler {key} {s.get(key)!r} is not supported (only {value!r})")
    eps = s.get("norm_eps", SAMPLER_EPS)
    _require(isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and 0 < eps < 1,
             f"{CONFIG}: sampler 'norm_eps' must be a finite number in (0, 1)")
    _require(s.get("hidden_size", d) == d, f"sampler hidden_size {s.get('hidden_size')} differs from hidden_size {d}")
    return Checkpoint(folder, cfg, arch, d, vocab, k, list(masks), rank, float(alpha), list(targets), float(eps))


# -- tensor files -------------------------------------------------------------------------------

def read_tensors(folder: Path, name: str) -> dict[str, np.ndarray]:
    """The tensors of one of the folder's safetensors files, with the user-facing errors of a missing,
    pickled or unreadable file."""
    path = folder / name
    if not path.is_file():
        stem = name.removesuffix(".safetensors")
        if (p := pickle_instead(folder, stem)) is not None:
            raise ConvertError(f"{p.name} is a pickle file: mtpchat reads only safetensors and never unpickles "
                               f"downloaded files (save it as {name})")
        raise ConvertError(f"{name} is missing from {folder}")
    try:
        return read_safetensors(path)
    except TensorFileError as e:
        raise ConvertError(str(e)) from None


def _finite(what: str, a: np.ndarray, limit: float | None = None) -> None:
    _require(a.dtype.kind == "f", f"{what} must be a floating-point tensor, not {a.dtype}")
    try:
        F.check_values(what, a, limit)
    except F.FormatError as e:
        raise ConvertError(str(e)) from None


def check_files(folder: Path) -> None:
    """Fail early (before a long base conversion) on a missing, pickled or truncated file."""
    for name in (ADAPTER, SAMPLER, MASKS):
        path = folder / name
        if not path.is_file():
            read_tensors(folder, name)  # raises the right message
        try:
            read_header(path)
        except TensorFileError as e:
            raise ConvertError(str(e)) from None


# -- Q/K row order ------------------------------------------------------------------------------

def permute_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order for rope (LlamaModel.permute in convert_hf_to_gguf): within each
    head the two interleaved halves of the head dimension are regrouped. Applied to LoRA B, whose
    rows are output rows of q_proj/k_proj; A is untouched."""
    n_out = b.shape[0]
    return b.reshape(n_head, 2, n_out // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def unpermute_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of `permute_rows`: llama.cpp's Q/K row order back to Hugging Face's."""
    n_out = b.shape[0]
    return b.reshape(n_head, n_out // n_head // 2, 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


# -- against a base GGUF ------------------------------------------------------------------------

def base_facts(g) -> dict:
    """What the checks need from a base GGUF."""
    arch = str(g.kv.get("general.architecture", ""))
    embd = g.tensors.get("token_embd.weight")
    if embd is None:
        raise ConvertError("the base GGUF has no token_embd.weight")
    return {"arch": arch, "n_vocab": len(g.kv.get("tokenizer.ggml.tokens", [])), "n_embd": int(embd.shape[1]),
            "n_layer": int(g.kv.get(f"{arch}.block_count", 0)),
            "n_head": int(g.kv.get(f"{arch}.attention.head_count", 0)),
            "n_head_kv": int(g.kv.get(f"{arch}.attention.head_count_kv", g.kv.get(f"{arch}.attention.head_count", 0))),
            "tokens": set(map(str, g.kv.get("tokenizer.ggml.tokens", []))),
            "shapes": {n: tuple(t.shape) for n, t in g.tensors.items()}}


def check_against_base(ck: Checkpoint, base: dict) -> None:
    _require(base["arch"] == ck.arch,
             f"the checkpoint is for architecture '{ck.arch}' but the base model is '{base['arch']}'")
    _require(base["n_embd"] == ck.hidden_size,
             f"hidden size mismatch: the checkpoint has {ck.hidden_size}, the base model {base['n_embd']}")
    _require(base["n_vocab"] == ck.vocab_size,
             f"vocabulary mismatch: the checkpoint was trained on {ck.vocab_size} tokens, the base model has {base['n_vocab']}")
    clash = [m for m in ck.mask_tokens if m in base["tokens"]]
    _require(not clash, f"mask token {clash[0] if clash else ''!r} is already in the base vocabulary")


def build_parts(ck: Checkpoint, base: dict) -> MtpParts:
    """Read the checkpoint's tensors and map them onto the base's GGUF names, checking every shape."""
    check_against_base(ck, base)
    d, k, r = ck.hidden_size, ck.n_masks, ck.rank

    masks = read_tensors(ck.folder, MASKS)
    emb = masks.pop("mask_embeddings", None)
    _require(emb is not None, f"{MASKS} has no tensor 'mask_embeddings'")
    _require(emb.shape == (k, d), f"shape mismatch: mask_embeddings is {emb.shape}, expected ({k}, {d})")
    out = masks.pop("mask_output", None)
    _require(out is None or out.shape == (k, d), f"shape mismatch: mask_output is {None if out is None else out.shape}, expected ({k}, {d})")
    _require(not masks, f"{MASKS} has unexpected tensors: {', '.join(sorted(masks))}")
    _finite("mask_embeddings", emb)
    if out is not None:
        _finite("mask_output", out)

    sampler = read_tensors(ck.folder, SAMPLER)
    for name, want in F.sampler_shapes(d).items():
        _require(name in sampler, f"{SAMPLER} has no tensor '{name}'")
        _require(sampler[name].shape == want, f"shape mismatch: sampler {name} is {sampler[name].shape}, expected {want}")
    extra = set(sampler) - set(F.SAMPLER_TENSORS)
    _require(not extra, f"{SAMPLER} has unexpected tensors: {', '.join(sorted(extra))}")
    for name in F.SAMPLER_TENSORS:
        _finite(f"sampler {name}", sampler[name])

    raw = read_tensors(ck.folder, ADAPTER)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for name, a in raw.items():
        m = PEFT_NAME.search(name)
        _require(m is not None and m.group(2) in HF_TO_GGUF, f"{ADAPTER}: unexpected tensor '{name}'")
        layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
        _require(module in ck.targets, f"{ADAPTER}: '{name}' is not among the configured target_modules")
        _require(layer < base["n_layer"], f"{ADAPTER}: layer {layer} does not exist, the base model has {base['n_layer']} layers")
        gname = f"blk.{layer}.{HF_TO_GGUF[module]}.weight"
        _require(ab not in pairs.setdefault(gname, {}), f"{ADAPTER}: '{name}' appears twice")
        pairs[gname][ab] = a
    _require(bool(pairs), f"{ADAPTER} holds no LoRA tensors")
    all_f16 = all(a.dtype == np.float16 for a in raw.values())

    lora = {}
    for gname, ab in pairs.items():
        _require(set(ab) == {"A", "B"}, f"{ADAPTER}: {gname} has lora_{'A' if 'A' not in ab else 'B'} missing")
        a, b = ab["A"], ab["B"]
        shape = base["shapes"].get(gname)
        _require(shape is not None, f"the base model has no {gname}")
        n_out, n_in = shape
        _require(a.ndim == 2 and a.shape == (r, n_in) and b.ndim == 2 and b.shape == (n_out, r),
                 f"shape mismatch: LoRA {gname} has A {a.shape} and B {b.shape}, the base weight is ({n_out}, {n_in}) at rank {r}")
        if ck.arch in PERMUTED_QK and gname.endswith((".attn_q.weight", ".attn_k.weight")):
            heads = base["n_head"] if ".attn_q." in gname else base["n_head_kv"]
            _require(heads > 0 and n_out % (2 * heads) == 0, f"cannot permute {gname}: bad head count {heads}")
            b = permute_rows(b, heads)
        _finite(f"LoRA {gname} A", a, F.LORA_ABS_MAX)
        _finite(f"LoRA {gname} B", b, F.LORA_ABS_MAX)
        lora[gname] = (np.asarray(a, np.float32), np.asarray(b, np.float32))

    return MtpParts(mask_embd=emb.astype(np.float32), lora=lora, rank=r, alpha=ck.alpha,
                    sampler={n: sampler[n].astype(np.float32) for n in F.SAMPLER_TENSORS},
                    mask_output=None if out is None else out.astype(np.float32), sampler_eps=ck.sampler_eps,
                    lora_dtype="F16" if all_f16 else "F32", mask_tokens=list(ck.mask_tokens))


def write_checkpoint(folder: str | Path, parts: MtpParts, *, arch: str, vocab_size: int, n_head: int = 0,
                     n_head_kv: int = 0, base_model: str = "", hf_prefix: str = PEFT_PREFIX) -> Path:
    """Write `parts` (GGUF names and row order, as convert produces them) as a checkpoint folder in
    the trainer's format: the inverse of `build_parts`. Used by tests and tools."""
    from .tensorfile import write_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    to_hf = {v: k for k, v in HF_TO_GGUF.items()}
    adapter = {}
    for gname, (a, b) in sorted(parts.lora.items()):
        _, layer, target, _ = gname.split(".")
        module = to_hf[target]
        if arch in PERMUTED_QK and target in ("attn_q", "attn_k"):
            b = unpermute_rows(b, n_head if target == "attn_q" else n_head_kv)
        stem = peft_stem(int(layer), module)
        adapter[peft_name(stem, "A", hf_prefix)] = a
        adapter[peft_name(stem, "B", hf_prefix)] = b
    k, d = parts.mask_embd.shape
    targets = sorted({to_hf[n.split(".")[2]] for n in parts.lora}, key=list(HF_TO_GGUF).index)
    write_config(folder, make_config(base_model=base_model, architecture=arch, hidden_size=d, vocab_size=vocab_size,
                                     n_masks=k, rank=parts.rank, alpha=parts.alpha, targets=targets,
                                     mask_tokens=parts.mask_tokens, norm_eps=parts.sampler_eps))
    write_safetensors(folder / ADAPTER, adapter)
    write_safetensors(folder / SAMPLER, dict(parts.sampler))
    masks = {"mask_embeddings": parts.mask_embd}
    if parts.mask_output is not None:
        masks["mask_output"] = parts.mask_output
    write_safetensors(folder / MASKS, masks)
    return folder
