"""Which tree to verify next: a pure function of the machine's cost table and the running
acceptance statistics, so that it is tested with injected numbers, never with live timings.

A tree is a chain [t0, d1..dn] (t0 the token to commit, d the drafts) plus a block of m mask
tokens after some chain nodes. The block after the last accepted node yields the next step's
drafts; when that node has no block, the next step has no drafts and must be a masks-only step
[t0, m1..mm] (1 token, then drafts again). The expected rate of a tree is therefore the
stationary rate of that two-state chain.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache


@dataclass(frozen=True)
class Tree:
    n_drafts: int                        # drafts verified in the chain
    blocks: tuple[int, ...] = ()         # chain nodes (0 = t0) followed by a mask block
    n_masks: int = 0                     # masks per block

    @property
    def n_tokens(self) -> int:
        return 1 + self.n_drafts + len(self.blocks) * self.n_masks

    def blocks_reached(self, n: int) -> tuple[int, ...]:
        """The blocks a chain of n drafts (n <= n_drafts: fewer drafts than the tree holds)
        still reaches."""
        return self.blocks if n == self.n_drafts else tuple(b for b in self.blocks if b <= n)

    @cached_property   # asked after every step, for the statistics
    def name(self) -> str:
        if not self.blocks and not self.n_drafts:
            return "plain"
        if not self.blocks:
            return f"chain:{self.n_drafts}"
        if self.blocks == tuple(range(self.n_drafts + 1)):
            return f"quadratic:{self.n_drafts}x{self.n_masks}"
        if self.blocks == (self.n_drafts,):
            return f"linear:{self.n_drafts}x{self.n_masks}"
        return f"tree:{self.n_drafts}/{','.join(map(str, self.blocks))}x{self.n_masks}"


PLAIN = Tree(0)


@cache   # the same object every step, so its cached name is reused
def quadratic(k: int) -> Tree:
    return Tree(k, tuple(range(k + 1)), k)


@cache
def linear(k: int) -> Tree:
    return Tree(k, (k,), k)


@cache
def masks_only(m: int) -> Tree:
    """[t0, m1..mm]: no drafts to verify, a block to make the next step's drafts."""
    return Tree(0, (0,), m)


@dataclass(frozen=True)
class Choice:
    tree: Tree
    rate: float            # expected tokens per unit time (unit: a 1-token pass)
    tokens_per_step: float


REBUILD = 0  # key of the cost table holding the time to build a graph for a new batch shape


def cost(table: dict[int, float], n: int) -> float:
    """Time of a pass of n tokens, linearly interpolated in the calibrated table."""
    xs = sorted(x for x in table if x >= 1)
    if n <= xs[0]:
        return table[xs[0]] * n / xs[0] if xs[0] > 1 else table[xs[0]]
    if n >= xs[-1]:
        a, b = xs[-2], xs[-1]
        return table[b] + (table[b] - table[a]) / (b - a) * (n - b)
    # np.interp's formula, in plain floats: the planner asks this for every candidate tree
    j = bisect.bisect_right(xs, n) - 1
    a, b = xs[j], xs[j + 1]
    return (table[b] - table[a]) / (b - a) * (n - a) + table[a]


def end_probs(alpha, n: int) -> list[float]:
    """P(exactly a drafts accepted), a = 0..n, with alpha[i] = P(draft i+1 accepted | earlier ones)."""
    p = [0.0] * (n + 1)
    reach = 1.0
    for a in range(n):
        p[a] = reach * (1.0 - alpha[a])
        reach *= alpha[a]
    p[n] = reach
    return p


def tree_rate(tree: Tree, alpha, table: dict[int, float]) -> tuple[float, float]:
    """(tokens per unit time, tokens per step) of running `tree` whenever drafts exist."""
    n, m = tree.n_drafts, tree.n_masks
    pa = end_probs(alpha, n)
    tokens = 1.0 + sum(a * q for a, q in enumerate(pa))
    c_tree = cost(table, tree.n_tokens)
    p_keep = sum(pa[a] for a in tree.blocks if a <= n)
    if not tree.blocks or m == 0:
        return tokens / c_tree, tokens
    # two states: D (drafts ready) runs the tree, N (none) runs [t0, m1..mm]. Every change of
    # state changes the batch shape, and llama.cpp then builds a new graph (2 pi_n per step).
    c_masks = cost(table, 1 + m)
    pi_d = 1.0 / (1.0 + (1.0 - p_keep))
    pi_n = 1.0 - pi_d
    tok = pi_d * tokens + pi_n
    rebuilds = 2 * pi_n * table.get(REBUILD, 0.0)
    return tok / (pi_d * c_tree + pi_n * c_masks + rebuilds), tok / (pi_d + pi_n)


def candidates(n_max: int):
    """Trees with n drafts and n masks per block (fewer masks would starve the next step, more
    would only cost): blocks on the first b chain nodes, and optionally on the last one."""
    for n in range(1, n_max + 1):
        yield Tree(n, (n,), n)
        for b in range(1, n + 2):
            blocks = tuple(range(b))
            yield Tree(n, blocks, n)
            if b < n:
                yield Tree(n, blocks + (n,), n)


@dataclass
class Acceptance:
    """Running acceptance per draft depth: alpha[i] = P(draft i+1 accepted | drafts 1..i were)."""
    depth: int
    prior: float = 0.5
    weight: float = 0.05
    # plain lists: updated after every step, where numpy's per-element overhead showed up in the
    # host time of a step
    alpha: list[float] = field(init=False)
    offered: list[int] = field(init=False)
    accepted: list[int] = field(init=False)

    def __post_init__(self):
        self.alpha = [self.prior] * self.depth
        self.offered = [0] * self.depth
        self.accepted = [0] * self.depth

    def update(self, n_offered: int, n_accepted: int) -> None:
        """One verification: drafts 1..n_accepted accepted, the next one (if offered) rejected."""
        for i in range(min(n_offered, self.depth)):
            hit = i < n_accepted
            self.offered[i] += 1
            self.accepted[i] += hit
            self.alpha[i] += self.weight * (hit - self.alpha[i])
            if not hit:
                break


def choose(table: dict[int, float], alpha, *, k_max: int, n_max: int | None = None,
           margin: float = 1.03, chain_only: bool = False, exclude=frozenset()) -> Choice:
    """The tree with the best expected rate; plain decoding unless a tree beats it by `margin`.
    chain_only: drafts that need no mask blocks (prompt lookup). exclude: trees not to choose
    (measured slower than plain decoding while running)."""
    # remembered: while decoding plainly the inputs rarely change between re-plans, and scoring
    # every candidate cost ≈ 0.1 ms a step in `auto`
    return _choose(tuple(sorted(table.items())), tuple(alpha), k_max, n_max, margin, chain_only,
                   frozenset(exclude))


@lru_cache(maxsize=256)
def _choose(items, alpha, k_max, n_max, margin, chain_only, exclude) -> Choice:
    table = dict(items)
    n_max = k_max if n_max is None else n_max
    plain = Choice(PLAIN, 1.0 / cost(table, 1), 1.0)
    best = plain
    n = min(k_max, n_max, len(alpha))
    trees = (Tree(i) for i in range(1, n + 1)) if chain_only else candidates(n)
    for tree in trees:
        if tree in exclude:
            continue
        rate, tps = tree_rate(tree, alpha, table)
        if rate > best.rate:
            best = Choice(tree, rate, tps)
    if best.tree != PLAIN and best.rate < margin * plain.rate:
        return plain
    return best


def best_fixed_rate(table, alpha, k_max: int) -> float:
    """Exhaustive reference for tests: the best rate over every candidate tree."""
    return max([1.0 / cost(table, 1)] + [tree_rate(t, alpha, table)[0] for t in candidates(min(k_max, len(alpha)))])
