"""Checks on a GGUF's metadata values before llama.cpp (or mtpchat) reads them.

llama.cpp trusts many values: a layer count above its limit, an expert count on a dense model,
an unknown rope scaling type, a negative norm epsilon or a duplicated vocabulary entry stop the
process with a failed GGML_ASSERT (exit 134 and a debugger dump), and a token id outside the
vocabulary makes `llama_vocab_get_text` throw through the C API. `check(g)` is the one function
every path that loads a model runs first (`format.open_gguf`, hence the engine, `binding.Model`,
`mtpchat info`, convert and train's target generation): each problem becomes one
`FormatError` line. The limits are the pinned llama.cpp's (src/llama-model.cpp load_hparams,
src/llama-vocab.cpp load, src/llama-hparams.h); tests/test_fuzz_metadata.py feeds it hostile
values and checks that nothing gets past it to an abort.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
from gguf import GGUFValueType

from . import format as F

LLAMA_MAX_LAYERS = 512          # llama-hparams.h: block_count is asserted against it
LLAMA_MAX_EXPERTS = 1024
INT32_MAX = 2**31 - 1           # llama.cpp hands counts and ids out as int32
MAX_CHAT_TEMPLATE = 1 << 20     # characters; real templates are a few KiB
# the tokenizer types llama.cpp loads without asserting later ("bert" and "none" abort in the
# tokenizer without their special tokens; unknown names fail to load)
TOKENIZER_MODELS = ("llama", "gpt2", "t5", "rwkv", "plamo2")
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
SPECIAL_ID = re.compile(r"^tokenizer\.ggml\.\w+_token_id$")
BOOL_KEYS = ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_sep_token",
             "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.remove_extra_whitespaces")

# general.sampling.<key>: (kind, test, what), the same ranges `mtpchat run` accepts for its options
SAMPLING = {
    "temp": (float, lambda v: v >= 0, "0 or more"),
    "top_k": (int, lambda v: 0 <= v <= INT32_MAX, "0 or more"),
    "top_p": (float, lambda v: 0 < v <= 1, "in (0, 1]"),
    "min_p": (float, lambda v: 0 <= v < 1, "in [0, 1)"),
    "penalty_repeat": (float, lambda v: v > 0, "more than 0"),
    "penalty_last_n": (int, lambda v: -1 <= v <= INT32_MAX, "-1 or more"),
    "xtc_probability": (float, lambda v: 0 <= v <= 1, "in [0, 1]"),
    "xtc_threshold": (float, lambda v: 0 <= v <= 1, "in [0, 1]"),
    "mirostat": (int, lambda v: v in (0, 1, 2), "0, 1 or 2"),
    "mirostat_tau": (float, lambda v: v >= 0, "0 or more"),
    "mirostat_eta": (float, lambda v: v >= 0, "0 or more"),
}


def _fail(msg: str):
    raise F.FormatError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _gguf_type(g, key, want: str) -> None:
    """llama.cpp reads each key as one GGUF type and refuses others (with a vaguer message)."""
    vtype, sub = g.kv_types[key]
    if vtype.name != want:
        _fail(f"metadata key {key} must be a {want.lower()}, not a{'n' if vtype.name[0] in 'AIU' else ''} "
              f"{vtype.name.lower()}")


def _int(g, key, lo, hi, *, required=False, default=None, u32=True):
    """An integer key within [lo, hi]; `u32`: llama.cpp reads it as a uint32."""
    if key not in g.kv:
        if required:
            _fail(f"missing metadata key {key}")
        return default
    v = g.kv[key]
    if not _is_int(v):
        _fail(f"metadata key {key} must be an integer")
    if u32:
        _gguf_type(g, key, "UINT32")
    if not lo <= v <= hi:
        _fail(f"metadata key {key} = {v} is out of range ({lo}..{hi})")
    return v


def _float(g, key, test, what, *, required=False):
    """A float32 key (as llama.cpp reads it), finite and passing `test`."""
    if key not in g.kv:
        if required:
            _fail(f"missing metadata key {key}")
        return None
    v = g.kv[key]
    if not _is_num(v):
        _fail(f"metadata key {key} must be a number")
    _gguf_type(g, key, "FLOAT32")
    if not math.isfinite(v) or not test(v):
        _fail(f"metadata key {key} = {v} is invalid (must be finite and {what})")
    return float(v)


def _per_layer(g, key, n_layer, lo, hi) -> list[int] | None:
    """A count given once or per layer (llama.cpp's get_key_or_arr): the per-layer values."""
    if key not in g.kv:
        return None
    v = g.kv[key]
    if not isinstance(v, list):
        _gguf_type(g, key, "UINT32")
    elif g.kv_types[key][1] is None or g.kv_types[key][1].name not in ("UINT32", "INT32", "BOOL"):
        _fail(f"metadata key {key} must be an array of integers")
    if isinstance(v, list):
        if len(v) != n_layer:
            _fail(f"metadata key {key} has {len(v)} entries for {n_layer} layers")
        values = v
    else:
        values = [v]
    for x in values:
        if not _is_int(x) or not lo <= x <= hi:
            _fail(f"metadata key {key} holds {x!r}, outside {lo}..{hi}")
    return list(values) if isinstance(v, list) else values * n_layer


def _string(g, key, *, required=False, limit=1 << 16):
    if key not in g.kv:
        if required:
            _fail(f"missing metadata key {key}")
        return None
    v = g.kv[key]
    if not isinstance(v, str):
        _fail(f"metadata key {key} must be a string")
    _gguf_type(g, key, "STRING")
    if len(v) > limit:
        _fail(f"metadata key {key} is implausibly long ({len(v)} characters)")
    return v


# -- the parts ---------------------------------------------------------------------------------

def _tokenizer(g) -> int:
    """Checks the vocabulary; returns its size."""
    model = _string(g, "tokenizer.ggml.model", required=True)
    if model not in TOKENIZER_MODELS:
        _fail(f"tokenizer model '{model}' is not supported (supported: {', '.join(TOKENIZER_MODELS)})")
    _string(g, "tokenizer.ggml.pre")
    tokens = g.kv.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or g.kv_types["tokenizer.ggml.tokens"][1] is not GGUFValueType.STRING:
        _fail("tokenizer.ggml.tokens must be an array of strings")
    n = len(tokens)
    if not 1 <= n <= INT32_MAX:
        _fail(f"the vocabulary has {n} tokens")
    # llama.cpp maps text -> id and asserts that no two entries collide; it renames empty ones
    words = {t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)}
    if len(words) != n:
        seen, dup = set(), None
        for t in tokens:
            # invalid UTF-8 is read as U+FFFD: two such entries may differ in their bytes, which
            # is all llama.cpp compares (were they equal after all, the abort net still holds)
            if t in seen and "\ufffd" not in t:
                dup = t
                break
            seen.add(t)
        if dup is not None:
            _fail(f"the vocabulary lists the token {dup!r} twice")
    for key, kinds in (("tokenizer.ggml.scores", ("FLOAT32", "INT32")), ("tokenizer.ggml.token_type", ("INT32",))):
        if key not in g.kv:
            continue
        v, (vtype, sub) = g.kv[key], g.kv_types[key]
        if not isinstance(v, list) or sub is None or sub.name not in kinds:
            _fail(f"{key} must be an array of {' or '.join(k.lower() for k in kinds)}")
        if len(v) < n:
            _fail(f"{key} has {len(v)} entries for {n} tokens")
        if key.endswith("scores") and np.isnan(np.asarray(v, dtype=np.float64)).any():
            _fail(f"{key} holds NaN")   # -inf is a real score (never merge); NaN breaks every comparison
    if "tokenizer.ggml.merges" in g.kv:
        m = g.kv["tokenizer.ggml.merges"]
        if not isinstance(m, list) or g.kv_types["tokenizer.ggml.merges"][1] is not GGUFValueType.STRING:
            _fail("tokenizer.ggml.merges must be an array of strings")
    elif model == "gpt2":
        _fail("a gpt2 (BPE) tokenizer needs tokenizer.ggml.merges")
    for key in g.kv:
        if SPECIAL_ID.match(key):
            v = g.kv[key]
            if not _is_int(v) or not 0 <= v < n:
                _fail(f"metadata key {key} = {v!r} is not a token of the vocabulary ({n} tokens)")
            _gguf_type(g, key, "UINT32")
    if "tokenizer.ggml.suppress_tokens" in g.kv:
        v = g.kv["tokenizer.ggml.suppress_tokens"]
        if not isinstance(v, list) or not all(_is_int(x) and 0 <= x < n for x in v):
            _fail("tokenizer.ggml.suppress_tokens must list token ids of the vocabulary")
    for key in BOOL_KEYS:
        if key in g.kv:
            _gguf_type(g, key, "BOOL")
    for key in g.kv:
        if key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template."):
            _string(g, key, limit=MAX_CHAT_TEMPLATE)
    return n


def _hparams(g, arch: str) -> None:
    """What llama_model_base::load_hparams reads for every architecture, plus what the four
    supported ones (llama, qwen2, qwen3, gemma3) read in their own load_arch_hparams."""
    a = arch
    _int(g, f"{a}.context_length", 1, INT32_MAX, required=True)
    n_embd = _int(g, f"{a}.embedding_length", 1, INT32_MAX, required=True)
    _int(g, f"{a}.embedding_length_out", 0, INT32_MAX)
    n_layer = _int(g, f"{a}.block_count", 1, LLAMA_MAX_LAYERS, required=True)
    _int(g, f"{a}.nextn_predict_layers", 0, n_layer - 1)
    # mixture of experts: load_hparams asserts these relations
    n_expert = _int(g, f"{a}.expert_count", 0, LLAMA_MAX_EXPERTS, default=0)
    used = _per_layer(g, f"{a}.expert_used_count", n_layer, 0, LLAMA_MAX_EXPERTS) or [0]
    groups = _int(g, f"{a}.expert_group_count", 0, LLAMA_MAX_EXPERTS, default=0)
    group_used = _int(g, f"{a}.expert_group_used_count", 0, LLAMA_MAX_EXPERTS, default=0)
    if max(used) > n_expert:
        _fail(f"{a}.expert_used_count {max(used)} is more than {a}.expert_count {n_expert}")
    if n_expert > 0:
        if max(used) == 0:
            _fail(f"{a}.expert_count is {n_expert} but no expert is used ({a}.expert_used_count)")
        if groups >= n_expert:
            _fail(f"{a}.expert_group_count {groups} must be less than {a}.expert_count {n_expert}")
        if groups > 1 and (n_expert % groups or not 0 < group_used < groups):
            _fail(f"{a}.expert_group_count {groups} and {a}.expert_group_used_count {group_used} do not "
                  f"fit {n_expert} experts")
    elif groups:
        _fail(f"{a}.expert_group_count is set on a model without experts")
    _per_layer(g, f"{a}.feed_forward_length", n_layer, 0, INT32_MAX)
    heads = _per_layer(g, f"{a}.attention.head_count", n_layer, 0, 1 << 16)
    heads_kv = _per_layer(g, f"{a}.attention.head_count_kv", n_layer, 0, 1 << 16)
    for key in ("key_length", "value_length", "key_length_swa", "value_length_swa"):
        _int(g, f"{a}.attention.{key}", 1, 1 << 16)
    for key in ("rope.dimension_count", "rope.dimension_count_swa"):
        _int(g, f"{a}.{key}", 0, 1 << 16)
    _int(g, f"{a}.rope.scaling.original_context_length", 0, INT32_MAX)
    rope = _string(g, f"{a}.rope.scaling.type")
    if rope is not None and rope not in ROPE_SCALING_TYPES:
        _fail(f"{a}.rope.scaling.type '{rope}' is not one of {', '.join(ROPE_SCALING_TYPES)}")
    _float(g, f"{a}.rope.freq_base", lambda v: v > 0, "more than 0")
    _float(g, f"{a}.rope.freq_base_swa", lambda v: v > 0, "more than 0")
    _float(g, f"{a}.rope.scaling.factor", lambda v: v >= 0, "0 or more")
    _float(g, f"{a}.rope.scale_linear", lambda v: v >= 0, "0 or more")
    _float(g, f"{a}.rope.scaling.attn_factor", lambda v: 0 < v <= 1e3, "in (0, 1000]")
    _float(g, f"{a}.rope.scaling.yarn_log_multiplier", lambda v: abs(v) <= 1e3, "at most 1000 in size")
    _float(g, f"{a}.attention.layer_norm_epsilon", lambda v: 0 <= v <= 1, "in [0, 1]")
    _float(g, f"{a}.final_logit_softcapping", lambda v: v >= 0, "0 or more")
    _float(g, f"{a}.attn_logit_softcapping", lambda v: v >= 0, "0 or more")
    _int(g, f"{a}.attention.sliding_window", 0, INT32_MAX)
    pattern = g.kv.get(f"{a}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) > LLAMA_MAX_LAYERS:
        _fail(f"{a}.attention.sliding_window_pattern has more than {LLAMA_MAX_LAYERS} entries")
    if pattern is not None and not isinstance(pattern, list):
        _int(g, f"{a}.attention.sliding_window_pattern", 0, INT32_MAX)
    _int(g, f"{a}.vocab_size", 0, INT32_MAX)

    if arch not in F.SUPPORTED_ARCHS:
        return  # llama.cpp checks the rest of other architectures' keys itself
    _float(g, f"{a}.attention.layer_norm_rms_epsilon", lambda v: 0 <= v <= 1, "in [0, 1]", required=True)
    if heads is None:
        _fail(f"missing metadata key {a}.attention.head_count")
    heads_kv = heads_kv or heads
    for h, hkv in zip(heads, heads_kv):
        if h < 1 or hkv < 1 or h % hkv:
            _fail(f"{a}.attention.head_count {h} is not a positive multiple of head_count_kv {hkv}")
    if n_embd % heads[0] and f"{a}.attention.key_length" not in g.kv:
        _fail(f"{a}.embedding_length {n_embd} is not a multiple of {a}.attention.head_count {heads[0]}")


def _sampling(g) -> None:
    for key, (kind, test, what) in SAMPLING.items():
        full = f"general.sampling.{key}"
        if full not in g.kv:
            continue
        v = g.kv[full]
        ok = _is_int(v) if kind is int else _is_num(v) and math.isfinite(v)
        if not ok or not test(v):
            _fail(f"metadata key {full} = {v!r} is invalid (must be {'an integer' if kind is int else 'a finite number'}, {what})")
    _string(g, "general.sampling.sequence")


# -- the one entry point ------------------------------------------------------------------------

def check(g) -> None:
    """Raise FormatError (one line) unless every metadata value llama.cpp or mtpchat reads from
    the GGUF `g` (a GGUFFile) is of the right type and within the range it can handle."""
    arch = _string(g, "general.architecture", required=True)
    if not arch:
        _fail("general.architecture is empty")
    if g.kv.get("general.type", "model") not in ("model",):
        t = g.kv.get("general.type")
        _fail(f"this GGUF is a{'n' if str(t)[:1] in 'aeiou' else ''} {t}, not a model" if isinstance(t, str)
              else "general.type must be a string")
    align = g.kv.get("general.alignment")
    if align is not None and (g.kv_types["general.alignment"][0].name != "UINT32" or align < 8):
        _fail("general.alignment must be a uint32 power of two of at least 8")
    _int(g, "general.file_type", 0, INT32_MAX)
    if not g.tensors:
        _fail("the GGUF holds no tensors")
    if arch in F.SUPPORTED_ARCHS and "token_embd.weight" not in g.tensors:
        _fail("the GGUF has no token_embd.weight")
    _tokenizer(g)
    _hparams(g, arch)
    _sampling(g)
    info = F.read_mtp_info(g)   # the MTP keys and tensors, when there are any
    if info is not None and arch not in F.SUPPORTED_ARCHS:
        _fail(f"MTP models of architecture '{arch}' are not supported (supported: {', '.join(F.SUPPORTED_ARCHS)})")


# files already checked in this process, by identity and modification time: the engine opens a
# file with format.open_gguf and then hands the same path to llama.cpp through binding.Model
_checked: set[tuple] = set()


def _identity(path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def mark_checked(path) -> None:
    key = _identity(path)
    if key is not None:
        _checked.add(key)


def check_file(path: str | Path) -> None:
    """check() the GGUF at `path` unless this process already did (and it has not changed)."""
    key = _identity(path)
    if key is not None and key in _checked:
        return
    F.open_gguf(path)   # checks, and marks the file as checked
