"""Where the mask tokens go during training, and what every token may attend to (docs/DESIGN.md §1.4).

Several sequences are packed into one row. For a sequence x_0..x_{L-1} whose answer starts at
P, an anchor is an ordinary token x_i (P-1 <= i <= L-3) after which a block of mask tokens
m_1..m_k is inserted. Mask m_j after x_i has position i+j and label x_{i+j+1}; the sampler's
previous token for it is x_{i+j} (teacher forcing: for m_1 that is x_{i+1}, which the base model
itself predicts at draft time; for m_j, j>1, it is what m_{j-1} should have produced). Masks
whose label would fall past the end of the sequence are dropped: later masks of a block only
ever attend to earlier ones, so dropping a block's tail changes nothing else.

Attention rules, kept as explicit boolean matrices (True = may attend):
  ordinary -> ordinary: same sequence, earlier or equal position (never any mask);
  mask     -> ordinary: same sequence, up to and including its anchor;
  mask     -> mask:     same block, earlier or equal j.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Layout:
    ids: torch.Tensor         # (T,) ordinary token ids, sequences packed back to back
    pos: torch.Tensor         # (T,) position of each ordinary token inside its own sequence
    seg: torch.Tensor         # (T,) sequence index of each ordinary token
    mask_j: torch.Tensor      # (M,) 0-based mask index j-1 of each mask token
    mask_pos: torch.Tensor    # (M,) position i+j
    anchor: torch.Tensor      # (M,) packed index of the anchor x_i
    block: torch.Tensor       # (M,) block number (one per anchor)
    labels: torch.Tensor      # (M,) x_{i+j+1}
    prev: torch.Tensor        # (M,) x_{i+j}: the sampler's previous token (teacher-forced)
    source: torch.Tensor      # (M,) packed index of x_{i+j}, the ordinary token predicting the same label
    n_masks: int              # k

    @property
    def n_tokens(self) -> int:
        return int(self.ids.numel() + self.mask_j.numel())

    def ordinary_allowed(self) -> torch.Tensor:
        """(T, T) causal within each sequence."""
        t = torch.arange(self.ids.numel())
        return (self.seg[:, None] == self.seg[None, :]) & (t[None, :] <= t[:, None])

    def mask_allowed(self) -> torch.Tensor:
        """(M, T + M): mask rows over [ordinary keys, mask keys]."""
        t = torch.arange(self.ids.numel())
        seg_a = self.seg[self.anchor]
        to_ord = (self.seg[None, :] == seg_a[:, None]) & (t[None, :] <= self.anchor[:, None])
        to_mask = (self.block[:, None] == self.block[None, :]) & (self.mask_j[None, :] <= self.mask_j[:, None])
        return torch.cat([to_ord, to_mask], dim=1)

    def joint_allowed(self) -> torch.Tensor:
        """(T+M, T+M) for one pass over [ordinary tokens, mask tokens]."""
        T, M = self.ids.numel(), self.mask_j.numel()
        top = torch.cat([self.ordinary_allowed(), torch.zeros(T, M, dtype=torch.bool)], dim=1)
        return torch.cat([top, self.mask_allowed()], dim=0)


def choose_anchors(n_prompt: int, length: int, limit: int | None, rng: np.random.Generator | None) -> np.ndarray:
    """Anchors i with P-1 <= i <= L-3; all of them, or `limit` sampled without replacement."""
    cand = np.arange(max(n_prompt - 1, 0), length - 2)
    if limit is not None and len(cand) > limit:
        cand = np.sort((rng or np.random.default_rng(0)).choice(cand, size=limit, replace=False))
    return cand


def build_layout(seqs: list[tuple[list[int], int]], k: int, *, anchors_per_seq: int | None = None,
                 rng: np.random.Generator | None = None) -> Layout:
    """seqs: (token ids, number of prompt tokens) per sequence."""
    ids, pos, seg = [], [], []
    mj, mpos, anc, blk, lab, prv, src = [], [], [], [], [], [], []
    base = 0
    n_block = 0
    for s, (toks, n_prompt) in enumerate(seqs):
        L = len(toks)
        ids += toks
        pos += range(L)
        seg += [s] * L
        for i in choose_anchors(n_prompt, L, anchors_per_seq, rng):
            for j in range(1, k + 1):
                if i + j + 1 >= L:
                    break
                mj.append(j - 1)
                mpos.append(i + j)
                anc.append(base + i)
                blk.append(n_block)
                lab.append(toks[i + j + 1])
                prv.append(toks[i + j])
                src.append(base + i + j)
            n_block += 1
        base += L

    def t(x):
        return torch.tensor(x, dtype=torch.long)

    return Layout(t(ids), t(pos), t(seg), t(mj), t(mpos), t(anc), t(blk), t(lab), t(prv), t(src), k)


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean rule -> additive attention bias of shape (1, 1, q, kv) as transformers expects."""
    bias = torch.zeros(allowed.shape, dtype=dtype)
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias[None, None]
