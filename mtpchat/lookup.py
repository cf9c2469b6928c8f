"""Prompt lookup: drafts copied from an earlier place in the conversation where the last few
tokens already occurred. No forward pass is needed to make them."""
from __future__ import annotations


def lookup_drafts(history: list[int], n_drafts: int, *, ngram_max: int = 3, ngram_min: int = 2) -> list[int]:
    """The tokens that followed the most recent earlier occurrence of the longest suffix n-gram."""
    L = len(history)
    for n in range(ngram_max, ngram_min - 1, -1):
        if L <= n:
            continue
        tail = history[L - n:]
        # scan backwards: the most recent match is the likeliest continuation
        for start in range(L - n - 1, -1, -1):
            if history[start:start + n] == tail:
                follow = history[start + n:start + n + n_drafts]
                if follow:
                    return follow
    return []
