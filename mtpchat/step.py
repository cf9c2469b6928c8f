"""One decoding step: a tree and its drafts in; the accepted drafts, the bonus token and the next
drafts out, with the KV cache holding exactly the committed tokens afterwards.

The tree batch (docs/DESIGN.md §1.5, "The tree step"):

    chain   t0 d1 .. dn            t0: the token to commit, d: drafts (MTP or prompt lookup)
    blocks  m1 .. mm after some chain nodes, each block on its own sequence id

Chain token i carries seq 0 and the ids of every block attached at node >= i, so a block sees
the chain up to its anchor and nothing after it. Verification accepts the longest prefix of the
drafts that plain decoding would produce (or, when sampling, that speculative sampling keeps),
plus one bonus token. The block after the last accepted node gives the next drafts through the
sampler head. `Stepper.run` is the step boundary: greedy steps are one C call (llama_mtp_step).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .binding import MtpHead
from .policy import Tree
from .sampling import (SamplingParams, accept_draft, argmax_token, candidate_distribution, candidates_suffice,
                       distribution, sample)


@dataclass(frozen=True)
class TreeBatch:
    tokens: list[int]
    pos: list[int]
    seqs: list[list[int]] | None      # None: every token on seq 0 (no blocks)
    block_seq: dict[int, int]         # chain node -> sequence id of the block after it
    chain_len: int
    n_masks: int
    outputs: list[int]

    def block_row(self, node: int) -> int:
        """Output row of the first mask of the block after chain node `node`."""
        return self.chain_len + list(self.block_seq).index(node) * self.n_masks


def tree_batch(chain: list[int], blocks: tuple[int, ...], n_masks: int, mask_ids: list[int], p0: int,
               prefix: list[int] = ()) -> TreeBatch:
    """Tokens, positions, sequence ids and outputs of one step's pass; chain[0] goes to position
    p0 + len(prefix). `prefix`: tokens committed unconditionally before the chain (the rest of the
    prompt, in the prompt pass), seen by every block, with no outputs."""
    block_seq = {b: 1 + i for i, b in enumerate(blocks)}
    n_pre = len(prefix)
    pos = list(range(p0, p0 + n_pre + len(chain)))
    outputs = [0] * n_pre + [1] * (len(chain) + len(blocks) * n_masks)
    if not blocks:
        return TreeBatch(list(prefix) + list(chain), pos, None, {}, len(chain), n_masks, outputs)
    toks = list(prefix) + list(chain)
    seqs = [[0] + list(block_seq.values())] * n_pre
    seqs += [[0] + [block_seq[b] for b in blocks if b >= i] for i in range(len(chain))]
    for b in blocks:
        toks += mask_ids[:n_masks]
        pos += range(p0 + n_pre + b + 1, p0 + n_pre + b + 1 + n_masks)
        seqs += [[block_seq[b]]] * n_masks
    return TreeBatch(toks, pos, seqs, block_seq, len(chain), n_masks, outputs)


@dataclass
class StepResult:
    new: list[int]            # accepted drafts, then the bonus token
    n_accepted: int
    next_drafts: list[int]    # from the block after the last accepted node ([] if it had none)


def verify_reference(logits, history: list[int], chain: list[int], n: int, params: SamplingParams, rng,
                     banned, candidates=None) -> tuple[int, int]:
    """Drafts chain[1..n] against the target at chain nodes 0..n-1, in Python (the reference the
    native verification is tested against). `history` is what precedes chain[0]. Greedy: the
    longest prefix plain decoding reproduces; sampling: speculative sampling, from each chain
    row's top-k candidates when `candidates` (ids, logits) holds them (candidates_suffice).
    Returns (accepted drafts, bonus token)."""
    full = history + chain
    p0 = len(history)
    a = 0
    while True:
        hist = full[:p0 + a + 1]
        if params.greedy:
            tok = argmax_token(logits[a], hist, params, banned)
            if a < n and tok == chain[a + 1]:
                a += 1
                continue
        else:
            ids, p = (candidate_distribution(candidates[0][a], candidates[1][a], params) if candidates is not None
                      else distribution(logits[a], hist, params, banned))
            if a < n:
                ok, tok = accept_draft(ids, p, chain[a + 1], rng)
                if ok:
                    a += 1
                    continue
            else:
                tok = sample(ids, p, rng)
        break
    return a, tok


class Stepper:
    """Runs steps on one context. Keeps the seconds the backend spent computing passes and the
    seconds of the Python sampler head, so statistics can tell host work from the pass itself.

    native: greedy steps are one C call (llama_mtp_step: batch, decode, verification, cache
    clean-up, next drafts; with mask blocks, verification and the head run inside the pass's
    graph, native/patches/0007); for sampling, the sampler head runs in C and each chain row's
    top-k candidates come from a C scan (llama_mtp_top_k); otherwise the Python reference runs
    (verify_reference over whole rows, the numpy SamplerHead)."""

    def __init__(self, ctx, *, mask_ids: list[int], head, banned: np.ndarray, native: bool = True):
        self.ctx, self.mask_ids, self.head, self.banned, self.native = ctx, mask_ids, head, banned, native
        self.c_head = (MtpHead(head.g, head.s, head.eps, shortlist=head.shortlist)
                       if native and head is not None else None)
        self.decode_s = 0.0
        self.draft_s = 0.0

    def close(self) -> None:
        if self.c_head is not None:
            self.c_head.close()

    def run(self, history: list[int], t0: int, drafts: list[int], tree: Tree, params: SamplingParams,
            rng, prefix: list[int] = ()) -> StepResult:
        """`history` is what the cache holds; `prefix` (in the prompt pass: the prompt's tokens
        after it, evaluated in the same pass), t0 and the accepted drafts are appended to it."""
        ctx = self.ctx
        p0 = len(history)
        n = min(tree.n_drafts, len(drafts))
        chain = [t0] + drafts[:n]
        blocks = tree.blocks_reached(n) if self.head is not None else ()
        m = tree.n_masks
        c0 = ctx.compute_s
        # the prompt pass takes the Python path: once an answer, and its time is prompt time
        if self.native and params.greedy and params.repeat_penalty == 1.0 and not prefix:
            new, a, next_drafts, _ = ctx.mtp_step(self.c_head, chain, blocks, self.mask_ids, m if blocks else 0, p0)
            self.decode_s += ctx.compute_s - c0
            history.extend(chain[:a + 1])
            return StepResult(new, a, next_drafts)
        batch = tree_batch(chain, blocks, m, self.mask_ids, p0, prefix)
        for s in batch.block_seq.values():
            ctx.seq_cp(0, s)
        ctx.set_embeddings(bool(blocks))
        n_out = ctx.decode(batch.tokens, batch.pos, seq_ids=batch.seqs, outputs=batch.outputs)
        self.decode_s += ctx.compute_s - c0
        logits = ctx.logits(n_out)
        history.extend(prefix)
        # sampling: each chain row's top-k from a C scan instead of numpy over the vocabulary
        candidates = ctx.top_k(n + 1, params.top_k) if self.native and candidates_suffice(params) else None
        a, bonus = verify_reference(logits, history, chain, n, params, rng, self.banned, candidates)
        # the cache keeps exactly the accepted tokens (outputs stay readable until the next pass)
        for s in batch.block_seq.values():
            ctx.seq_rm(s)
        ctx.seq_rm(0, p0 + len(prefix) + a + 1, -1)
        history.extend(chain[:a + 1])
        next_drafts: list[int] = []
        if a in batch.block_seq:
            row = batch.block_row(a)
            if self.c_head is not None:
                # llama_mtp_draft takes batch indices, which the prompt's tokens shift
                next_drafts = ctx.mtp_draft(self.c_head, len(prefix) + row, m, bonus)
            else:
                z = ctx.hidden(n_out)[row:row + m]
                t = time.perf_counter()
                next_drafts = self.head.draft(bonus, z, logits[row:row + m], m, self.banned)
                self.draft_s += time.perf_counter() - t
        return StepResult(chain[1:a + 1] + [bonus], a, next_drafts)
