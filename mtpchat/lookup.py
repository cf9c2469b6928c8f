"""Prompt lookup: drafts copied from an earlier place in the conversation where the last few
tokens already occurred. No forward pass is needed to make them."""
from __future__ import annotations


class NgramIndex:
    """Most recent position of every n-gram (n_min..n_max) of a growing token list, so that a
    lookup costs the same at token 10 and token 10,000."""

    def __init__(self, n_min: int = 2, n_max: int = 3):
        self.n_min, self.n_max = n_min, n_max
        self.tokens: list[int] = []
        self.last: dict[tuple[int, ...], int] = {}   # n-gram -> start of its latest occurrence
        self._indexed = 0                              # n-grams ending before this are indexed

    def sync(self, tokens: list[int]) -> None:
        """Follow `tokens` (extended, or cut back and replaced)."""
        common = 0
        for a, b in zip(self.tokens, tokens):
            if a != b:
                break
            common += 1
        if common < len(self.tokens):
            # cut back: rebuild (rare: a new conversation or an edited history)
            self.tokens, self.last, self._indexed = [], {}, 0
            common = 0
        self.tokens.extend(tokens[common:])

    def extend(self, new: list[int]) -> None:
        self.tokens.extend(new)

    def drafts(self, n_drafts: int) -> list[int]:
        t = self.tokens
        L = len(t)
        # index every n-gram that ends before the current suffix, so a match is always earlier
        while self._indexed < L - 1:
            end = self._indexed + 1
            for n in range(self.n_min, self.n_max + 1):
                if end >= n:
                    self.last[tuple(t[end - n:end])] = end - n
            self._indexed += 1
        for n in range(self.n_max, self.n_min - 1, -1):
            if L <= n:
                continue
            start = self.last.get(tuple(t[L - n:]))
            if start is not None:
                follow = t[start + n:start + n + n_drafts]
                if follow:
                    return follow
        return []


def lookup_drafts(history: list[int], n_drafts: int, *, ngram_max: int = 3, ngram_min: int = 2) -> list[int]:
    """One-off lookup (tests, scripts): the tokens that followed the latest earlier occurrence of
    the longest suffix n-gram."""
    idx = NgramIndex(ngram_min, ngram_max)
    idx.sync(history)
    return idx.drafts(n_drafts)
