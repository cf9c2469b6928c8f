"""The decoding engine on the real patched llama.cpp: exactness, the cache, statistics, sampling."""
import math
from collections import Counter

import numpy as np
import pytest

from mtpchat import binding as B
from mtpchat import format as F
from mtpchat import policy as P
from mtpchat.engine import Engine
from mtpchat.sampler_head import SamplerHead
from mtpchat.sampling import GREEDY, SamplingParams
from mtpchat.stats import Stats
from mtpchat.step import Stepper

# a machine where extra tokens in a pass are nearly free: the auto policy builds deep trees
FLAT = {1: 1.0, 2: 1.0, 4: 1.01, 8: 1.02, 16: 1.04, 32: 1.1}
TREES = ["linear:1", "linear:3", "quadratic:1", "quadratic:3", "lookup:4", "auto"]


def tiny_prompts(n_vocab):
    rng = np.random.default_rng(7)
    return [[int(t) for t in rng.integers(5, n_vocab - 8, size=n)] for n in (3, 9, 20)]


def smol_prompts(model):
    texts = ["Write a Python function that reverses a string.",
             "List three colours of the rainbow, one per line.",
             "What is 12 + 30? Reply with the number and a short explanation."]
    return [model.tokenize(f"<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n", parse_special=True) for t in texts]


@pytest.fixture(scope="module", params=["tiny", "smol"])
def engines(request):
    path = request.getfixturevalue("tiny_mtp" if request.param == "tiny" else "smol_mtp")
    plain = Engine(path, mtp=False, n_ctx=1024)
    yield path, plain, request.param
    plain.close()


def generate(engine, prompt, n, params=GREEDY, stats=None):
    return [t.id for t in engine.generate(prompt, params, max_tokens=n, stats=stats)]


def spy_steps(engine) -> list:
    """Record every step of `engine`: (new tokens, accepted, next drafts, cached before, seq 0's
    last position after)."""
    steps, real = [], engine.stepper.run

    def spy(history, *a, **kw):
        before = len(history)
        res = real(history, *a, **kw)
        steps.append((res.new, res.n_accepted, res.next_drafts, before, engine.stepper.ctx.seq_pos_max(0)))
        return res

    engine.stepper.run = spy
    return steps


class StepRig:
    """A Stepper on its own context, as the engine builds it, with the token list it maintains."""

    def __init__(self, path, n_ctx=512):
        reader = F.open_gguf(path)
        self.info = F.read_mtp_info(reader)
        self.model = B.Model(path)
        self.adapter = B.Adapter(self.model)
        self.ctx = B.Context(self.model, n_ctx=n_ctx, n_batch=512, n_seq_max=self.info.n_masks + 2)
        self.ctx.set_adapter(self.adapter)
        banned = np.asarray(self.info.mask_ids, dtype=np.int64)
        self.ctx.set_banned(banned)
        self.step = Stepper(self.ctx, mask_ids=self.info.mask_ids, head=SamplerHead(reader, self.info), banned=banned)
        self.history: list[int] = []

    def prefill(self, tokens):
        self.ctx.decode(tokens, list(range(len(tokens))))
        self.history = list(tokens)

    def close(self):
        self.ctx.close()
        self.model.close()


@pytest.mark.parametrize("tree", TREES)
def test_greedy_mtp_equals_plain(engines, tree):
    path, plain, kind = engines
    if kind == "smol" and tree in ("linear:1", "quadratic:1"):
        pytest.skip("covered on the tiny model; SmolLM2 trees cost ~50 ms a step on 2 cores")
    mtp = Engine(path, tree=tree, n_ctx=1024, calibration=FLAT)
    prompts = tiny_prompts(plain.model.n_vocab) if kind == "tiny" else smol_prompts(plain.model)
    lengths = (40, 17, 64) if kind == "tiny" else (24, 9, 32)
    drafted = 0
    for prompt, n in zip(prompts, lengths):
        want = generate(plain, prompt, n)
        st = Stats()
        assert generate(mtp, prompt, n, stats=st) == want
        drafted += sum(st.offered)
    assert drafted > 0, "no draft was ever verified: the comparison proved nothing"
    mtp.close()


@pytest.mark.parametrize("tree", ["quadratic:2", "auto"])
def test_multi_turn_reuses_cache_and_stays_exact(engines, tree):
    path, plain, kind = engines
    mtp = Engine(path, tree=tree, n_ctx=1024, calibration=FLAT)
    first = tiny_prompts(plain.model.n_vocab)[1] if kind == "tiny" else smol_prompts(plain.model)[0]
    a1 = generate(plain, first, 24)
    assert generate(mtp, first, 24) == a1
    second = first + a1 + (first[:4] if kind == "tiny" else plain.model.tokenize(
        "<|im_end|>\n<|im_start|>user\nNow do it in C.<|im_end|>\n<|im_start|>assistant\n", parse_special=True))
    st = Stats()
    a2 = generate(mtp, second, 24, stats=st)
    plain.reset()
    assert a2 == generate(plain, second, 24)
    assert st.prompt_cached >= len(first) + len(a1) - 1
    mtp.close()


@pytest.mark.parametrize("tree", ["quadratic:3", "linear:2", "lookup:4"])
def test_native_verification_equals_python_reference(engines, tree):
    """llama_mtp_verify_greedy (C) and step.verify_reference (Python) accept the same drafts, give
    the same bonus tokens and leave the same cache, step by step."""
    path, plain, kind = engines
    runs = {}
    for native in (True, False):
        eng = Engine(path, tree=tree, n_ctx=1024, native=native)
        steps = spy_steps(eng)
        prompt = tiny_prompts(eng.model.n_vocab)[2] if kind == "tiny" else smol_prompts(eng.model)[0]
        runs[native] = (generate(eng, prompt, 24), steps)
        eng.close()
    assert runs[True] == runs[False]


def test_native_step_does_not_depend_on_the_thread_count(smol_path):
    """The C step splits argmaxes and the head's rows over the context's threads (OpenMP). On the
    default model, whose drafts get accepted, with 1 and 3 threads (5 chain rows: a group of 3,
    then 2, and walks that go on past a group) every step equals the Python reference's."""
    from mtpchat.chat import ChatFormat
    from mtpchat.models import default_model_path

    runs = {}
    for native, threads in ((False, 1), (True, 1), (True, 3)):
        eng = Engine(default_model_path(), tree="quadratic:4", n_ctx=1024, native=native, n_threads=threads)
        steps = spy_steps(eng)
        prompt = ChatFormat(eng.model).tokens([{"role": "user", "content": "Count from 1 to 30, separated by commas."}])
        runs[native, threads] = (generate(eng, prompt, 32), steps)
        eng.close()
    assert runs[True, 1] == runs[False, 1] and runs[True, 3] == runs[False, 1]
    assert max(s[1] for s in runs[False, 1][1]) >= 3   # some step accepted past the first group


@pytest.mark.parametrize("model,tree,draft_head", [("tiny", "quadratic:3", "sampler"), ("default", "quadratic:4", "sampler"),
                                                   ("default", "quadratic:2", "plain")])
def test_step_in_the_graph_equals_the_step_on_the_host(model, tree, draft_head, request):
    """llama_mtp_step verifies and drafts inside its pass's graph (argmaxes, top-k and the head as
    ggml ops; only ids leave the backend) or on the host from the pass's logits: the same steps,
    drafts included. After a graph step the pass's hidden states were never read out, after a
    host step they were: so each side really took its own path."""
    from mtpchat.chat import ChatFormat
    from mtpchat.models import default_model_path

    path = request.getfixturevalue("tiny_mtp") if model == "tiny" else default_model_path()
    runs = {}
    for in_graph in (True, False):
        eng = Engine(path, tree=tree, n_ctx=1024, draft_head=draft_head, graph_head=in_graph)
        steps = spy_steps(eng)
        prompt = (tiny_prompts(eng.model.n_vocab)[2] if model == "tiny" else
                  ChatFormat(eng.model).tokens([{"role": "user", "content": "Count from 1 to 30, separated by commas."}]))
        runs[in_graph] = (generate(eng, prompt, 32), steps)
        if in_graph:
            with pytest.raises(B.LlamaError, match="no hidden states"):
                eng.ctx.hidden(1)
        else:
            assert eng.ctx.hidden(1).shape == (1, eng.model.n_embd)
        eng.close()
    assert runs[True] == runs[False]
    assert all(s[2] for s in runs[True][1]), "a step made no drafts: the drafts were not compared"
    if model == "default":   # the trained adapter's drafts get accepted: verification compared too
        assert sum(s[1] for s in runs[True][1]) > 0


def test_a_step_graph_is_reused_only_for_its_own_head():
    """Steps of one tree reuse their graph, head included. Two heads (the sampler head, and the top
    mask logit alone) take turns on one context, with no other pass in between: each must draft
    what it drafts on the host, so a graph built for one head never runs for the other."""
    from mtpchat.chat import ChatFormat
    from mtpchat.models import default_model_path

    rig = StepRig(default_model_path())
    ctx, m, head = rig.ctx, rig.info.n_masks, rig.step.head
    heads = {"sampler": rig.step.c_head, "top": B.MtpHead(head.g, head.s, head.eps, shortlist=1)}
    prompt = ChatFormat(rig.model).tokens([{"role": "user", "content": "Name three rivers in Europe."}])
    rig.prefill(prompt[:-1])
    p0 = len(prompt) - 1

    def step(name):
        new, _, drafts, _ = ctx.mtp_step(heads[name], [prompt[-1]], (0,), rig.info.mask_ids, m, p0)
        ctx.seq_rm(0, p0, -1)   # back to the prompt, without a pass in between
        return new, drafts

    ctx.set_graph_head(False)
    want = {name: step(name) for name in heads}
    assert want["sampler"][1] != want["top"][1], "both heads draft alike here: the check is blind"
    ctx.set_graph_head(True)
    for name in ("sampler", "top", "top", "sampler"):
        assert step(name) == want[name], name
    heads["top"].close()
    rig.step.close()
    rig.close()


def test_cache_holds_exactly_the_accepted_tokens(tiny_mtp):
    """After every step: seq 0 ends at the last accepted token, no block sequence is left, and the
    cached keys/values equal those of a plain evaluation of the same tokens."""
    rig = StepRig(tiny_mtp)
    ref = B.Context(rig.model, n_ctx=512, n_batch=512)
    prompt = tiny_prompts(rig.model.n_vocab)[2]
    rig.prefill(prompt[:-1])
    t0, drafts = prompt[-1], []
    rng = np.random.default_rng(0)
    ctx, hist = rig.ctx, rig.history
    for step in range(12):
        tree = P.quadratic(3) if drafts else P.masks_only(3)
        res = rig.step.run(hist, t0, drafts, tree, GREEDY, rng)
        t0, drafts = res.new[-1], res.next_drafts
        assert ctx.seq_pos_max(0) == len(hist) - 1
        for s in range(1, ctx.n_seq_max):
            assert ctx.seq_pos_max(s) == -1
        # the native step took ids from its pass's graph and left the logits unread: reading
        # the context's copy is an error, not last step's numbers
        with pytest.raises(B.LlamaError, match="no logits"):
            ctx.logits(1)
        # contents: the next token's logits on top of this cache equal a fresh plain evaluation
        ctx.set_embeddings(False)
        n = ctx.decode([t0], [len(hist)], outputs=[1])
        got = ctx.logits(n)[0].copy()
        ctx.seq_rm(0, len(hist), -1)
        ref.clear()
        n = ref.decode(hist + [t0], list(range(len(hist) + 1)))
        # F32 matmuls take other kernels at other batch sizes (2e-4 apart on AVX-512), so the
        # bound is 1e-3; a cache one token off must miss it by far (checked below)
        assert np.abs(ref.logits(n)[0] - got).max() < 1e-3, f"step {step}"
        ref.clear()
        n = ref.decode(hist[:-2] + [hist[-1], t0], list(range(len(hist))))
        assert np.abs(ref.logits(n)[0] - got).max() > 1e-2, f"step {step}: the check cannot tell a wrong cache"
    ref.close()
    rig.close()


def test_statistics_add_up(smol_mtp):
    eng = Engine(smol_mtp, tree="quadratic:2", n_ctx=1024)
    steps = spy_steps(eng)
    st = Stats()
    prompt = smol_prompts(eng.model)[1]
    ids = generate(eng, prompt, 1000, stats=st)
    # the first call is the prompt pass: the whole prompt and a masks-only tree in one pass, which
    # makes the first token; it counts as prompt processing, not as a generation step
    assert steps[0][3] == 0 and steps[0][4] == len(prompt) - 1 and len(steps[0][0]) == 1
    assert st.steps == len(steps) - 1 and st.first_tokens == 1
    # every step yields its accepted drafts plus one bonus token; the run ends at an EOG token
    assert st.tokens == sum(s[1] + 1 for s in steps) == len(ids) + 1
    assert sum(st.by_source.values()) == sum(s[1] for s in steps) == int(st.accepted[0]) + int(st.accepted[1])
    assert st.tau == pytest.approx((st.tokens - 1) / st.steps)
    eng.close()


def test_sampler_head_shortlist_matches_full_vocabulary(tiny_mtp):
    """With a shortlist as large as the vocabulary the head equals the full projection."""
    eng = Engine(tiny_mtp, tree="quadratic:3", n_ctx=256)
    head = eng.stepper.head
    g = head.g
    rng = np.random.default_rng(3)
    V = eng.model.n_vocab
    z = rng.standard_normal((3, eng.model.n_embd)).astype(np.float32)
    W = g.rows(head.unembd, np.arange(V))
    mask_logits = z @ W.T
    head.shortlist = V - len(eng.banned) - 1
    prev, want = 42, []
    for j in range(3):
        out = z[j] + head.delta(prev, z[j])
        scores = W @ out
        scores[eng.banned] = -np.inf
        prev = int(np.argmax(scores))
        want.append(prev)
    assert head.draft(42, z, mask_logits, 3, eng.banned) == want
    eng.close()


@pytest.mark.parametrize("model", ["tiny_mtp", "smol_mtp"])
def test_native_sampler_head_drafts_what_the_numpy_head_drafts(model, request):
    """llama_mtp_draft (the head in C, rows dequantised in C) against SamplerHead (numpy, rows
    dequantised by gguf) on the same mask rows, for many previous tokens. The negative control:
    the top mask logit alone (shortlist 1) drafts differently, so a C head that ignored its MLP
    would fail."""
    rig = StepRig(request.getfixturevalue(model))
    ctx, m, head = rig.ctx, rig.info.n_masks, rig.step.head
    top_logit = B.MtpHead(head.g, head.s, head.eps, shortlist=1)
    rng = np.random.default_rng(11)
    V = rig.model.n_vocab
    same = differs = total = 0
    for n_prompt in (4, 12, 30):
        prompt = [int(t) for t in rng.integers(5, V - 8, size=n_prompt)]
        ctx.clear()
        ctx.set_embeddings(True)
        n = ctx.decode(prompt + rig.info.mask_ids[:m], list(range(n_prompt + m)), outputs=[1] * (n_prompt + m))
        z, logits = ctx.hidden(n)[n_prompt:].copy(), ctx.logits(n)[n_prompt:].copy()
        for prev in rng.integers(5, V - 8, size=20):
            want = head.draft(int(prev), z, logits, m, rig.step.banned)
            got = ctx.mtp_draft(rig.step.c_head, n_prompt, m, int(prev))
            same += got == want
            differs += ctx.mtp_draft(top_logit, n_prompt, m, int(prev)) != want
            total += 1
    # float32 sums in another order may flip an exact near-tie; none is expected in 60 cases
    assert same == total
    # the head changes 3 of 60 drafts on the tiny model's random weights, 60 of 60 on SmolLM2
    assert differs > 0, "the head changed no draft: the check is blind"
    top_logit.close()
    rig.step.close()
    rig.close()


def test_q8_0_round_keeps_32_int8_steps_per_block():
    """The numpy head keeps fc1/fc2 in the precision of the C head (Q8_0: per 32 weights one
    float16 scale, amax / 127): every value is an integer multiple of its block's scale, the
    largest magnitude survives, and rows of other blocks do not share a scale."""
    from mtpchat.sampler_head import q8_0_round
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 64)).astype(np.float32)
    x[1, 32:] *= 1000
    got = q8_0_round(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    for r in range(4):
        for b in range(2):
            blk, orig = got[r, 32 * b:32 * b + 32], x[r, 32 * b:32 * b + 32]
            d32 = np.float32(np.abs(orig).max() / np.float32(127))
            d = np.float32(np.float16(d32))   # the scale is stored as float16
            steps = blk / d
            assert np.allclose(steps, np.round(steps), atol=1e-3) and np.abs(steps).max() <= 127.5
            # rounding to a step of the float32 scale, then the float16 scale's own error per step
            assert np.abs(blk - orig).max() <= 0.5 * d32 * (1 + 1e-5) + 127 * abs(d32 - d)
    assert not np.array_equal(got, x)


def test_native_sampler_head_refuses_bad_matrices(tiny_mtp):
    """The C head reads the embedding matrices in place: their size is checked against the type."""
    rig = StepRig(tiny_mtp)
    head = rig.step.head
    short_bias = dict(head.s, **{"fc1.bias": np.zeros(3, np.float32)})
    with pytest.raises(B.LlamaError):
        B.MtpHead(head.g, short_bias, head.eps, shortlist=8)
    emb = head.g.tensors["token_embd.weight"]
    with pytest.raises(B.LlamaError):
        B.MtpHead(head.g, head.s, float("nan"), shortlist=8)
    with pytest.raises(B.LlamaError):
        B.MtpHead(head.g, head.s, head.eps, shortlist=0)
    emb.nbytes -= 1
    try:
        with pytest.raises(B.LlamaError):
            B.MtpHead(head.g, head.s, head.eps, shortlist=8)
    finally:
        emb.nbytes += 1
    rig.step.close()
    rig.close()


def _chi2_crit(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.09: significance 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("model", ["tiny_mtp", "smol_mtp"])
def test_top_k_candidates_give_the_whole_row_distribution(model, request):
    """Sampling reads each row's top-k from llama_mtp_top_k (C) instead of numpy over the whole
    vocabulary: the same tokens with the same probabilities, for llama-cli's defaults and others.
    The mask ids stay excluded, as in the reference."""
    from mtpchat.sampling import candidate_distribution, candidates_suffice, distribution

    rig = StepRig(request.getfixturevalue(model))
    ctx, V = rig.ctx, rig.model.n_vocab
    prompt = tiny_prompts(V)[2] if model == "tiny_mtp" else smol_prompts(rig.model)[1]
    ctx.set_embeddings(False)
    n = ctx.decode(prompt + rig.info.mask_ids[:2], list(range(len(prompt) + 2)), outputs=[1] * (len(prompt) + 2))
    logits = ctx.logits(n).copy()
    for params in (SamplingParams(), SamplingParams(temperature=1.5, top_k=256, top_p=1.0, min_p=0.0),
                   SamplingParams(temperature=0.3, top_k=3, top_p=0.5, min_p=0.2)):
        assert candidates_suffice(params)
        ids, vals = ctx.top_k(n, params.top_k)
        for row in range(n):
            want = dict(zip(*map(list, distribution(logits[row], [], params, rig.step.banned))))
            got = dict(zip(*map(list, candidate_distribution(ids[row], vals[row], params))))
            assert set(got) == set(want) and not set(got) & set(rig.info.mask_ids), (params, row)
            assert all(abs(got[t] - want[t]) < 1e-12 for t in want), (params, row)
    # a repeat penalty can lift a token into the top-k: then the whole row is needed
    assert not candidates_suffice(SamplingParams(repeat_penalty=1.1))
    rig.step.close()
    rig.close()


@pytest.mark.parametrize("native", [False, True])
def test_speculative_sampling_keeps_the_distribution(tiny_mtp, native):
    """Joint distribution of tokens 2-4 over seeded runs: MTP sampling vs plain sampling,
    chi-square homogeneity test at a fixed significance (deterministic seeds: no flakiness).
    MTP verifies in Python over whole rows (the reference) or from the C top-k candidates; plain
    sampling takes the candidates.

    A random adapter's drafts are almost never in the top 3, which would leave the accept /
    residual path untested; so the sampler head's drafts are replaced by likely ones (the greedy
    continuation). Verification must keep the distribution whatever the drafts are."""
    params = dict(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0)
    plain = Engine(tiny_mtp, mtp=False, n_ctx=256)
    mtp = Engine(tiny_mtp, tree="quadratic:2", n_ctx=256, native=native)
    mtp.stepper.close()
    mtp.stepper.c_head = None   # the drafts come from the Python head, replaced below
    oracle = Engine(tiny_mtp, mtp=False, n_ctx=256)

    committed = {}
    real_run = mtp.stepper.run

    def remember_history(history, *a, **kw):
        committed["tokens"] = history  # the step appends the accepted tokens before drafting
        return real_run(history, *a, **kw)

    def likely_drafts(prev, z, mask_logits, n, banned):
        oracle.reset()
        return [t.id for t in oracle.generate(committed["tokens"] + [prev], GREEDY, max_tokens=n)]

    mtp.stepper.head.draft = likely_drafts
    mtp.stepper.run = remember_history
    prompt = tiny_prompts(plain.model.n_vocab)[0]
    counts = {"plain": Counter(), "mtp": Counter()}
    accepted = 0
    runs = 600
    for seed in range(runs):
        sp = SamplingParams(seed=seed, **params)
        counts["plain"][tuple(generate(plain, prompt, 4, sp)[1:4])] += 1
        st = Stats()
        counts["mtp"][tuple(generate(mtp, prompt, 4, SamplingParams(seed=10_000 + seed, **params), stats=st)[1:4])] += 1
        accepted += sum(st.by_source.values())
    assert accepted > runs // 4, "drafts were rarely accepted: the test would not exercise speculation"
    # pool rare outcomes so every cell has a usable expected count
    keys = sorted(set(counts["plain"]) | set(counts["mtp"]), key=lambda k: -(counts["plain"][k] + counts["mtp"][k]))
    cells, rest = [], [0, 0]
    for k in keys:
        a, b = counts["plain"][k], counts["mtp"][k]
        if a + b >= 10:
            cells.append((a, b))
        else:
            rest[0] += a
            rest[1] += b
    if sum(rest):
        cells.append(tuple(rest))
    table = np.array(cells, dtype=np.float64)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    df = len(cells) - 1
    assert df >= 5
    assert chi2 < _chi2_crit(df), f"chi2 {chi2:.1f} with {df} degrees of freedom"
    for e in (plain, mtp, oracle):
        e.close()


def test_prompt_longer_than_context_is_a_clean_error(tiny_mtp):
    eng = Engine(tiny_mtp, n_ctx=64)
    with pytest.raises(B.LlamaError, match="does not fit"):
        list(eng.generate([10 + i % 300 for i in range(eng.ctx.n_ctx + 5)], GREEDY, max_tokens=4))
    eng.close()


def test_stop_strings_end_the_answer_and_are_not_printed(smol_mtp):
    eng = Engine(smol_mtp, tree="quadratic:2", n_ctx=1024)
    prompt = smol_prompts(eng.model)[1]
    full = "".join(t.text for t in eng.generate(prompt, GREEDY, max_tokens=48))
    words = full.split()
    assert len(words) > 3
    stop = words[2]
    cut = "".join(t.text for t in eng.generate(prompt, GREEDY, max_tokens=48, stop=(stop, "@@never@@")))
    assert cut == full[:full.index(stop)]
    eng.close()


def test_logits_do_not_depend_on_the_pass_size(smol_path):
    """With the CPU backend's reference kernels (what Engine sets on the CPU), a row's logits are
    the same whatever its pass holds (Q4_1 here): ggml-cpu would otherwise tile the attention of
    passes of 64 rows or more, and split the KV of one-row passes over 512 cells, each rounding
    its own way."""
    model = B.Model(smol_path)
    toks = model.tokenize(" the quick brown fox jumps over the lazy dog and runs far away" * 60)[:530]

    def rows(sizes):
        ctx = B.Context(model, n_ctx=1024, n_batch=512, n_seq_max=2)
        assert ctx.set_batch_invariant(True)
        out, p = [], 0
        for n in sizes:
            k = ctx.decode(toks[p:p + n], list(range(p, p + n)), outputs=[1] * n)
            out.append(np.array(ctx.logits(k)))
            p += n
        ctx.close()
        return np.concatenate(out)

    one_by_one = rows([1] * 100)
    assert np.array_equal(rows([100]), one_by_one)         # a 100-row pass: no tiling
    assert np.array_equal(rows([63, 25, 12]), one_by_one)
    # past 512 cells: one-row passes against a 4-row pass over the same history
    assert np.array_equal(rows([512, 1, 1, 1, 1])[512:], rows([512, 4])[512:])
    model.close()


def test_greedy_mtp_equals_plain_across_the_kernel_thresholds(smol_mtp):
    """A prompt whose first pass with a tree crosses 64 rows while plain decoding's does not, and
    a context past 512 cells: the sizes at which ggml-cpu's attention changes kernels."""
    plain = Engine(smol_mtp, mtp=False, n_ctx=1024)
    mtp = Engine(smol_mtp, tree="quadratic:3", n_ctx=1024)
    story = " ".join(f"On day {i} the shop sold {3 * i + 1} pencils and {i % 7} pens." for i in range(40))
    for text, n_new in (("Explain step by step how to compute the average of 4, 8, 15, 16, 23 and 42, then check the "
                         "result by multiplying it back, and say in one sentence why the check works.", 48),
                        (story + " Summarise the sales in two sentences.", 32)):
        prompt = plain.model.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n", parse_special=True)
        plain.reset()
        mtp.reset()
        st = Stats()
        assert generate(mtp, prompt, n_new, stats=st) == generate(plain, prompt, n_new)
        assert sum(st.offered) > 0
    plain.close()
    mtp.close()
