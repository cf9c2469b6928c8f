"""What a generation measured: counts, times, acceptance by draft depth. `Stats.merge` adds one
run to another (a session's total, a bench side), so the fields are listed once, here.

The engine keeps a Stats current while it streams (times and counts after every step, the time
the caller holds the generator not counted), so a status line drawn mid-answer is true. Its
speedup is measured, not estimated: the run's tokens per second over the tokens per second of the
plain steps measured in the same process (this run's, or an earlier answer's)."""
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
    first_tokens: int = 0   # of tokens: made by prompt passes, so in neither steps nor gen_s
    steps: int = 0
    gen_s: float = 0.0
    # drafts offered and accepted at depth i; plain lists, since they are updated after every
    # step and numpy's per-call overhead on small arrays cost ~50 us a step there
    offered: list[int] = field(default_factory=lambda: [0] * MAX_DEPTH)
    accepted: list[int] = field(default_factory=lambda: [0] * MAX_DEPTH)
    by_source: Counter = field(default_factory=Counter)   # accepted tokens per draft source
    trees: Counter = field(default_factory=Counter)       # steps per tree shape
    pass_1_s: float | None = None                         # calibrated cost of a 1-token pass
    decode_s: float = 0.0                                 # of gen_s: the backend's graph compute
    draft_s: float = 0.0                                  # of gen_s: in the sampler head
    plain_steps: int = 0                                  # steps that were plain 1-token passes
    plain_tokens: int = 0                                 # tokens those steps produced
    plain_s: float = 0.0                                  # and their time (of gen_s)
    pass_tokens: int = 0                                  # tokens evaluated in all steps' passes
    finish_reason: str | None = None                      # "stop" | "length" (max tokens) | "context"

    def merge(self, other: "Stats") -> "Stats":
        """Add `other` into this one (in place); returns self."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("pass_1_s", "finish_reason"):
                setattr(self, f.name, theirs or mine)
            elif isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, list):
                setattr(self, f.name, [a + b for a, b in zip(mine, theirs)])
            else:
                setattr(self, f.name, mine + theirs)
        return self

    def count_drafts(self, n_offered: int, n_accepted: int) -> None:
        """One verification: drafts 1..n_offered offered, the first n_accepted of them accepted."""
        for i in range(n_offered):
            self.offered[i] += 1
        for i in range(n_accepted):
            self.accepted[i] += 1

    @property
    def step_tokens(self) -> int:
        """Tokens the generation steps made: what rates count (llama.cpp's eval rate likewise
        leaves out the token the prompt pass makes)."""
        return self.tokens - self.first_tokens

    @property
    def tau(self) -> float:
        return self.step_tokens / self.steps if self.steps else 0.0

    @property
    def tok_s(self) -> float:
        return self.step_tokens / self.gen_s if self.gen_s > 0 else 0.0

    @property
    def prompt_tok_s(self) -> float:
        return (self.prompt_tokens - self.prompt_cached) / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def plain_tok_s(self) -> float | None:
        """Tokens per second of the plain steps (None when there were none)."""
        return self.plain_tokens / self.plain_s if self.plain_tokens and self.plain_s > 0 else None

    @property
    def mtp_steps(self) -> int:
        """Steps that were not plain passes (MTP trees, prompt-lookup chains, probes)."""
        return self.steps - self.plain_steps

    @property
    def truncated(self) -> bool:
        """The answer was cut off at the token limit (or by a full context)."""
        return self.finish_reason in ("length", "context")

    def speedup(self, reference: "Stats | None" = None) -> float | None:
        """This run's tokens/s over plain tokens/s measured in the same process: the plain steps
        of this run and of `reference` (e.g. the session so far). None until both sides exist:
        no step other than plain ones, or no plain step measured yet."""
        if not self.mtp_steps or not self.step_tokens or self.gen_s <= 0:
            return None
        n, s = self.plain_tokens, self.plain_s
        if reference is not None and reference is not self:
            n, s = n + reference.plain_tokens, s + reference.plain_s
        if not n or s <= 0:
            return None
        return self.tok_s / (n / s)

    @property
    def est_speedup(self) -> float | None:
        """Speedup over plain decoding estimated from the calibrated cost of a 1-token pass
        (kept for --json; the status line shows the measured `speedup`)."""
        if not self.pass_1_s or not self.gen_s:
            return None
        return self.step_tokens * self.pass_1_s / self.gen_s

    @property
    def outside_decode(self) -> float | None:
        """Share of generation time outside the backend's graph compute (host work)."""
        return 1 - self.decode_s / self.gen_s if self.gen_s else None

    @property
    def host_ms_per_step(self) -> float | None:
        """Milliseconds per step outside the graph compute: Python, graph build, inputs, verification,
        drafting, copies."""
        return (self.gen_s - self.decode_s) / self.steps * 1e3 if self.steps else None

    @property
    def draft_share(self) -> float | None:
        """Share of generation time spent in the sampler head."""
        return self.draft_s / self.gen_s if self.gen_s else None

    def acceptance(self) -> list[float]:
        n = max((i + 1 for i, v in enumerate(self.offered) if v), default=0)
        return [self.accepted[i] / self.offered[i] for i in range(n)]

    def as_dict(self, reference: "Stats | None" = None) -> dict:
        def r4(x):
            return None if x is None else round(x, 4)

        sp = self.speedup(reference)
        return {
            "prompt_tokens": self.prompt_tokens, "prompt_cached": self.prompt_cached,
            "prompt_tok_s": round(self.prompt_tok_s, 2), "tokens": self.tokens, "steps": self.steps,
            "tokens_per_step": round(self.tau, 4), "tok_s": round(self.tok_s, 2),
            "acceptance": [round(a, 4) for a in self.acceptance()],
            "accepted_by_source": dict(self.by_source), "trees": dict(self.trees),
            "est_speedup": None if self.est_speedup is None else round(self.est_speedup, 3),
            "outside_decode": r4(self.outside_decode), "draft_share": r4(self.draft_share),
            "plain_steps": self.plain_steps,
            "plain_tok_s": None if self.plain_tok_s is None else round(self.plain_tok_s, 2),
            "speedup": None if sp is None else round(sp, 3),
            "finish_reason": self.finish_reason,
        }


def tree_label(name: str) -> str:
    """A tree's statistics name (policy.Tree.name) in `--tree`'s spelling where --tree can name
    it: 'quadratic:4x4' -> 'quadratic:4', 'chain:3' -> 'lookup:3'; the shapes only `auto` builds
    get a description: 'quadratic:0x4' -> 'masks-only:4', 'tree:2/0,2x2' -> 'auto:2 drafts,
    masks after 0,2 (2 each)'."""
    kind, _, rest = name.partition(":")
    if kind == "chain":
        return f"lookup:{rest}"
    if kind in ("quadratic", "linear"):
        d, _, m = rest.partition("x")
        if kind == "quadratic" and d == "0":
            return f"masks-only:{m}"
        return f"{kind}:{d}" if d == m else f"{kind}:{d} ({m} masks)"
    if kind == "tree":
        d, _, rest2 = rest.partition("/")
        nodes, _, m = rest2.rpartition("x")
        return f"auto:{d} drafts, masks after {nodes} ({m} each)"
    if kind == "probe":
        return "probe (masks-only)"
    return name


def status_line(st: Stats, *, plain: bool, reference: Stats | None = None) -> str:
    """One line for a terminal: what the last answer (or a session) measured. `reference` holds
    earlier plain steps of this process to compare with (the session's total)."""
    parts = [f"{st.tokens} tokens", f"{st.tok_s:.1f} tok/s", f"{st.tau:.2f} tokens/step"]
    acc = st.acceptance()
    if acc:
        parts.append("acceptance " + " ".join(f"{a:.2f}" for a in acc[:4]))
    if plain:
        parts.append("plain decoding")
    elif st.steps and not st.mtp_steps:
        parts.append("decoded plainly")
    elif st.steps:
        sp = st.speedup(reference)
        parts.append(f"{sp:.2f}x vs plain" if sp is not None else "vs plain: n/a (no plain speed measured yet)")
    if st.prompt_tokens:
        parts.append(f"prompt {st.prompt_tokens - st.prompt_cached} new / {st.prompt_cached} cached"
                     + (f" at {st.prompt_tok_s:.0f} tok/s" if st.prompt_tok_s else ""))
    return " | ".join(parts)
