"""What a generation measured: counts, times, acceptance by draft depth. `Stats.merge` adds one
run to another (a session's total, a bench side), so the fields are listed once, here."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

import numpy as np

MAX_DEPTH = 64   # deepest draft position counted (far beyond any tree the policy builds)


@dataclass
class Stats:
    prompt_tokens: int = 0
    prompt_cached: int = 0
    prompt_s: float = 0.0
    tokens: int = 0
    steps: int = 0
    gen_s: float = 0.0
    offered: np.ndarray = field(default_factory=lambda: np.zeros(MAX_DEPTH, np.int64))   # drafts at depth i
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(MAX_DEPTH, np.int64))
    by_source: Counter = field(default_factory=Counter)   # accepted tokens per draft source
    trees: Counter = field(default_factory=Counter)       # steps per tree shape
    pass_1_s: float | None = None                         # calibrated cost of a 1-token pass
    decode_s: float = 0.0                                 # of gen_s: inside llama_decode
    draft_s: float = 0.0                                  # of gen_s: in the sampler head

    def merge(self, other: "Stats") -> "Stats":
        """Add `other` into this one (in place); returns self."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "pass_1_s":
                self.pass_1_s = theirs or mine
            elif isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, f.name, mine + theirs)
        return self

    @property
    def tau(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0

    @property
    def tok_s(self) -> float:
        return self.tokens / self.gen_s if self.gen_s > 0 else 0.0

    @property
    def prompt_tok_s(self) -> float:
        return (self.prompt_tokens - self.prompt_cached) / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def est_speedup(self) -> float | None:
        """Speedup over plain decoding estimated from the calibrated cost of a 1-token pass."""
        if not self.pass_1_s or not self.gen_s:
            return None
        return self.tokens * self.pass_1_s / self.gen_s

    @property
    def outside_decode(self) -> float | None:
        """Share of generation time spent outside llama_decode."""
        return 1 - self.decode_s / self.gen_s if self.gen_s else None

    @property
    def draft_share(self) -> float | None:
        """Share of generation time spent in the sampler head."""
        return self.draft_s / self.gen_s if self.gen_s else None

    def acceptance(self) -> list[float]:
        n = int(np.max(np.nonzero(self.offered)[0]) + 1) if self.offered.any() else 0
        return [float(self.accepted[i] / self.offered[i]) for i in range(n)]

    def as_dict(self) -> dict:
        def r4(x):
            return None if x is None else round(x, 4)

        return {
            "prompt_tokens": self.prompt_tokens, "prompt_cached": self.prompt_cached,
            "prompt_tok_s": round(self.prompt_tok_s, 2), "tokens": self.tokens, "steps": self.steps,
            "tokens_per_step": round(self.tau, 4), "tok_s": round(self.tok_s, 2),
            "acceptance": [round(a, 4) for a in self.acceptance()],
            "accepted_by_source": dict(self.by_source), "trees": dict(self.trees),
            "est_speedup": None if self.est_speedup is None else round(self.est_speedup, 3),
            "outside_decode": r4(self.outside_decode), "draft_share": r4(self.draft_share),
        }


def status_line(st: Stats, *, plain: bool) -> str:
    """One line for a terminal: what the last answer (or a session) measured."""
    parts = [f"{st.tokens} tokens", f"{st.tok_s:.1f} tok/s", f"{st.tau:.2f} tokens/step"]
    acc = st.acceptance()
    if acc:
        parts.append("acceptance " + " ".join(f"{a:.2f}" for a in acc[:4]))
    sp = st.est_speedup
    if plain:
        parts.append("plain decoding")
    elif sp is not None:
        parts.append(f"~{sp:.2f}x vs plain")
    if st.prompt_tokens:
        parts.append(f"prompt {st.prompt_tokens - st.prompt_cached} new / {st.prompt_cached} cached"
                     + (f" at {st.prompt_tok_s:.0f} tok/s" if st.prompt_tok_s else ""))
    return " | ".join(parts)
