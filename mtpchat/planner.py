"""Which tree the next step runs, and from which draft source: the stateful side of the tree
policy (policy.py holds the pure functions). The planner owns the current plan, the running
acceptance per source, the probes that keep acceptance measured while decoding plainly, and the
shadow drafts: drafts that were not verified (a probe's, a lookup not chosen), scored against
the tokens that followed for free."""
from __future__ import annotations

from typing import Callable

from . import policy as P
from .drafts import LOOKUP_MAX

REPLAN_EVERY = 8                # steps between re-plans from the running acceptance
PROBE_MIN, PROBE_MAX = 32, 512  # steps between acceptance probes while decoding plainly
BEST_CASE_ACCEPTANCE = 0.95     # "could any tree pay on this machine?" is asked at this acceptance
MIN_ACCEPTANCE_DEPTH = 8        # depths tracked per source (prompt lookup drafts up to LOOKUP_MAX)
SHAPE_MIN_TOKENS = 64           # tokens a plan must produce before its measured speed is judged


def parse_tree(spec: str) -> tuple[str, int]:
    """'auto' | 'plain' | 'linear:K' | 'quadratic:K' | 'lookup:K' -> (kind, K)."""
    kind, _, k = spec.partition(":")
    if kind in ("auto", "plain") and not k:
        return kind, 0
    if kind in ("linear", "quadratic", "lookup") and k.isascii() and k.isdigit() and int(k) >= 1:
        return kind, int(k)
    raise ValueError(f"unknown tree '{spec}' (auto, plain, linear:K, quadratic:K, lookup:K)")


class Planner:
    def __init__(self, kind: str, k_fixed: int, *, n_masks: int, costs: Callable[[], dict[int, float]]):
        self.kind, self.k_fixed, self.k = kind, k_fixed, n_masks
        self.mtp = n_masks > 0
        self.costs = costs
        depth = max(n_masks, MIN_ACCEPTANCE_DEPTH, LOOKUP_MAX)
        self.acc = {s: P.Acceptance(depth) for s in ("mtp", "lookup")}
        self.plan: P.Choice | None = None
        self.plan_lookup: P.Choice | None = None
        self._since_plan = 0
        self._since_probe = 0
        self._probe_every = PROBE_MIN
        self._mtp_can_pay: bool | None = None
        self._shadow: dict[str, tuple[list[int], int]] = {}   # source -> (unverified drafts, hits)
        # what each plan really delivered while running: tree -> [seconds, tokens]; plans slower
        # than plain decoding are dropped, whatever the cost table predicted
        self.measured: dict[P.Tree, list] = {}
        self.dropped: set[P.Tree] = set()
        self._running: P.Tree | None = None   # the plan the current step belongs to

    @property
    def uses_lookup(self) -> bool:
        return self.kind in ("auto", "lookup")

    def start(self) -> None:
        """A new answer: drafts of the last one are not scored against it."""
        self._shadow = {}

    def choose(self, mtp_drafts: list[int], lookup: list[int]) -> tuple[P.Tree, str | None]:
        """The tree for this step and where its chain drafts come from ('mtp', 'lookup', 'probe'
        for a masks-only step whose drafts are only scored, or None)."""
        tree, source = self._choose(mtp_drafts, lookup)
        if self.kind == "auto" and source != "lookup" and lookup and "lookup" not in self._shadow:
            self._shadow["lookup"] = (lookup, 0)
        # a masks-only step without drafts belongs to the plan it refills; probes to none
        self._running = {None: P.PLAIN, "mtp": self.plan.tree if self.plan else tree,
                         "lookup": self.plan_lookup.tree if self.plan_lookup else tree}.get(source)
        return tree, source

    def _choose(self, mtp_drafts: list[int], lookup: list[int]) -> tuple[P.Tree, str | None]:
        kind, k = self.kind, self.k_fixed
        if kind == "plain":
            return P.PLAIN, None
        if kind == "lookup":
            return (P.Tree(len(lookup[:k])), "lookup") if lookup else (P.PLAIN, None)
        if kind in ("quadratic", "linear"):
            full = P.quadratic(k) if kind == "quadratic" else P.linear(k)
            return (full if mtp_drafts else P.masks_only(k)), "mtp"
        # auto: re-plan every few steps from the running acceptance
        costs = self.costs()
        if self.plan is None or self._since_plan >= REPLAN_EVERY:
            self._since_plan = 0
            if self.mtp:
                self.plan = P.choose(costs, self.acc["mtp"].alpha, k_max=self.k, exclude=self.dropped)
                if self._mtp_can_pay is None:
                    best_case = [BEST_CASE_ACCEPTANCE] * self.k
                    self._mtp_can_pay = P.choose(costs, best_case, k_max=self.k).tree != P.PLAIN
                if self.plan.tree != P.PLAIN:
                    self._probe_every = PROBE_MIN
            self.plan_lookup = P.choose(costs, self.acc["lookup"].alpha, k_max=LOOKUP_MAX, chain_only=True,
                                        exclude=self.dropped)
        self._since_plan += 1
        options = []
        if self.mtp and self.plan.tree != P.PLAIN:
            t = self.plan.tree
            options.append((self.plan.rate, t if mtp_drafts else P.masks_only(t.n_masks), "mtp"))
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
            return P.masks_only(self.k), "probe"
        return P.PLAIN, None

    def record(self, source: str | None, n_offered: int, n_accepted: int, new: list[int],
               next_drafts: list[int], seconds: float | None = None) -> list[int]:
        """Learn from one step (`seconds`: its wall time); returns the MTP drafts the next step may
        use (a probe's drafts are only scored against what follows)."""
        if seconds is not None and self.kind == "auto" and self._running is not None:
            self._judge(self._running, seconds, len(new))
        self._score_shadow(new)
        if n_offered:
            self.acc[source].update(n_offered, n_accepted)
        if source == "probe":
            self._shadow["mtp"] = (next_drafts, 0)
            return []
        return next_drafts

    def plain_rate(self) -> float:
        """Plain tokens per second: measured here when enough plain steps ran, else the table's."""
        s, n = self.measured.get(P.PLAIN, (0.0, 0))
        return n / s if n >= SHAPE_MIN_TOKENS and s > 0 else 1.0 / P.cost(self.costs(), 1)

    def _judge(self, plan: P.Tree, seconds: float, n_tokens: int) -> None:
        m = self.measured.setdefault(plan, [0.0, 0])
        m[0] += seconds
        m[1] += n_tokens
        if plan != P.PLAIN and m[1] >= SHAPE_MIN_TOKENS and m[1] / m[0] < self.plain_rate():
            self.dropped.add(plan)
            self._since_plan = REPLAN_EVERY  # re-plan at the next step, without it

    def _score_shadow(self, new: list[int]) -> None:
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
