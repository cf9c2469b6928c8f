"""The training loop: losses, teacher-forced tokens-per-step evaluation, checkpoints and resume."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .base import TrainError
from .config import TrainConfig  # noqa: F401  (re-exported: `from .trainer import TrainConfig`)
from .layout import build_layout
from .model import MtpModel


@dataclass
class Examples:
    train: list = field(default_factory=list)
    dev: list = field(default_factory=list)


def seq_of(e: dict, max_len: int) -> tuple[list[int], int]:
    ids = (list(e["prompt_ids"]) + list(e["answer_ids"]))[:max_len]
    return ids, len(e["prompt_ids"])


def make_packs(examples: list[dict], cfg: TrainConfig, epoch: int) -> list[list[int]]:
    """Example indices per step for one epoch: a seeded shuffle, packed up to batch_tokens."""
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(examples))
    packs, cur, n = [], [], 0
    for i in order:
        L = min(len(examples[i]["prompt_ids"]) + len(examples[i]["answer_ids"]), cfg.max_len)
        if cur and n + L > cfg.batch_tokens:
            packs.append(cur)
            cur, n = [], 0
        cur.append(int(i))
        n += L
    if cur:
        packs.append(cur)
    return packs


def vocab_subset(examples: list[dict], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The token ids that occur in the training answers (every label is one of them) and a table
    id -> column in that subset (-1 elsewhere)."""
    ids = sorted({int(t) for e in examples for t in e["answer_ids"] if 0 <= int(t) < vocab_size})
    cols = torch.tensor(ids, dtype=torch.long)
    table = torch.full((vocab_size,), -1, dtype=torch.long)
    table[cols] = torch.arange(len(ids))
    return cols, table


def _ce(model: MtpModel, h: torch.Tensor, labels: torch.Tensor, subset=None, chunk: int = 1024) -> torch.Tensor:
    """Mean cross-entropy of the base unembedding, in row chunks (the (rows, vocab) float32 logits
    of a whole step do not need to exist at once); over the subset's columns when given."""
    cols = None
    if subset is not None:
        cols, table = subset
        cols = cols.to(h.device)
        labels = table.to(h.device)[labels]
    total = h.new_zeros((), dtype=torch.float32)
    for a in range(0, h.shape[0], chunk):
        logits = model.unembed(h[a:a + chunk], cols)
        total = total + F.cross_entropy(logits, labels[a:a + chunk], reduction="sum")
    return total / max(h.shape[0], 1)


def losses(model: MtpModel, lay, subset=None) -> dict[str, torch.Tensor]:
    """Base-unembedding CE on the masks, sampler CE, and latent consistency MSE. `subset` (from
    `vocab_subset`) restricts both softmaxes to the ids the training answers use: the labels all lie
    in it, and the unembedding, ~45% of a step's arithmetic over the full 49k vocabulary of
    SmolLM2, shrinks with it."""
    dev = model.device
    h_ord, cache = model.ordinary_pass(lay)
    z = model.mask_pass(lay, cache)
    labels = lay.labels.to(dev)
    ce_mask = _ce(model, z, labels, subset)
    out = model.sample_head(lay.prev.to(dev), z)
    ce_sampler = _ce(model, out, labels, subset)
    # the ordinary token that predicts the same label is the target latent (no gradient into it)
    target = h_ord[lay.source.to(dev)].float().detach()
    latent = F.mse_loss(z.float(), target)
    return {"mask": ce_mask, "sampler": ce_sampler, "latent": latent}


@torch.no_grad()
def evaluate(model: MtpModel, examples: list[dict], k: int, max_len: int = 1024,
             deadline: float | None = None) -> dict:
    """Teacher-forced tokens per step on held-out sequences: walk each answer as greedy MTP
    decoding would (k drafts from the mask block after the last accepted token; a step gives the
    accepted drafts plus one token), with drafts from the sampler head (prev = the true token,
    which is what the draft chain holds while drafts are right) and from the plain mask logits."""
    tokens = {"sampler": 0, "plain": 0}
    steps = 0
    hits = np.zeros(k)
    hits_plain = np.zeros(k)
    offered = np.zeros(k)
    n_seqs = 0
    for e in examples:
        if deadline is not None and n_seqs and time.perf_counter() >= deadline:
            break  # out of time: the estimate covers the sequences done so far
        n_seqs += 1
        ids, P = seq_of(e, max_len)
        lay = build_layout([(ids, P)], k)
        if lay.mask_j.numel() == 0:
            continue
        h_ord, cache = model.ordinary_pass(lay)
        z = model.mask_pass(lay, cache)
        labels = lay.labels.to(model.device)
        ok_plain = (model.unembed(z).argmax(-1) == labels).cpu().numpy()
        ok_samp = (model.unembed(model.sample_head(lay.prev.to(model.device), z)).argmax(-1) == labels).cpu().numpy()
        mj = lay.mask_j.numpy()
        np.add.at(offered, mj, 1)
        np.add.at(hits, mj, ok_samp)
        np.add.at(hits_plain, mj, ok_plain)
        blocks: dict[int, list[int]] = {}
        for row, a in enumerate(lay.anchor.tolist()):
            blocks.setdefault(a, []).append(row)
        for name, ok in (("sampler", ok_samp), ("plain", ok_plain)):
            p, n_steps, n_tok = P - 1, 0, 0
            while p in blocks:
                acc = 0
                for row in blocks[p]:
                    if not ok[row]:
                        break
                    acc += 1
                n_steps += 1
                n_tok += 1 + acc
                p += 1 + acc
            tokens[name] += n_tok
            if name == "sampler":
                steps += n_steps
    return {"tau": tokens["sampler"] / max(steps, 1),
            "tau_plain": tokens["plain"] / max(steps, 1),
            "acc": [float(h / o) if o else 0.0 for h, o in zip(hits, offered)],
            "acc_plain": [float(h / o) if o else 0.0 for h, o in zip(hits_plain, offered)], "seqs": n_seqs}


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Trainer:
    """Owns the model, the optimizer and the step counter; `run()` trains until done or out of time."""

    def __init__(self, model: MtpModel, data: Examples, cfg: TrainConfig, out: str | Path, *,
                 base_name: str, architecture: str, console=None, resume: bool = True,
                 init_from: str | Path | None = None, deadline: float | None = None):
        """deadline: a time.perf_counter() by which run() stops (--max-minutes counted from the
        start of the whole command, target generation included); max_minutes alone counts from
        the start of run()."""
        self.model, self.data, self.cfg, self.out = model, data, cfg, Path(out)
        self.base_name, self.arch, self.console = base_name, architecture, console
        if cfg.threads and model.device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        if cfg.ce_vocab not in ("data", "full"):
            raise TrainError(f"unknown ce_vocab '{cfg.ce_vocab}' (data, full)")
        self.subset = vocab_subset(data.train, model.vocab_size) if cfg.ce_vocab == "data" else None
        self.deadline = deadline
        head = [p for p in model.sampler.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        rest = [p for p in model.trainable() if id(p) not in head_ids]
        # lr_scale: the per-step schedule multiplies each group's own share of lr
        self.opt = torch.optim.AdamW([{"params": rest, "lr_scale": 1.0},
                                      {"params": head, "lr_scale": cfg.sampler_lr_scale}],
                                     lr=cfg.lr, weight_decay=cfg.weight_decay)
        per_epoch = len(make_packs(data.train, cfg, 0))
        self.total = cfg.steps if cfg.steps is not None else max(1, math.ceil(per_epoch * cfg.epochs))
        self.notes: list[str] = []
        if cfg.warmup and cfg.warmup >= self.total:
            # a warm-up as long as the run would never reach the peak learning rate
            w = self.total // 10
            self.notes.append(f"--warmup {cfg.warmup} is not shorter than the run ({self.total} step"
                              f"{'s' if self.total > 1 else ''}): warming up over {w} step{'s' if w != 1 else ''}")
            self.cfg = cfg = replace(cfg, warmup=w)
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict] = []
        self._packs: dict[int, list[list[int]]] = {}
        self._pack_counts: list[int] = []
        if resume and (self.out / ckpt.CONFIG).exists():
            self._resume()
        elif init_from is not None:
            self._check_shapes(ckpt.read_config(init_from), init_from, grow=True)
            ckpt.load_into(self.model, init_from)

    # -- state ------------------------------------------------------------------------------

    def _check_shapes(self, cfg: dict, folder, *, grow: bool = False) -> None:
        """grow: --init may start a higher rank at the same alpha/rank, so the adapter's output is
        unchanged at step 0: the extra rows of A are fresh and the extra columns of B zero."""
        mine = {"n_masks": self.cfg.n_masks, "rank": self.cfg.rank, "alpha": float(self.cfg.alpha)}
        theirs = {"n_masks": cfg["n_masks"], "rank": cfg["lora"]["rank"], "alpha": float(cfg["lora"]["alpha"])}
        if grow and mine["n_masks"] == theirs["n_masks"] and mine["rank"] > theirs["rank"]:
            if mine["alpha"] * theirs["rank"] == theirs["alpha"] * mine["rank"]:
                return
            need = theirs["alpha"] * mine["rank"] / theirs["rank"]
            raise TrainError(f"{folder} was trained with {theirs}: a larger --rank {mine['rank']} needs "
                             f"--alpha {need:g} to keep its scale")
        if mine != theirs:
            raise TrainError(f"{folder} was trained with {theirs}, not {mine}: use the same -k, --rank and --alpha"
                             + (" (or a larger --rank at the same alpha/rank)" if grow else ""))

    def _resume(self) -> None:
        cfg = ckpt.read_config(self.out)
        self._check_shapes(cfg, self.out)
        state = ckpt.load_resume(self.out)
        if state is None:
            raise TrainError(f"{self.out} holds a checkpoint without resume state: choose another --out")
        ckpt.load_into(self.model, self.out)
        opt_state = state["optimizer"]
        groups = opt_state["param_groups"]
        if len(groups) == 1 and len(self.opt.param_groups) == 2:
            # resume state from before the sampler head had its own group: the head's parameters
            # are the last ones in both orders, so split the one list where the first group ends
            n_rest = len(self.opt.param_groups[0]["params"])
            ids = groups[0]["params"]
            opt_state = {**opt_state, "param_groups": [
                {**groups[0], "params": ids[:n_rest], "lr_scale": 1.0},
                {**groups[0], "params": ids[n_rest:], "lr_scale": self.cfg.sampler_lr_scale}]}
        self.opt.load_state_dict(opt_state)
        t = state["trainer"]
        self.step, self.elapsed, self.history = int(t["step"]), float(t["elapsed_s"]), list(t.get("history", []))

    def config(self) -> dict:
        m = self.model
        return ckpt.make_config(
            base_model=self.base_name, architecture=self.arch, hidden_size=int(m.embed_weight.shape[1]),
            vocab_size=m.vocab_size, n_masks=m.n_masks, rank=m.rank, alpha=m.alpha, targets=m.targets,
            training={"steps": self.step, "seed": self.cfg.seed, "train_sequences": len(self.data.train),
                      "dev_sequences": len(self.data.dev), "elapsed_s": round(self.elapsed, 1),
                      "last_eval": self.history[-1] if self.history else None})

    def save(self) -> Path:
        resume = {"optimizer": self.opt.state_dict(),
                  "trainer": {"step": self.step, "elapsed_s": self.elapsed, "history": self.history,
                              "config": asdict(self.cfg)}}
        return ckpt.save_checkpoint(self.out, self.model, self.config(), resume=resume)

    # -- steps ------------------------------------------------------------------------------

    def pack(self, step: int) -> list[list[int]]:
        """The examples of `step`: epochs follow each other, each with as many packs as its own
        shuffle makes (the count differs from epoch to epoch)."""
        epoch, first = 0, 0
        while True:
            if epoch == len(self._pack_counts):
                # counting an epoch makes its packs: keep them, the step is likely in it
                self._packs = {epoch: make_packs(self.data.train, self.cfg, epoch)}
                self._pack_counts.append(len(self._packs[epoch]))
            if step < first + self._pack_counts[epoch]:
                break
            first += self._pack_counts[epoch]
            epoch += 1
        if epoch not in self._packs:
            self._packs = {epoch: make_packs(self.data.train, self.cfg, epoch)}
        return self._packs[epoch][step - first]

    def train_step(self) -> dict:
        cfg = self.cfg
        seqs = [seq_of(self.data.train[i], cfg.max_len) for i in self.pack(self.step)]
        lay = build_layout(seqs, cfg.n_masks, anchors_per_seq=cfg.anchors_per_seq,
                           rng=np.random.default_rng([cfg.seed, 1, self.step]))
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, cfg, self.total) * g.get("lr_scale", 1.0)
        if lay.mask_j.numel() == 0:
            self.step += 1
            return {"loss": float("nan"), "tokens": lay.n_tokens}
        parts = losses(self.model, lay, self.subset)
        loss = cfg.w_mask * parts["mask"] + cfg.w_sampler * parts["sampler"] + cfg.w_latent * parts["latent"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.trainable(), 1.0)
        self.opt.step()
        self.step += 1
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}, "tokens": lay.n_tokens}

    def eval(self, deadline: float | None = None) -> dict:
        r = evaluate(self.model, self.data.dev[: self.cfg.eval_seqs], self.cfg.n_masks, self.cfg.max_len,
                     deadline=deadline)
        r = {"step": self.step, "tau": round(r["tau"], 4), "tau_plain": round(r["tau_plain"], 4),
             "acc": [round(a, 4) for a in r["acc"]], "acc_plain": [round(a, 4) for a in r["acc_plain"]],
             "seqs": r["seqs"]}
        self.history.append(r)
        return r

    def run(self, on_step=None, on_eval=None) -> dict:
        """Train until `total` steps or the time limit (`max_minutes` from now, or the deadline
        given); checkpoints after the first step of a fresh run, every save_every steps and at
        the end."""
        cfg = self.cfg
        limit = cfg.max_minutes * 60 if cfg.max_minutes else None
        started = time.perf_counter()
        at_start = self.elapsed
        # evaluations stop at the time limit too (each evaluates at least one sequence)
        ends = [t for t in (started + limit if limit is not None else None, self.deadline) if t is not None]
        deadline = min(ends) if ends else None
        fresh = not (self.out / ckpt.CONFIG).exists()
        if self.step == 0 and self.data.dev and cfg.eval_every and cfg.eval_at_start:
            r = self.eval(deadline)
            on_eval and on_eval(r)
        while self.step < self.total:
            if deadline is not None and time.perf_counter() >= deadline:
                break
            t0 = time.perf_counter()
            info = self.train_step()
            info["seconds"] = time.perf_counter() - t0
            self.elapsed = at_start + time.perf_counter() - started
            on_step and on_step(self.step, info)
            if self.data.dev and cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total:
                r = self.eval(deadline)
                on_eval and on_eval(r)
            if (cfg.save_every and self.step % cfg.save_every == 0) or fresh:
                self.save()   # a fresh run has a checkpoint (and resume state) after its first step
                fresh = False
        self.elapsed = at_start + time.perf_counter() - started
        if self.data.dev and cfg.eval_every and (not self.history or self.history[-1]["step"] != self.step):
            r = self.eval(deadline)
            on_eval and on_eval(r)
        self.save()
        return {"step": self.step, "total": self.total, "elapsed_s": self.elapsed,
                "last_eval": self.history[-1] if self.history else None}
