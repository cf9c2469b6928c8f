"""The tree policy is a pure function of (cost table, acceptance): injected numbers only."""
import numpy as np
import pytest

from mtpchat import policy as P
from mtpchat.lookup import lookup_drafts
from mtpchat.sampling import SamplingParams, accept_draft, distribution

# docs/DESIGN.md §4.1, Q4_0 on the 2-core CPU (time of a pass / time of one token)
CPU_Q4_0 = {1: 1.0, 4: 1.93, 8: 3.12, 16: 4.79}
# a GPU: a 32-token pass costs 1.1x one token (larger passes extrapolated linearly)
GPU = {1: 1.0, 2: 1.0, 4: 1.01, 8: 1.02, 16: 1.05, 32: 1.1}


def test_cpu_table_with_prototype_acceptance_decodes_plainly():
    alpha = [0.57, 0.45, 0.4, 0.35]
    assert P.choose(CPU_Q4_0, alpha, k_max=4).tree == P.PLAIN


def test_cpu_table_with_paper_acceptance_speculates_a_little():
    c = P.choose(CPU_Q4_0, [0.86, 0.8, 0.75, 0.7], k_max=4)
    assert c.tree != P.PLAIN and c.tree.n_tokens <= 4
    assert 1.03 <= c.rate <= 1.3


@pytest.mark.parametrize("alpha", [[0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5], [0.9] * 8, [0.6, 0.5, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3]])
def test_gpu_table_builds_deep_trees_near_the_best(alpha):
    c = P.choose(GPU, alpha, k_max=8)
    best_tps = max(P.tree_rate(t, alpha, GPU)[1] for t in P.candidates(8))
    assert c.tree.n_drafts >= 3
    assert c.tokens_per_step >= 0.9 * best_tps
    assert c.rate == pytest.approx(P.best_fixed_rate(GPU, alpha, 8))


def test_end_probabilities_sum_to_one():
    p = P.end_probs([0.7, 0.5, 0.2], 3)
    assert sum(p) == pytest.approx(1.0)
    assert p[0] == pytest.approx(0.3) and p[3] == pytest.approx(0.07)


def test_tree_rate_of_full_quadratic_tree():
    # every node has a block, so drafts are always ready: rate = (1 + E[accepted]) / cost
    t = P.quadratic(2)
    rate, tps = P.tree_rate(t, [0.5, 0.5], {1: 1.0, 9: 2.0, 16: 3.0})
    assert tps == pytest.approx(1 + 0.5 + 0.25)
    assert rate == pytest.approx(1.75 / 2.0)


def test_acceptance_is_conditional_per_depth():
    a = P.Acceptance(3, prior=0.5, weight=0.5)
    a.update(3, 1)  # first accepted, second rejected, third never reached
    assert a.alpha == [0.75, 0.25, 0.5]
    assert a.offered == [1, 1, 0]


def test_cost_interpolates_and_extrapolates():
    assert P.cost({1: 1.0, 8: 3.0}, 4) == pytest.approx(1 + 2 * 3 / 7)
    assert P.cost({1: 1.0, 8: 3.0}, 16) == pytest.approx(3 + 2 / 7 * 8)


def test_lookup_drafts_follow_the_latest_match():
    h = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert lookup_drafts(h, 3) == [7, 8, 5]
    assert lookup_drafts([1, 2, 3, 4], 3) == []


def test_residual_sampling_is_exact_for_a_deterministic_draft():
    """P(token) under accept/reject with a one-hot draft equals the target p, for any draft."""
    ids = np.array([4, 7, 9])
    p = np.array([0.5, 0.3, 0.2])
    rng = np.random.default_rng(0)
    for draft in (4, 9, 11):
        counts = {4: 0, 7: 0, 9: 0}
        for _ in range(20000):
            counts[accept_draft(ids, p, draft, rng)[1]] += 1
        assert [counts[i] / 20000 for i in ids] == pytest.approx(p.tolist(), abs=0.015)


def test_distribution_filters_in_llama_cpp_order():
    logits = np.log(np.array([0.5, 0.25, 0.15, 0.1], dtype=np.float32))
    ids, p = distribution(logits, [], SamplingParams(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0), [])
    assert ids.tolist() == [0, 1, 2] and p == pytest.approx([0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9])
    ids, _ = distribution(logits, [], SamplingParams(temperature=1.0, top_k=0, top_p=0.7, min_p=0.0), [])
    assert ids.tolist() == [0, 1]
    ids, _ = distribution(logits, [], SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.4), [3])
    assert ids.tolist() == [0, 1]


def test_shape_changes_are_charged():
    """A linear tree loses its drafts whenever one is rejected and alternates with masks-only
    steps: with an expensive graph rebuild per shape change, the policy must see that."""
    alpha = [0.6]
    cheap = {**CPU_Q4_0, 2: 1.3, 3: 1.5}
    paid = {**cheap, P.REBUILD: 1.0}
    assert P.tree_rate(P.linear(1), alpha, paid)[0] < P.tree_rate(P.linear(1), alpha, cheap)[0]
    # a full quadratic tree keeps its shape: no charge
    assert P.tree_rate(P.quadratic(1), alpha, paid) == P.tree_rate(P.quadratic(1), alpha, cheap)


def test_planner_drops_a_tree_measured_slower_than_plain():
    """The table says trees are nearly free (a GPU); the machine disagrees while running."""
    from mtpchat.planner import SHAPE_MIN_TOKENS, Planner

    pl = Planner("auto", 0, n_masks=4, costs=lambda: GPU)
    pl.acc["mtp"].alpha[:] = [0.8] * pl.acc["mtp"].depth
    pl.start()
    tree, source = pl.choose([1, 2, 3, 4], [])
    assert source == "mtp" and tree != P.PLAIN
    first = pl.plan.tree
    # the tree delivers 2 tokens a step at 10 time units a step: 0.2 tokens per unit, while the
    # table's plain pass (1 unit) makes 1
    made = 0
    while made < SHAPE_MIN_TOKENS:
        pl.record("mtp", 4, 1, [7, 8], [1, 2, 3, 4], seconds=10.0)
        made += 2
        if first in pl.dropped:
            break
        pl.choose([1, 2, 3, 4], [])
    assert first in pl.dropped
    pl.choose([1, 2, 3, 4], [])
    assert pl.plan.tree != first
    # a tree measured faster than plain stays
    ok = Planner("auto", 0, n_masks=4, costs=lambda: GPU)
    ok.acc["mtp"].alpha[:] = [0.8] * ok.acc["mtp"].depth
    ok.choose([1, 2, 3, 4], [])
    for _ in range(SHAPE_MIN_TOKENS):
        ok.record("mtp", 4, 3, [5, 6, 7, 8], [1, 2, 3, 4], seconds=1.1)
        ok.choose([1, 2, 3, 4], [])
    assert not ok.dropped


def test_cost_interpolates_as_numpy_and_choose_remembers_only_equal_inputs():
    import numpy as np

    table = {1: 1.0, 2: 1.3, 4: 1.9, 8: 3.1, 16: 5.0}
    xs = sorted(table)
    for n in range(1, 17):
        assert P.cost(table, n) == pytest.approx(float(np.interp(n, xs, [table[x] for x in xs])), rel=1e-12)
    cheap = {1: 1.0, 2: 1.01, 4: 1.02, 8: 1.05, 16: 1.1, 32: 1.3}
    a = P.choose(cheap, [0.9] * 4, k_max=4)
    assert a.tree != P.PLAIN and P.choose(dict(cheap), [0.9] * 4, k_max=4) is a   # same inputs: remembered
    assert P.choose(cheap, [0.01] * 4, k_max=4).tree == P.PLAIN                      # other acceptance
    assert P.choose(cheap, [0.9] * 4, k_max=4, exclude={a.tree}).tree != a.tree       # other exclusions
