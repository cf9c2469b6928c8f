"""Target distributions and the token choices made from them: plain sampling, greedy, and the
speculative acceptance test that keeps MTP's output distribution equal to plain sampling."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    # llama-cli's defaults
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


GREEDY = SamplingParams(temperature=0.0)


def _penalised(logits: np.ndarray, history, params: SamplingParams, banned) -> np.ndarray:
    x = np.array(logits, dtype=np.float32)
    if len(banned):
        x[banned] = -np.inf
    if params.repeat_penalty != 1.0 and params.repeat_last_n != 0 and len(history):
        recent = np.unique(np.asarray(history[-params.repeat_last_n:] if params.repeat_last_n > 0 else history))
        v = x[recent]
        x[recent] = np.where(v > 0, v / params.repeat_penalty, v * params.repeat_penalty)
    return x


def argmax_token(logits: np.ndarray, history, params: SamplingParams, banned) -> int:
    if params.repeat_penalty == 1.0 and not len(banned):
        return int(np.argmax(logits))
    return int(np.argmax(_penalised(logits, history, params, banned)))


MAX_CANDIDATES = 256   # a top-k up to this comes from the C scan (llama_mtp_top_k)


def distribution(logits: np.ndarray, history, params: SamplingParams, banned) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, probabilities) after penalties, top-k, top-p, min-p and temperature, in
    llama.cpp's order (top-p and min-p look at the distribution before temperature)."""
    x = _penalised(logits, history, params, banned)
    k = params.top_k if 0 < params.top_k < len(x) else len(x)
    ids = np.argpartition(-x, k - 1)[:k] if k < len(x) else np.arange(len(x))
    ids = ids[np.argsort(-x[ids], kind="stable")]
    return candidate_distribution(ids, x[ids], params)


def candidates_suffice(params: SamplingParams) -> bool:
    """Whether a row's top-k candidates (best first) determine its distribution: no penalty can
    lift a token into them, and top-k is on and small."""
    return (not params.greedy and 0 < params.top_k <= MAX_CANDIDATES
            and (params.repeat_penalty == 1.0 or params.repeat_last_n == 0))


def candidate_distribution(ids: np.ndarray, logits: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """`distribution` from a row's top-k candidates, best first: top-p, min-p and temperature."""
    v = np.asarray(logits, dtype=np.float64)
    ids, v = ids[np.isfinite(v)], v[np.isfinite(v)]
    p = np.exp(v - v[0])
    p /= p.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), params.top_p) + 1)
        ids, v, p = ids[:keep], v[:keep], p[:keep]
    if params.min_p > 0.0:
        keep = p >= params.min_p * p[0]
        ids, v = ids[keep], v[keep]
    q = np.exp((v - v[0]) / params.temperature)
    return ids, q / q.sum()


def sample(ids: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> int:
    return int(ids[min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right")), len(ids) - 1)])


def accept_draft(ids: np.ndarray, p: np.ndarray, draft: int, rng: np.random.Generator) -> tuple[bool, int]:
    """Speculative sampling with a deterministic draft (q is one-hot on `draft`): accept with
    probability min(1, p/q) = p(draft); else sample from the normalised residual max(0, p - q),
    which is p without the draft. Returns (accepted, token)."""
    hit = np.nonzero(ids == draft)[0]
    pd = float(p[hit[0]]) if len(hit) else 0.0
    if pd > 0.0 and rng.random() < pd:
        return True, draft
    if len(hit):
        p = p.copy()
        p[hit[0]] = 0.0
    return False, sample(ids, p, rng)
