"""Load the frozen base model into torch: a GGUF file (dequantised by transformers' GGUF
reader, Q/K un-permuted) or a Hugging Face folder / repo id."""
from __future__ import annotations

from pathlib import Path

from mtpchat.format import SUPPORTED_ARCHS


class TrainError(ValueError):
    """Bad input to the trainer: reported as one line, never a traceback."""


def pick_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but torch sees no CUDA device")
    if name != "cpu" and not name.startswith("cuda"):
        raise TrainError(f"unknown device '{name}' (auto, cpu, cuda)")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Without it torch's bf16
    matmuls are emulated: on the 2-core AVX2 machine here a SmolLM2 mask pass + backward took
    ~390 s in bf16 against ~25 s in float32."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_dtype(name: str, device=None):
    """'auto': bf16 on CUDA and on CPUs with native bf16, float32 elsewhere."""
    import torch

    if name == "auto":
        cuda = device is not None and getattr(device, "type", str(device)).startswith("cuda")
        return torch.bfloat16 if cuda or cpu_has_bf16() else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
             "f32": torch.float32}
    if name not in table:
        raise TrainError(f"unknown dtype '{name}' (auto, bf16, fp32)")
    return table[name]


def is_gguf(spec: str | Path) -> bool:
    return str(spec).lower().endswith(".gguf")


def gguf_has_output(path: Path) -> bool:
    from mtpchat import format as F

    return "output.weight" in F.open_gguf(path).tensors


def load_base(spec: str | Path, *, dtype=None, device=None):
    """The base causal LM, frozen, cast once to `dtype` and moved to `device`."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = str(spec)
    dtype = dtype or torch.bfloat16
    try:
        if is_gguf(spec):
            p = Path(spec)
            if not p.is_file():
                raise TrainError(f"no such GGUF file: {p}")
            tied = not gguf_has_output(p)
            # load in float32 (the dequantised values), cast once below
            model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
            # the GGUF loader marks the model as quantised though its weights are plain tensors now
            for obj in (model.config, getattr(model, "generation_config", None)):
                if obj is not None and hasattr(obj, "quantization_config"):
                    try:
                        delattr(obj, "quantization_config")
                    except AttributeError:
                        pass
            model.hf_quantizer = None
            if tied:
                # no output.weight in the file: the unembedding is the token embedding
                model.config.tie_word_embeddings = True
                model.lm_head.weight = model.model.embed_tokens.weight
        else:
            model = AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    except TrainError:
        raise
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainError(f"cannot load base model {spec}: {first}") from None
    arch = model.config.model_type
    if arch == "gemma3_text":
        arch = "gemma3"
    if arch not in SUPPORTED_ARCHS:
        raise TrainError(f"architecture '{arch}' is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
    model.config.architecture_name = arch
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    # pre-cast once: autocast would re-cast the frozen weights on every step
    model.to(device=device or "cpu", dtype=dtype)
    return model, arch
