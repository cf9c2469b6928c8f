"""`TrainConfig`: the training hyper-parameters, a plain dataclass without torch, so that
`mtpchat train --help` (and every `mtpchat` start, which registers the command) reads the flags'
defaults from it without loading torch. train/trainer.py re-exports it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    n_masks: int = 4
    rank: int = 16
    alpha: float = 32.0
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup: int = 20                   # fewer when the run is not longer than this (Trainer says so)
    steps: int | None = None          # default: `epochs` passes over the training data
    epochs: float = 1.0
    batch_tokens: int = 1024           # ordinary tokens packed into one step
    max_len: int = 1024                # longer sequences are cut
    anchors_per_seq: int | None = None # None: masks after every answer token
    max_minutes: float | None = None   # the whole run: target generation, evaluations and steps
    save_every: int = 100              # the first step is saved too (a fresh run has a checkpoint early)
    eval_every: int = 100
    eval_seqs: int = 16
    eval_at_start: bool = True         # a baseline estimate before the first step
    seed: int = 0
    w_mask: float = 1.0                # loss weights (the paper's are all 1)
    w_sampler: float = 1.0
    w_latent: float = 1.0
    ce_vocab: str = "full"             # "full": whole vocabulary; "data": only the ids the training answers use
    sampler_lr_scale: float = 1.0      # the sampler head's learning rate as a multiple of lr
    threads: int | None = None         # torch CPU threads (None: leave torch's default)
