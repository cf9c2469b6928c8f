"""The MTP checkpoint folder (shared with `mtpchat convert`) and the trainer's resume state.

    mtp_config.json               what the parts are (format "mtpchat-checkpoint", version 1)
    adapter_model.safetensors     gated LoRA, PEFT names, Hugging Face (un-permuted) layout
    sampler.safetensors           fc1/norm1/fc2/norm2 weights and biases
    mask_embeddings.safetensors   mask_embeddings (k, d) [+ mask_output (k, d) for untied outputs]
    resume/                       trainer only (optimizer state, step); converters ignore it

The whole folder is written next to its destination and swapped in by renames, so a reader sees
either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .base import TrainError

FORMAT = "mtpchat-checkpoint"
FORMAT_VERSION = 1
CONFIG = "mtp_config.json"
ADAPTER = "adapter_model.safetensors"
SAMPLER = "sampler.safetensors"
MASKS = "mask_embeddings.safetensors"
RESUME = "resume"
PEFT_PREFIX = "base_model.model.model."

# Hugging Face module name -> GGUF tensor name part
HF_TO_GGUF = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def make_config(*, base_model: str, architecture: str, hidden_size: int, vocab_size: int, n_masks: int,
                rank: int, alpha: float, targets, training: dict | None = None) -> dict:
    from mtpchat import format as F

    cfg = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "base_model": base_model,
        "architecture": architecture, "hidden_size": hidden_size, "vocab_size": vocab_size,
        "n_masks": n_masks, "mask_tokens": [F.mask_token_text(j + 1) for j in range(n_masks)],
        "lora": {"rank": rank, "alpha": float(alpha), "target_modules": list(targets)},
        "sampler": {"type": "mlp2", "input": "concat(embed(prev),hidden)", "activation": "silu",
                    "norm": "layernorm", "norm_eps": 1e-5, "residual": True, "hidden_size": hidden_size},
    }
    if training:
        cfg["training"] = training
    return cfg


def model_tensors(model) -> tuple[dict, dict, dict]:
    """(adapter, sampler, masks) tensors of an MtpModel, float32 on the CPU."""
    adapter = {}
    for name, lin in model.lora.items():
        adapter[f"{PEFT_PREFIX}{name}.lora_A.weight"] = lin.lora_A.detach().float().cpu().contiguous()
        adapter[f"{PEFT_PREFIX}{name}.lora_B.weight"] = lin.lora_B.detach().float().cpu().contiguous()
    sampler = {k: v.detach().float().cpu().contiguous() for k, v in model.sampler.state_dict().items()}
    masks = {"mask_embeddings": model.mask_emb.detach().float().cpu().contiguous()}
    if not getattr(model.base.config, "tie_word_embeddings", False):
        # untied output matrix: its mask rows are never trained (mask ids are banned), keep them zero
        masks["mask_output"] = torch_zeros_like(masks["mask_embeddings"])
    return adapter, sampler, masks


def torch_zeros_like(t):
    import torch

    return torch.zeros_like(t)


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(out: str | Path, model, config: dict, *, resume: dict | None = None) -> Path:
    """Write the checkpoint folder atomically; `resume` (optimizer state dict + trainer json) optional."""
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        adapter, sampler, masks = model_tensors(model)
        save_file(adapter, str(tmp / ADAPTER), metadata={"format": "pt"})
        save_file(sampler, str(tmp / SAMPLER), metadata={"format": "pt"})
        save_file(masks, str(tmp / MASKS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if resume is not None:
            (tmp / RESUME).mkdir()
            torch.save(resume["optimizer"], tmp / RESUME / "optimizer.pt")
            (tmp / RESUME / "trainer.json").write_text(json.dumps(resume["trainer"], indent=2) + "\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def recover(out: Path) -> None:
    """A crash between the two renames leaves only the old folder: put it back."""
    if out.exists():
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*"))
    if olds:
        os.rename(olds[-1], out)


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    recover(folder)
    try:
        cfg = json.loads((folder / CONFIG).read_text())
    except FileNotFoundError:
        raise TrainError(f"{folder} is not an mtpchat checkpoint (no {CONFIG})") from None
    except json.JSONDecodeError as e:
        raise TrainError(f"{folder / CONFIG} is not valid JSON: {e}") from None
    if cfg.get("format") != FORMAT or cfg.get("format_version") != FORMAT_VERSION:
        raise TrainError(f"{folder} is not an mtpchat checkpoint of format version {FORMAT_VERSION}")
    return cfg


def load_tensors(folder: str | Path) -> tuple[dict, dict, dict, dict]:
    """(config, adapter, sampler, masks) as torch tensors."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = read_config(folder)
    try:
        return cfg, load_file(str(folder / ADAPTER)), load_file(str(folder / SAMPLER)), load_file(str(folder / MASKS))
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot read checkpoint {folder}: {e}") from None


def load_into(model, folder: str | Path) -> dict:
    """Copy a checkpoint's tensors into an MtpModel built with the same shapes; returns its config."""
    import torch

    cfg, adapter, sampler, masks = load_tensors(folder)
    with torch.no_grad():
        for name, lin in model.lora.items():
            lin.lora_A.copy_(adapter[f"{PEFT_PREFIX}{name}.lora_A.weight"])
            lin.lora_B.copy_(adapter[f"{PEFT_PREFIX}{name}.lora_B.weight"])
        model.sampler.load_state_dict(sampler)
        model.mask_emb.copy_(masks["mask_embeddings"])
    return cfg


def load_resume(folder: str | Path) -> dict | None:
    import torch

    folder = Path(folder) / RESUME
    if not (folder / "trainer.json").exists():
        return None
    return {"trainer": json.loads((folder / "trainer.json").read_text()),
            # weights_only: a checkpoint folder may come from elsewhere; never unpickle code
            "optimizer": torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")}


# -- towards the GGUF -------------------------------------------------------------------------

def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for Q/K of the llama architecture (convert_hf_to_gguf LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_mtp_parts(folder: str | Path, *, n_head: int, n_head_kv: int):
    """The checkpoint as convert.writer.MtpParts (GGUF names and row order), for write_mtp_gguf."""
    from mtpchat.convert.writer import MtpParts

    cfg, adapter, sampler, masks = load_tensors(folder)
    rank, alpha = int(cfg["lora"]["rank"]), float(cfg["lora"]["alpha"])
    lora = {}
    for key, a in adapter.items():
        if not key.endswith(".lora_A.weight"):
            continue
        stem = key[len(PEFT_PREFIX):-len(".lora_A.weight")]      # layers.{i}.self_attn.q_proj
        parts = stem.split(".")
        layer, module = int(parts[1]), parts[-1]
        b = adapter[key.replace("lora_A", "lora_B")].float().numpy()
        if cfg["architecture"] == "llama" and module in ("q_proj", "k_proj"):
            # the GGUF stores Q/K rows permuted for llama.cpp's rope; B's rows must follow
            b = permute_qk(b, n_head if module == "q_proj" else n_head_kv)
        lora[f"blk.{layer}.{HF_TO_GGUF[module]}.weight"] = (a.float().numpy(), np.ascontiguousarray(b))
    mo = masks.get("mask_output")
    return MtpParts(mask_embd=masks["mask_embeddings"].float().numpy(), lora=lora, rank=rank, alpha=alpha,
                    sampler={k: v.float().numpy() for k, v in sampler.items()},
                    mask_output=None if mo is None else mo.float().numpy(),
                    sampler_eps=float(cfg["sampler"]["norm_eps"]))
