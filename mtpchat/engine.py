"""The decoding engine: plain decoding and MTP speculative decoding over one llama.cpp context.

One step evaluates a tree in a single llama_decode:

    chain   t0 d1 .. dn            t0: the token to commit, d: drafts (MTP or prompt lookup)
    blocks  m1 .. mm after some chain nodes, each block on its own sequence id

Chain token i carries seq 0 and the ids of every block attached at node >= i, so a block sees
the chain up to its anchor and nothing after it. Verification accepts the longest prefix of the
drafts that plain decoding would produce (or, when sampling, that speculative sampling keeps),
plus one bonus token; the KV cache is then cut back to exactly the accepted tokens. The block
after the last accepted node gives the next step's drafts through the sampler head.

The engine knows nothing of terminals: it yields tokens and keeps statistics.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from . import binding as B
from . import format as F
from . import policy as P
from .calibrate import load_or_measure
from .lookup import NgramIndex
from .sampler_head import SamplerHead
from .sampling import GREEDY, SamplingParams, accept_draft, argmax_token, distribution, sample

SOURCES = ("mtp", "lookup")
PROBE_MIN, PROBE_MAX = 32, 512   # steps between acceptance probes while decoding plainly


@dataclass
class Token:
    id: int
    text: str            # text this token completes (may be '' inside a UTF-8 sequence)
    source: str | None   # None: verified/plain token; else the draft source it was accepted from


@dataclass
class Stats:
    prompt_tokens: int = 0
    prompt_cached: int = 0
    prompt_s: float = 0.0
    tokens: int = 0
    steps: int = 0
    gen_s: float = 0.0
    offered: np.ndarray = field(default_factory=lambda: np.zeros(64, np.int64))   # drafts at depth i
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(64, np.int64))
    by_source: Counter = field(default_factory=Counter)   # accepted tokens per draft source
    trees: Counter = field(default_factory=Counter)       # steps per tree shape
    pass_1_s: float | None = None                         # calibrated cost of a 1-token pass
    decode_s: float = 0.0                                 # of gen_s: inside llama_decode
    draft_s: float = 0.0                                  # of gen_s: in the sampler head

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

    def acceptance(self) -> list[float]:
        n = int(np.max(np.nonzero(self.offered)[0]) + 1) if self.offered.any() else 0
        return [float(self.accepted[i] / self.offered[i]) for i in range(n)]

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens, "prompt_cached": self.prompt_cached,
            "prompt_tok_s": round(self.prompt_tok_s, 2), "tokens": self.tokens, "steps": self.steps,
            "tokens_per_step": round(self.tau, 4), "tok_s": round(self.tok_s, 2),
            "acceptance": [round(a, 4) for a in self.acceptance()],
            "accepted_by_source": dict(self.by_source), "trees": dict(self.trees),
            "est_speedup": None if self.est_speedup is None else round(self.est_speedup, 3),
            "outside_decode": round(1 - self.decode_s / self.gen_s, 4) if self.gen_s else None,
            "draft_share": round(self.draft_s / self.gen_s, 4) if self.gen_s else None,
        }


def parse_tree(spec: str) -> tuple[str, int]:
    """'auto' | 'plain' | 'linear:K' | 'quadratic:K' | 'lookup:K' -> (kind, K)."""
    kind, _, k = spec.partition(":")
    if kind in ("auto", "plain") and not k:
        return kind, 0
    if kind in ("linear", "quadratic", "lookup") and k.isdigit() and int(k) >= 1:
        return kind, int(k)
    raise ValueError(f"unknown tree '{spec}' (auto, plain, linear:K, quadratic:K, lookup:K)")


class Engine:
    def __init__(self, path, *, n_ctx: int = 4096, n_threads: int | None = None, n_gpu_layers: int = 0,
                 mtp: bool = True, tree: str = "auto", n_batch: int = 512, calibration: dict | None = None,
                 native: bool = True):
        self.kind, self.k_fixed = parse_tree(tree)
        reader = F.open_gguf(path)
        self.info = F.read_mtp_info(reader)
        if self.kind == "auto" and not (mtp and self.info):
            self.kind = "plain"  # a plain model, or MTP switched off: the baseline, exactly
        self.model = B.Model(path, n_gpu_layers=n_gpu_layers)
        self.banned = np.asarray(self.info.mask_ids if self.info else [], dtype=np.int64)
        self.mtp = mtp and self.info is not None
        if self.kind in ("linear", "quadratic") and not self.mtp:
            raise ValueError(f"tree '{tree}' needs an MTP model")
        self.k = self.info.n_masks if self.mtp else 0
        if self.kind in ("linear", "quadratic") and self.k_fixed > self.k:
            raise ValueError(f"this model has {self.k} mask tokens: {self.kind}:{self.k_fixed} is too deep")
        self.adapter = B.Adapter(self.model) if self.mtp else None
        self.head = SamplerHead(reader, self.info) if self.mtp else None
        n_seq = self.k + 2 if self.mtp else 1
        self.ctx = B.Context(self.model, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, n_seq_max=n_seq)
        self.ctx.set_adapter(self.adapter)
        self.ctx.set_banned(self.banned)
        self.native = native  # greedy verification in C; the Python version stays the reference
        self.ngrams = NgramIndex()
        self.t_decode = self.t_draft = 0.0  # seconds inside llama_decode and the sampler head
        self.device = f"gpu-layers={n_gpu_layers}" if n_gpu_layers else "cpu"
        self.tokens: list[int] = []          # exactly what the KV cache holds (seq 0)
        depth = max(self.k, 8)
        self.acc = {s: P.Acceptance(depth) for s in SOURCES}
        self.costs = calibration
        self.plan: P.Choice | None = None
        self.plan_lookup: P.Choice | None = None
        self._since_plan = 0
        self._since_probe = 0
        self._probe_every = PROBE_MIN
        self._mtp_can_pay: bool | None = None
        self._shadow: dict[str, tuple[list[int], int]] = {}   # source -> (unverified drafts, hits)

    def close(self) -> None:
        self.ctx.close()
        self.model.close()

    # -- set-up ---------------------------------------------------------------------------

    def calibrate(self) -> dict[int, float]:
        if self.costs is None:
            self.costs = load_or_measure(self)
        return self.costs

    def reset(self) -> None:
        self.ctx.clear()
        self.tokens = []

    def recover(self) -> None:
        """Make the cache agree with `tokens` again after an interrupted step (Ctrl-C)."""
        for s in range(1, self.ctx.n_seq_max):
            self.ctx.seq_rm(s)
        self.ctx.seq_rm(0, len(self.tokens), -1)
        last = self.ctx.seq_pos_max(0)
        del self.tokens[last + 1:]

    def set_mtp(self, on: bool) -> None:
        """Switch speculation on or off between generations (/mtp on|off). Off keeps the adapter
        attached: with no mask token in a batch it adds no work and changes nothing."""
        if on and not self.mtp:
            raise ValueError("this model has no MTP parts: it always decodes plainly")
        self.kind = "auto" if on else "plain"

    def _prefill(self, tokens: list[int]) -> None:
        """Evaluate tokens into seq 0 in batches (no outputs needed)."""
        self.ctx.set_embeddings(False)
        n_b = self.ctx.n_batch
        for i in range(0, len(tokens), n_b):
            chunk = tokens[i:i + n_b]
            p0 = len(self.tokens)
            outputs = [0] * len(chunk)
            outputs[-1] = 1
            self.ctx.decode(chunk, list(range(p0, p0 + len(chunk))), outputs=outputs)
            self.tokens.extend(chunk)

    # -- one step ---------------------------------------------------------------------------

    def _step(self, t0: int, drafts: list[int], tree: P.Tree, params: SamplingParams, rng):
        """Verify `drafts` after t0 in one pass with `tree`'s mask blocks.
        Returns (new tokens, accepted drafts, next MTP drafts)."""
        ctx = self.ctx
        p0 = len(self.tokens)
        n = min(tree.n_drafts, len(drafts))
        chain = [t0] + drafts[:n]
        blocks = [b for b in tree.blocks if b <= n] if self.mtp else []
        m = tree.n_masks
        seq_of = {b: 1 + i for i, b in enumerate(blocks)}
        if blocks:
            toks, pos, seqs = [], [], []
            for i, t in enumerate(chain):
                toks.append(t)
                pos.append(p0 + i)
                seqs.append([0] + [seq_of[b] for b in blocks if b >= i])
            for b in blocks:
                toks += self.info.mask_ids[:m]
                pos += range(p0 + b + 1, p0 + b + 1 + m)
                seqs += [[seq_of[b]]] * m
            for s in seq_of.values():
                ctx.seq_cp(0, s)
            ctx.set_embeddings(True)
            t = time.perf_counter()
            n_out = ctx.decode(toks, pos, seq_ids=seqs, outputs=[1] * len(toks))
        else:
            ctx.set_embeddings(False)
            t = time.perf_counter()
            n_out = ctx.decode(chain, list(range(p0, p0 + len(chain))), outputs=[1] * len(chain))
        self.t_decode += time.perf_counter() - t
        logits = ctx.logits(n_out)
        if self.native and params.greedy and params.repeat_penalty == 1.0:
            # one C call: argmax per chain node, accepted prefix, bonus, cache clean-up
            a, bonus = ctx.verify_greedy(range(len(chain)), chain[1:], p0, list(seq_of.values()))
        else:
            a, bonus = self._verify(logits, chain, n, p0, params, rng)
            # the cache keeps exactly the accepted tokens (outputs stay readable until the next pass)
            for s in seq_of.values():
                ctx.seq_rm(s)
            ctx.seq_rm(0, p0 + a + 1, -1)
        self.tokens.extend(chain[:a + 1])
        next_drafts: list[int] = []
        if a in seq_of:
            row = len(chain) + blocks.index(a) * m
            z = ctx.hidden(n_out)[row:row + m]
            t = time.perf_counter()
            next_drafts = self.head.draft(bonus, z, logits[row:row + m], m, self.banned)
            self.t_draft += time.perf_counter() - t
        return chain[1:a + 1] + [bonus], a, next_drafts

    def _verify(self, logits, chain, n, p0, params, rng) -> tuple[int, int]:
        """Reference verification in Python: drafts d1..dn against the target at chain nodes 0..n-1.
        Greedy: the longest prefix plain decoding reproduces; sampling: speculative sampling."""
        history = self.tokens + chain
        a = 0
        while True:
            hist = history[:p0 + a + 1]
            if params.greedy:
                tok = argmax_token(logits[a], hist, params, self.banned)
                if a < n and tok == chain[a + 1]:
                    a += 1
                    continue
            else:
                ids, p = distribution(logits[a], hist, params, self.banned)
                if a < n:
                    ok, tok = accept_draft(ids, p, chain[a + 1], rng)
                    if ok:
                        a += 1
                        continue
                else:
                    tok = sample(ids, p, rng)
            break
        return a, tok

    # -- tree choice ------------------------------------------------------------------------

    def _choose(self, mtp_drafts: list[int], lookup: list[int]) -> tuple[P.Tree, str | None]:
        """The tree for this step and where its chain drafts come from."""
        kind, k = self.kind, self.k_fixed
        if kind == "plain":
            return P.PLAIN, None
        if kind == "lookup":
            return (P.Tree(len(lookup[:k])), "lookup") if lookup else (P.PLAIN, None)
        if kind == "quadratic":
            return (P.quadratic(k) if mtp_drafts else P.Tree(0, (0,), k)), "mtp"
        if kind == "linear":
            return (P.linear(k) if mtp_drafts else P.Tree(0, (0,), k)), "mtp"
        # auto: re-plan every few steps from the running acceptance
        costs = self.calibrate()
        if self.plan is None or self._since_plan >= 8:
            self._since_plan = 0
            if self.mtp:
                self.plan = P.choose(costs, self.acc["mtp"].alpha, k_max=self.k)
                if self._mtp_can_pay is None:
                    # with near-perfect drafts, could any tree beat plain decoding on this machine?
                    self._mtp_can_pay = P.choose(costs, [0.95] * self.k, k_max=self.k).tree != P.PLAIN
                if self.plan.tree != P.PLAIN:
                    self._probe_every = PROBE_MIN
            self.plan_lookup = P.choose(costs, self.acc["lookup"].alpha, k_max=8, chain_only=True)
        self._since_plan += 1
        options = []
        if self.mtp and self.plan.tree != P.PLAIN:
            t = self.plan.tree
            options.append((self.plan.rate, t if mtp_drafts else P.Tree(0, (0,), t.n_masks), "mtp"))
        if lookup and self.plan_lookup.tree != P.PLAIN:
            options.append((self.plan_lookup.rate, P.Tree(min(len(lookup), self.plan_lookup.tree.n_drafts)), "lookup"))
        if options:
            _, tree, source = max(options, key=lambda o: o[0])
            return tree, source
        # decoding plainly: now and then a masks-only step makes drafts that the following plain
        # tokens check for free, so acceptance keeps being measured. A probe costs a few plain
        # steps, so probes thin out (up to every PROBE_MAX steps) while they find nothing.
        self._since_probe += 1
        if self.mtp and self._mtp_can_pay and self._since_probe >= self._probe_every and "mtp" not in self._shadow:
            self._since_probe = 0
            self._probe_every = min(2 * self._probe_every, PROBE_MAX)
            return P.Tree(0, (0,), self.k), "probe"
        return P.PLAIN, None

    def _shadow_check(self, new: list[int]) -> None:
        """Score drafts that were not verified (probes, unused lookups) against the real tokens."""
        for source, (drafts, hits) in list(self._shadow.items()):
            done = False
            for t in new:
                if hits < len(drafts) and t == drafts[hits]:
                    hits += 1
                else:
                    done = True
                    break
            if done or hits >= len(drafts):
                self.acc[source].update(len(drafts), hits)
                del self._shadow[source]
            else:
                self._shadow[source] = (drafts, hits)

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
        keep = 0
        for a, b in zip(self.tokens, prompt[:-1]):
            if a != b:
                break
            keep += 1
        self.ctx.seq_rm(0, keep, -1)
        del self.tokens[keep:]
        self._prefill(prompt[keep:-1])
        st.prompt_tokens += len(prompt)
        st.prompt_cached += keep
        st.prompt_s += time.perf_counter() - t_start

        t0, mtp_drafts = prompt[-1], []
        self._shadow = {}
        decoder = _Utf8(self.model)
        stops = _StopFilter(stop)
        produced = 0
        t_gen = time.perf_counter()
        dec0, draft0 = self.t_decode, self.t_draft
        try:
            use_lookup = self.kind in ("auto", "lookup")
            if use_lookup:
                self.ngrams.sync(self.tokens + [t0])
            while True:
                lookup = self.ngrams.drafts(8) if use_lookup else []
                tree, source = self._choose(mtp_drafts, lookup)
                drafts = mtp_drafts if source == "mtp" else lookup if source == "lookup" else []
                if self.kind == "auto" and source != "lookup" and lookup and "lookup" not in self._shadow:
                    self._shadow["lookup"] = (lookup, 0)
                if len(self.tokens) + tree.n_tokens > self.ctx.n_ctx:
                    if len(self.tokens) + 1 >= self.ctx.n_ctx:
                        return  # the context is full: the answer ends here
                    tree, source, drafts = P.PLAIN, None, []
                new, n_acc, next_drafts = self._step(t0, drafts, tree, params, rng)
                if use_lookup:
                    self.ngrams.extend(new)
                self._shadow_check(new)
                n_off = min(tree.n_drafts, len(drafts))
                if n_off:
                    self.acc[source].update(n_off, n_acc)
                    st.offered[:n_off] += 1
                    st.accepted[:n_acc] += 1
                    st.by_source[source] += n_acc
                if source == "probe":
                    self._shadow["mtp"] = (next_drafts, 0)
                    next_drafts = []
                mtp_drafts = next_drafts
                st.steps += 1
                st.trees[tree.name if source != "probe" else "probe"] += 1
                for i, tok in enumerate(new):
                    stop = self.model.is_eog(tok)
                    produced += 1
                    st.tokens += 1  # the end-of-generation token counts as generated, unprinted
                    if not stop:
                        text, stop = stops.push(decoder.push(tok))
                        yield Token(tok, text, source if i < n_acc else None)
                    if stop or produced >= max_tokens:
                        # drafts accepted after the stopping token leave the cache
                        cut = len(self.tokens) - (n_acc - i)
                        if cut < len(self.tokens):
                            self.ctx.seq_rm(0, cut, -1)
                            del self.tokens[cut:]
                        return
                t0 = new[-1]
        finally:
            st.gen_s += time.perf_counter() - t_gen
            st.decode_s += self.t_decode - dec0
            st.draft_s += self.t_draft - draft0


class _StopFilter:
    """Holds back text that may be the start of a stop string; cuts the text at a stop string."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(x for x in stops if x)
        self.held = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text to print now, whether a stop string was reached)"""
        if not self.stops:
            return text, False
        buf = self.held + text
        hits = [buf.find(x) for x in self.stops if x in buf]
        if hits:
            self.held = ""
            return buf[:min(hits)], True
        keep = 0
        for x in self.stops:
            for n in range(min(len(x) - 1, len(buf)), 0, -1):
                if buf.endswith(x[:n]):
                    keep = max(keep, n)
                    break
        self.held = buf[len(buf) - keep:]
        return buf[:len(buf) - keep], False


class _Utf8:
    """Incremental detokenizer: returns text only when its UTF-8 bytes are complete."""

    def __init__(self, model: B.Model):
        self.model = model
        self.pending = b""

    def push(self, token: int) -> str:
        data = self.pending + self.model.piece(token)
        for cut in range(len(data), max(len(data) - 4, -1), -1):
            try:
                text = data[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.pending = data[cut:]
            return text
        self.pending = data
        return ""
