"""The sampler head (docs/DESIGN.md §1.3) in numpy, scored on a shortlist.

out = z + LN2(SiLU(fc2(LN1(SiLU(fc1([E(prev); z]))))); logits = W_unembed · out. Since llama.cpp
already returns the mask row's plain logits W·z, the head only adds W[c]·(out - z) for a few
candidates c: the top of the plain mask logits. A full-vocabulary projection per draft would
cost about as much as a forward pass on a CPU.
"""
from __future__ import annotations

import numpy as np

from . import format as F


def _layernorm(x, w, b, eps):
    mu = x.mean()
    var = ((x - mu) ** 2).mean()
    return (x - mu) / np.sqrt(var + eps) * w + b


def q8_0_round(w: np.ndarray) -> np.ndarray:
    """float32 rows (a matrix or one vector) through Q8_0 and back (gguf's codec, bit-exact with
    ggml's quantiser): the values the C head keeps its matrices and their inputs as, so that both
    heads compute the same products."""
    from gguf import GGMLQuantizationType, quants

    q8 = GGMLQuantizationType.Q8_0
    return quants.dequantize(quants.quantize(np.asarray(w, dtype=np.float32), q8), q8)


def _silu(x):
    return x / (1.0 + np.exp(-x))


# Mask-logit candidates the head rescores. 32 drafts what 64 does on every dev prompt (the head
# as trained, on the whole vocabulary, within measurement) and 0.02-0.06 tokens/step more than 8,
# for ~0.02 ms of host per quadratic:1 step.
SHORTLIST = 32


class SamplerHead:
    def __init__(self, g, info: F.MtpInfo, *, shortlist: int = SHORTLIST):
        self.g = g
        self.s = {**info.sampler, **{n: q8_0_round(info.sampler[n]) for n in ("fc1.weight", "fc2.weight")}}
        self.eps = info.sampler_eps
        self.shortlist = shortlist
        self.unembd = "output.weight" if "output.weight" in g.tensors else "token_embd.weight"
        self._rows: dict[tuple[str, int], np.ndarray] = {}

    def _row(self, tensor: str, token: int) -> np.ndarray:
        key = (tensor, token)
        r = self._rows.get(key)
        if r is None:
            r = self._rows[key] = self.g.rows(tensor, [token])[0]
        return r

    def delta(self, prev: int, z: np.ndarray) -> np.ndarray:
        """out - z for one mask latent z given the previous token."""
        s = self.s
        # the inputs of fc1 and fc2 through Q8_0 as well: the C head's int8 x int8 dots
        x = q8_0_round(np.concatenate([self._row("token_embd.weight", prev), z]))
        h = _silu(s["fc1.weight"] @ x + s["fc1.bias"])
        h = _layernorm(h, s["norm1.weight"], s["norm1.bias"], self.eps)
        h = _silu(s["fc2.weight"] @ q8_0_round(h) + s["fc2.bias"])
        return _layernorm(h, s["norm2.weight"], s["norm2.bias"], self.eps)

    def draft(self, prev: int, z: np.ndarray, mask_logits: np.ndarray, n: int, banned) -> list[int]:
        """n drafts from the latents z[0..n-1] of one mask block, each conditioned on the one before."""
        out = []
        k = self.shortlist
        for j in range(n):
            row = mask_logits[j]
            cands = np.argpartition(-row, k + len(banned))[:k + len(banned)]
            cands = cands[~np.isin(cands, banned)]
            # argpartition leaves its top block unordered: keep the k best, not any k of them
            cands = cands[np.argsort(-row[cands], kind="stable")][:k]
            d = self.delta(prev, z[j])
            scores = row[cands] + np.stack([self._row(self.unembd, int(c)) for c in cands]) @ d
            prev = int(cands[int(np.argmax(scores))])
            out.append(prev)
        return out
