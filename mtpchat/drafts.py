"""Where draft tokens come from, behind one small interface (as llama.cpp's common_speculative
and transformers' CandidateGenerator do it): `start` at the beginning of an answer, `propose`
before a step, `observe` the tokens a step committed.

- MtpDrafts: the sampler head's drafts from the mask block of the last step (the step makes
  them, in the same pass that verified the previous ones).
- LookupDrafts: prompt lookup, the tokens that followed the latest earlier occurrence of the
  conversation's last n-gram; no forward pass needed.
"""
from __future__ import annotations

from .lookup import NgramIndex

LOOKUP_MAX = 8   # most prompt-lookup drafts offered to one step


class MtpDrafts:
    name = "mtp"

    def __init__(self):
        self.pending: list[int] = []

    def start(self, tokens: list[int]) -> None:
        self.pending = []

    def propose(self, limit: int) -> list[int]:
        return self.pending[:limit]

    def observe(self, new: list[int], next_drafts: list[int]) -> None:
        self.pending = next_drafts


class LookupDrafts:
    name = "lookup"

    def __init__(self):
        self.index = NgramIndex()

    def start(self, tokens: list[int]) -> None:
        self.index.sync(tokens)

    def propose(self, limit: int = LOOKUP_MAX) -> list[int]:
        return self.index.drafts(limit)

    def observe(self, new: list[int], next_drafts: list[int]) -> None:
        self.index.extend(new)
