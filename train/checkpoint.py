"""The trainer's side of the MTP checkpoint folder: the tensors of an MtpModel written with torch,
loaded back into one, and the resume state. The format itself (file names, PEFT names, the
config, its checks) is mtpchat.convert.checkpoint's (docs/CHECKPOINT.md):

    mtp_config.json, adapter_model.safetensors, sampler.safetensors, mask_embeddings.safetensors
    resume/                       trainer only: optimizer.pt (a state dict) and trainer.json (step)

The whole folder is written next to its destination and swapped in by renames, so a reader sees
either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from mtpchat.convert import checkpoint as C
from mtpchat.convert.checkpoint import ADAPTER, CONFIG, MASKS, RESUME, SAMPLER, make_config  # noqa: F401

from .base import TrainError


def model_tensors(model) -> tuple[dict, dict, dict]:
    """(adapter, sampler, masks) tensors of an MtpModel, float32 on the CPU."""
    import torch

    adapter = {}
    for stem, lin in model.lora.items():
        adapter[C.peft_name(stem, "A")] = lin.lora_A.detach().float().cpu().contiguous()
        adapter[C.peft_name(stem, "B")] = lin.lora_B.detach().float().cpu().contiguous()
    sampler = {k: v.detach().float().cpu().contiguous() for k, v in model.sampler.state_dict().items()}
    masks = {"mask_embeddings": model.mask_emb.detach().float().cpu().contiguous()}
    if not getattr(model.base.config, "tie_word_embeddings", False):
        # untied output matrix: its mask rows are never trained (mask ids are banned), keep them zero
        masks["mask_output"] = torch.zeros_like(masks["mask_embeddings"])
    return adapter, sampler, masks


def _swap_in(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(out: str | Path):
    """A temporary folder beside `out` to write into; swapped in as `out` when the block ends
    normally, removed when it raises, so a reader never sees half a checkpoint."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(out: str | Path, model, config: dict, *, resume: dict | None = None) -> Path:
    """Write the checkpoint folder atomically; `resume` (optimizer state dict + trainer json) optional."""
    import torch
    from safetensors.torch import save_file

    with staged_folder(out) as tmp:
        adapter, sampler, masks = model_tensors(model)
        save_file(adapter, str(tmp / ADAPTER), metadata={"format": "pt"})
        save_file(sampler, str(tmp / SAMPLER), metadata={"format": "pt"})
        save_file(masks, str(tmp / MASKS), metadata={"format": "pt"})
        C.write_config(tmp, config)
        if resume is not None:
            (tmp / RESUME).mkdir()
            torch.save(resume["optimizer"], tmp / RESUME / "optimizer.pt")
            (tmp / RESUME / "trainer.json").write_text(json.dumps(resume["trainer"], indent=2) + "\n")
    return Path(out)


def recover(out: Path) -> None:
    """A crash between the two renames leaves only the old folder: put it back."""
    if out.exists():
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*"))
    if olds:
        os.rename(olds[-1], out)


def read_config(folder: str | Path) -> dict:
    """The checkpoint's mtp_config.json, checked as `mtpchat convert` checks it."""
    folder = Path(folder)
    recover(folder)
    try:
        return C.load_checkpoint(folder).config
    except C.ConvertError as e:
        raise TrainError(str(e)) from None


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
    """Copy a checkpoint's tensors into an MtpModel built with the same shapes, or with a higher
    LoRA rank: then they fill the first rows of A and columns of B, and B's other columns stay
    zero so the adapter's output is the checkpoint's. Returns its config."""
    import torch

    cfg, adapter, sampler, masks = load_tensors(folder)
    with torch.no_grad():
        for stem, lin in model.lora.items():
            a, b = adapter[C.peft_name(stem, "A")], adapter[C.peft_name(stem, "B")]
            r = a.shape[0]
            lin.lora_A[:r].copy_(a)
            lin.lora_B[:, :r].copy_(b)
            lin.lora_B[:, r:].zero_()
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
