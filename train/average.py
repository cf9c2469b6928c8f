"""Weighted average of checkpoints from one training run (torch-free):

    python -m mtpchat.train.average OUT CKPT_A CKPT_B [--weights 0.4,0.6] [--force]

Why: the last checkpoint of a run sits where the last few hundred noisy steps left it. The mean of
two checkpoints of the same run, a few hundred steps apart, lies nearer the middle of the region
they share, and measured better than either end (docs/TRAINING.md, "Averaging"). The LoRA A and B
matrices are averaged separately, which is only sound for checkpoints close together on one
trajectory: their products then differ little.

The output is an ordinary checkpoint folder without resume state (train on from it with `--init`).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mtpchat.convert import checkpoint as C
from mtpchat.convert.tensorfile import write_safetensors

from .checkpoint import staged_folder


def _weights(spec: str | None, n: int) -> list[float]:
    if spec is None:
        return [1.0 / n] * n
    try:
        w = [float(x) for x in spec.split(",")]
    except ValueError:
        raise C.ConvertError(f"--weights must be numbers separated by commas, not {spec!r}") from None
    if len(w) != n:
        raise C.ConvertError(f"--weights gives {len(w)} weights for {n} checkpoints")
    if not all(math.isfinite(x) and x > 0 for x in w):
        raise C.ConvertError("--weights must all be positive and finite")
    total = sum(w)
    return [x / total for x in w]


def average(out: str | Path, folders: list[str | Path], weights: str | None = None, *, force: bool = False) -> Path:
    """Write the weighted mean of `folders` (same configuration, same tensor names and shapes) as
    the checkpoint folder `out`, atomically. An existing `out` is replaced only with `force`, and
    only when it is a checkpoint folder: the swap removes what was there."""
    if len(folders) < 2:
        raise C.ConvertError("averaging needs two checkpoints or more")
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not (out.is_dir() and not out.is_symlink() and (out / C.CONFIG).is_file()):
            raise C.ConvertError(f"{out} exists and is not a checkpoint folder: give a new folder")
        if not force:
            raise C.ConvertError(f"{out} exists: add --force to replace it")
    w = _weights(weights, len(folders))
    cks = [C.load_checkpoint(f) for f in folders]

    def shape_of(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if k != "training"}

    for ck in cks[1:]:
        if shape_of(ck.config) != shape_of(cks[0].config):
            raise C.ConvertError(f"{ck.folder} and {cks[0].folder} differ in mtp_config.json (besides 'training')")
    means = {}
    for name in (C.ADAPTER, C.SAMPLER, C.MASKS):
        tensors = [C.read_tensors(ck.folder, name) for ck in cks]
        for ck, t in zip(cks[1:], tensors[1:]):
            if {k: v.shape for k, v in t.items()} != {k: v.shape for k, v in tensors[0].items()}:
                raise C.ConvertError(f"{name}: {ck.folder} and {cks[0].folder} hold different tensors")
        mean = {}
        for k in tensors[0]:
            acc = sum(wi * t[k].astype(np.float64) for wi, t in zip(w, tensors))
            if not np.isfinite(acc).all():
                raise C.ConvertError(f"{name}: {k} is not finite in the average")
            mean[k] = acc.astype(np.float32)
        means[name] = mean

    with staged_folder(out) as tmp:
        for name, tensors in means.items():
            write_safetensors(tmp / name, tensors, metadata={"format": "pt"})
        cfg = dict(cks[0].config)
        cfg["training"] = {"averaged": [{"from": ck.folder.name, "weight": round(wi, 6),
                                         "steps": (ck.config.get("training") or {}).get("steps")}
                                        for ck, wi in zip(cks, w)]}
        C.write_config(tmp, cfg)
    return out


def main() -> None:
    import typer

    def run(out: Path = typer.Argument(..., help="Checkpoint folder to write."),
            checkpoints: list[Path] = typer.Argument(..., help="Two or more checkpoint folders of one run."),
            weights: str = typer.Option(None, "--weights", help="Comma-separated weights (default: equal); normalised to sum 1."),
            force: bool = typer.Option(False, "--force", help="Replace OUT when it is an existing checkpoint folder.")):
        try:
            average(out, checkpoints, weights, force=force)
        except (C.ConvertError, OSError) as e:
            typer.echo(f"mtpchat: error: {e}", err=True)
            raise typer.Exit(1)
        typer.echo(f"wrote {out}")

    typer.run(run)


if __name__ == "__main__":
    main()
