"""The decoding engine: plain decoding and MTP speculative decoding over one llama.cpp context.

The decode loop lives here; each concern it drives has a module of its own: `step` (one tree
pass, verification, next drafts), `planner` (which tree and draft source), `drafts` (MTP head and
prompt lookup), `textstream` (UTF-8 and stop strings), `stats`. The engine knows nothing of
terminals: it yields tokens and keeps statistics. Nothing outside it touches its cache or its
token list: bench's baseline, calibration and "logits after these tokens" are methods here.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from . import binding as B
from . import calibrate
from . import format as F
from . import policy as P
from .drafts import LOOKUP_MAX, LookupDrafts, MtpDrafts
from .planner import Planner, parse_tree
from .sampler_head import SHORTLIST, SamplerHead
from .sampling import GREEDY, SamplingParams
from .stats import Stats
from .step import Stepper
from .textstream import TextStream

__all__ = ["Engine", "Stats", "Token", "parse_tree"]

DRAFT_HEADS = {"sampler": SHORTLIST, "plain": 1}   # shortlist the sampler head scores (1: no rescoring)


@dataclass
class Token:
    id: int
    text: str            # text this token completes (may be '' inside a UTF-8 sequence)
    source: str | None   # None: verified/plain token; else the draft source it was accepted from


class Engine:
    def __init__(self, path, *, n_ctx: int = 4096, n_threads: int | None = None, n_gpu_layers: int = 0,
                 mtp: bool = True, tree: str = "auto", n_batch: int = 512, calibration: dict | None = None,
                 native: bool = True, draft_head: str = "sampler", graph_head: bool = True):
        kind, k_fixed = parse_tree(tree)
        reader = F.open_gguf(path)
        self.info = F.read_mtp_info(reader)
        if kind == "auto" and not (mtp and self.info):
            kind = "plain"  # a plain model, or MTP switched off: the baseline, exactly
        self.model = B.Model(path, n_gpu_layers=n_gpu_layers)
        self.banned = np.asarray(self.info.mask_ids if self.info else [], dtype=np.int64)
        self.mtp = mtp and self.info is not None
        if kind in ("linear", "quadratic") and not self.mtp:
            raise ValueError(f"tree '{tree}' needs an MTP model")
        self.k = self.info.n_masks if self.mtp else 0
        if kind in ("linear", "quadratic") and k_fixed > self.k:
            raise ValueError(f"this model has {self.k} mask tokens: {kind}:{k_fixed} is too deep")
        self.adapter = B.Adapter(self.model) if self.mtp else None
        self.draft_head = draft_head
        self.native = native   # greedy steps in one C call; False: the Python reference step
        if draft_head not in DRAFT_HEADS:
            raise ValueError(f"unknown draft head '{draft_head}' ({', '.join(DRAFT_HEADS)})")
        # "plain": the top mask logit itself, for measuring what the sampler head adds
        head = SamplerHead(reader, self.info, shortlist=DRAFT_HEADS[draft_head]) if self.mtp else None
        n_seq = self.k + 2 if self.mtp else 1
        self.ctx = B.Context(self.model, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, n_seq_max=n_seq)
        if not n_gpu_layers:
            # ggml-cpu's flash attention tiles passes of 64 query rows or more, and splits the KV
            # of a one-row pass once it holds 512 cells: both round differently from what a tree
            # pass computes, so plain and MTP decoding would part at near-ties. The reference
            # kernels cost ~5-9 % of prompt speed here and nothing measurable in generation.
            self.ctx.set_batch_invariant(True)
        self.ctx.set_adapter(self.adapter)
        self.ctx.set_banned(self.banned)
        # greedy steps with mask blocks verify and draft inside their pass's graph; off: on the host
        self.graph_head = graph_head
        self.ctx.set_graph_head(graph_head)
        self.device = f"gpu-layers={n_gpu_layers}" if n_gpu_layers else "cpu"
        self.costs = calibration
        self.calibration_note: str | None = None
        self.planner = Planner(kind, k_fixed, n_masks=self.k, costs=self.calibrate)
        # greedy verification in C (native); the Python version stays the reference
        self.stepper = Stepper(self.ctx, mask_ids=self.info.mask_ids if self.mtp else [], head=head,
                               banned=self.banned, native=native)
        self.mtp_drafts, self.lookup = MtpDrafts(), LookupDrafts()
        self._tokens: list[int] = []          # exactly what the KV cache holds (seq 0)

    def close(self) -> None:
        self.stepper.close()
        self.ctx.close()
        self.model.close()

    @property
    def kind(self) -> str:
        """The tree kind in use: auto, plain, linear, quadratic or lookup."""
        return self.planner.kind

    @property
    def n_cached(self) -> int:
        """Tokens in the KV cache (seq 0)."""
        return len(self._tokens)

    # -- set-up ---------------------------------------------------------------------------

    def calibrate(self, *, force: bool = False) -> dict[int, float]:
        """The cost table of this model, thread count and device: cached, re-validated cheaply,
        re-measured when stale or when `force` (see calibrate.py). `calibration_note` says why
        a table was measured now, or why it was not cached."""
        if self.costs is None or force:
            saved = list(self._tokens)
            self.costs, self.calibration_note = calibrate.load_or_measure(
                self.ctx, calibrate.cache_key(self.model.path, self.ctx.n_threads, self.device),
                mask_ids=self.info.mask_ids if self.mtp else [],
                filler=self.model.tokenize(calibrate.FILLER_TEXT), force=force)
            # checking or measuring used the cache: put the conversation back
            self._tokens = []
            self._prefill(saved)
        return self.costs

    def reset(self) -> None:
        self.ctx.clear()
        self._tokens = []

    def recover(self) -> None:
        """Make the cache agree with the token list again after an interrupted step (Ctrl-C)."""
        for s in range(1, self.ctx.n_seq_max):
            self.ctx.seq_rm(s)
        self.ctx.seq_rm(0, len(self._tokens), -1)
        last = self.ctx.seq_pos_max(0)
        del self._tokens[last + 1:]

    def set_mtp(self, on: bool) -> None:
        """Switch speculation on or off between generations (/mtp on|off). Off keeps the adapter
        attached: with no mask token in a batch it adds no work and changes nothing."""
        if on and not self.mtp:
            raise ValueError("this model has no MTP parts: it always decodes plainly")
        self.planner.kind = "auto" if on else "plain"

    @contextmanager
    def baseline(self):
        """Plain decoding exactly as stock llama.cpp runs it (no adapter attached), for the
        plain side of a benchmark; the tree and the adapter come back afterwards."""
        kind = self.planner.kind
        self.planner.kind = "plain"
        self.ctx.set_adapter(None)
        try:
            yield self
        finally:
            self.ctx.set_adapter(self.adapter)
            self.planner.kind = kind

    def measured_rates(self) -> dict[str, float]:
        """Tokens per second each plan of `auto` delivered while running (since the engine started)."""
        return {t.name: round(n / s, 2) for t, (s, n) in self.planner.measured.items() if s > 0}

    def logits_after(self, tokens: list[int]) -> np.ndarray:
        """Plain logits (a copy) of the position after `tokens`, from an empty cache; the cache
        is empty afterwards too."""
        self.reset()
        self._prefill(tokens[:-1])
        self.ctx.set_embeddings(False)
        n = self.ctx.decode(tokens[-1:], [len(tokens) - 1], outputs=[1])
        row = np.array(self.ctx.logits(n)[0], dtype=np.float64)
        self.reset()
        return row

    def _prefill(self, tokens: list[int]) -> None:
        """Evaluate tokens into seq 0 in batches (no outputs needed)."""
        self.ctx.set_embeddings(False)
        n_b = self.ctx.n_batch
        for i in range(0, len(tokens), n_b):
            chunk = tokens[i:i + n_b]
            p0 = len(self._tokens)
            outputs = [0] * len(chunk)
            outputs[-1] = 1
            self.ctx.decode(chunk, list(range(p0, p0 + len(chunk))), outputs=outputs)
            self._tokens.extend(chunk)

    def _reuse_prefix(self, prompt: list[int]) -> int:
        """Keep the cached tokens the prompt starts with (multi-turn); returns how many."""
        keep = 0
        for a, b in zip(self._tokens, prompt[:-1]):
            if a != b:
                break
            keep += 1
        self.ctx.seq_rm(0, keep, -1)
        del self._tokens[keep:]
        return keep

    def _cut(self, n: int) -> None:
        """Drop the last n committed tokens from the cache (drafts accepted after a stop)."""
        if n > 0:
            self.ctx.seq_rm(0, len(self._tokens) - n, -1)
            del self._tokens[-n:]

    # -- generation -------------------------------------------------------------------------

    def generate(self, prompt: list[int], params: SamplingParams = GREEDY, *, max_tokens: int = 256,
                 stats: Stats | None = None, stop: tuple[str, ...] = ()) -> Iterator[Token]:
        """Yield generated tokens until an end-of-generation token, a stop string (not printed)
        or max_tokens. The KV cache of the longest common prefix with the previous call is reused
        (multi-turn)."""
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) + 1 > self.ctx.n_ctx:
            raise B.LlamaError(f"the prompt ({len(prompt)} tokens) does not fit the context ({self.ctx.n_ctx})")
        st = stats if stats is not None else Stats()
        st.pass_1_s = self.costs[1] if self.costs else None
        rng = np.random.default_rng(params.seed)
        t_start = time.perf_counter()
        keep = self._reuse_prefix(prompt)
        # the prompt pass: the first step evaluates the rest of the prompt along with its tree, so
        # that the first token and the first drafts come from the pass that reads the prompt (as in
        # llama.cpp), and no batch shape is built just for a first step without drafts
        pending = prompt[keep:-1]
        st.prompt_tokens += len(prompt)
        st.prompt_cached += keep
        st.prompt_s += time.perf_counter() - t_start

        planner, stepper = self.planner, self.stepper
        t0 = prompt[-1]
        text = TextStream(self.model.piece, stop)
        held: Token | None = None     # printed one token late, so the end of the text can join it
        produced = 0
        t_gen = time.perf_counter()
        dec0, draft0 = stepper.decode_s, stepper.draft_s
        # statistics stay current while the answer streams; the time the caller holds the
        # generator at a yield (rendering, a slow pipe) is not generation time
        gen0, sdec0, sdraft0 = st.gen_s, st.decode_s, st.draft_s
        paused, yielded_at = 0.0, None

        def account() -> None:
            st.gen_s = gen0 + time.perf_counter() - t_gen - paused
            st.decode_s = sdec0 + stepper.decode_s - dec0
            st.draft_s = sdraft0 + stepper.draft_s - draft0

        st.finish_reason = None
        planner.start()
        self.mtp_drafts.start(self._tokens)
        if planner.uses_lookup:
            self.lookup.start(self._tokens + pending + [t0])
        first = True   # the prompt pass: its time is prompt time, its tokens first_tokens
        try:
            while True:
                t_step = time.perf_counter()
                lookup = self.lookup.propose(LOOKUP_MAX) if planner.uses_lookup else []
                mtp_drafts = self.mtp_drafts.propose(self.k)
                tree, source = planner.choose(mtp_drafts, lookup)
                drafts = mtp_drafts if source == "mtp" else lookup if source == "lookup" else []
                prefix: list[int] = []
                if first:
                    room = self.ctx.n_batch - tree.n_tokens
                    if len(pending) > room:   # a long prompt: all but its last `room` tokens first
                        self._prefill(pending[:len(pending) - room])
                        pending = pending[len(pending) - room:]
                    prefix, pending = pending, []
                if len(self._tokens) + len(prefix) + tree.n_tokens > self.ctx.n_ctx:
                    if len(self._tokens) + 1 >= self.ctx.n_ctx:
                        st.finish_reason = "context"
                        break  # the context is full: the answer ends here
                    tree, source, drafts = P.PLAIN, None, []
                res = stepper.run(self._tokens, t0, drafts, tree, params, rng, prefix)
                n_off = min(tree.n_drafts, len(drafts))
                next_drafts = planner.record(source, n_off, res.n_accepted, res.new, res.next_drafts,
                                             seconds=None if first else time.perf_counter() - t_step)
                self.mtp_drafts.observe(res.new, next_drafts)
                if planner.uses_lookup:
                    self.lookup.observe(res.new, next_drafts)
                if n_off:
                    st.count_drafts(n_off, res.n_accepted)
                    st.by_source[source] += res.n_accepted
                if first:
                    now = time.perf_counter()
                    st.prompt_s += now - t_step
                    t_gen, dec0, draft0 = now, stepper.decode_s, stepper.draft_s
                else:
                    st.steps += 1
                    st.trees[tree.name if source != "probe" else "probe"] += 1
                    st.pass_tokens += 1 + n_off + (len(tree.blocks_reached(n_off)) * tree.n_masks if self.mtp else 0)
                    if tree.n_tokens == 1 and source is None:  # a plain step: the in-process baseline
                        st.plain_steps += 1
                        st.plain_tokens += len(res.new)
                        st.plain_s += time.perf_counter() - t_step
                account()
                done = False
                for i, tok in enumerate(res.new):
                    done = self.model.is_eog(tok)
                    produced += 1
                    st.tokens += 1  # the end-of-generation token counts as generated, unprinted
                    st.first_tokens += first
                    if not done:
                        piece, done = text.push(tok)
                        if held is not None:
                            yielded_at = time.perf_counter()
                            yield held
                            paused += time.perf_counter() - yielded_at
                            yielded_at = None
                        held = Token(tok, piece, source if i < res.n_accepted else None)
                    if done or produced >= max_tokens:
                        st.finish_reason = "stop" if done else "length"
                        # drafts accepted after the stopping token leave the cache
                        self._cut(res.n_accepted - i)
                        done = True
                        break
                if done:
                    break
                t0 = res.new[-1]
                first = False
            tail = text.flush()
            if held is not None:
                held.text += tail
                account()
                yielded_at = time.perf_counter()
                yield held
                paused += time.perf_counter() - yielded_at
                yielded_at = None
        finally:
            if yielded_at is not None:  # closed while the caller held it
                paused += time.perf_counter() - yielded_at
            account()
