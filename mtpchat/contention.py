"""Threads on a busy machine.

llama.cpp's CPU threads meet at a barrier after every operation of a pass, and a waiting thread
spins. When another program takes one of the cores, the thread that shares it runs only part of
the time and every other thread spins waiting for it: with one busy process on a 2-core machine,
2 threads decoded at 0.3 tok/s where 1 thread did 52.7 tok/s.

- `physical_cores()` / `default_threads()`: the default thread count, the physical cores this
  process may run on (llama.cpp's own default is its physical core count).
- `clamp_threads(n)`: a requested count, at most the CPUs this process may use.
- `SlowdownDetector`: a pure state machine fed with the time of each pass. It notices decoding
  running far below this machine's own measured speed (the calibrated cost of a pass, or the
  fastest this process has seen) for a sustained stretch, tries fewer threads and keeps them only
  when they are measurably faster, and now and then tries the full count again. Tested with
  injected timings (tests/test_contention.py); `scripts/contention_bench.py` shows it on a
  machine with a busy process.
- `Governor`: the glue that feeds the detector from a streaming answer's statistics and applies
  its decisions with llama_set_n_threads (no new context needed).
"""
from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass
from typing import Callable, Iterator


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask, where the OS has one)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int] | None = None, sysfs: str = "/sys/devices/system/cpu") -> int:
    """Physical cores among `cpus` (default: the usable ones). Linux: distinct (package, core)
    pairs in sysfs topology, so hyper-threads count once; macOS: the performance cores; elsewhere
    llama.cpp's fallback (logical CPUs, halved above 4)."""
    cpus = usable_cpus() if cpus is None else cpus
    cores = set()
    for c in cpus:
        try:
            with open(f"{sysfs}/cpu{c}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"{sysfs}/cpu{c}/topology/physical_package_id") as f:
                pkg = f.read().strip()
        except OSError:
            break
        cores.add((pkg, core))
    else:
        if cores:
            return len(cores)
    if sys.platform == "darwin":
        import subprocess

        for key in ("hw.perflevel0.physicalcpu", "hw.physicalcpu"):
            try:
                n = int(subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout)
                if n > 0:
                    return min(n, len(cpus))
            except (OSError, ValueError, subprocess.SubprocessError):
                continue
    n = len(cpus)
    return n if n <= 4 else n // 2


def default_threads() -> int:
    """The default thread count: the physical cores this process may use (at least 1)."""
    return max(1, physical_cores())


def clamp_threads(requested: int | None) -> tuple[int, str | None]:
    """(threads to use, a warning or None). None asks for the default; more threads than this
    process has CPUs are clamped: they would only wait for each other."""
    if requested is None:
        return default_threads(), None
    n = len(usable_cpus())
    if requested > n:
        return n, f"--threads {requested} is more than the {n} CPUs this process may use: using {n}"
    return requested, None


# -- the detector -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """A decision: use `threads` from now on. kind: 'explore' (a first look at fewer threads),
    'trial' (fewer threads after a sustained slowdown), 'adapt' (the trial was faster: kept),
    'revert' (it was not: back), 'probe' (the configured count again, to see whether the machine
    is free), 'restore' (it is: back to the configured count)."""
    kind: str
    threads: int
    slowdown: float | None = None   # the slow stretch against the machine's measured speed (None: unknown)
    gain: float | None = None       # 'adapt': how many times faster the kept count is than the one before


class SlowdownDetector:
    """Pure state machine: `observe(n_tokens, seconds)` per pass, an `Event` when it wants a
    different thread count.

    Pass times are normalised to 1-token passes with `relative_cost(n)` (the calibrated cost of
    an n-token pass over a 1-token one; default n), and grouped in windows of `window` passes (a
    window also closes after `window_s` seconds with at least 2 passes, so a crawl is noticed in
    seconds). The expected time at the configured count is the machine's own: the calibrated
    `unit_s` or the fastest window median seen, whichever is lower. A window slower than `factor`
    times that, `sustain` windows in a row, starts a trial with fewer threads; the trial is kept
    when its window is at least `improve` times faster than the slow one. While below the
    configured count, it tries the configured count again every `check_every` windows (doubling
    after each failed try) and goes back when that is faster. With `explore`, the very first
    window is followed by one trial with fewer threads, so a machine that is already busy at the
    start (and whose calibration may have been measured under that load) is caught too.
    """

    def __init__(self, threads: int, *, unit_s: float | None = None,
                 relative_cost: Callable[[int], float] | None = None, factor: float = 3.0, window: int = 8,
                 window_s: float = 1.0, sustain: int = 2, improve: float = 1.5, check_every: int = 16,
                 check_max: int = 512, probe_passes: int = 3, explore: bool = True):
        self.top = max(1, threads)
        self.current = self.top
        self.unit_s = unit_s
        self.rel = relative_cost or (lambda n: float(n))
        self.factor, self.window, self.window_s, self.sustain = factor, window, window_s, sustain
        self.improve, self.check_every, self.check_max = improve, check_every, check_max
        self.probe_passes = probe_passes
        self.explore = explore and self.top > 1
        self.best: dict[int, float] = {}
        self.phase = "steady"          # steady | trial | probe
        self.buf: list[float] = []
        self.buf_s = 0.0
        self.skip = 0                  # passes to ignore after a switch (the first may set things up)
        self.slow_windows = 0
        self.cooldown = 0              # windows before another trial may start
        self.backoff = 4
        self.since_check = 0
        self.slow_med = 0.0            # the window that started the current trial or probe
        self.slowdown: float | None = None
        self.prev = self.top           # where a trial or probe returns to
        self.adapted: Event | None = None
        self.history: list[Event] = []

    @staticmethod
    def lower(t: int) -> int:
        """The next smaller thread count to try: one less, or a quarter less on many cores."""
        return max(1, t - max(1, t // 4))

    def expected(self, t: int) -> float | None:
        """The unit pass time this machine has shown at t threads (None: nothing measured yet)."""
        known = [x for x in (self.best.get(t), self.unit_s if t == self.top else None) if x]
        return min(known) if known else None

    def _switch(self, kind: str, threads: int, slowdown: float | None = None, gain: float | None = None) -> Event:
        self.phase = {"explore": "trial", "trial": "trial", "probe": "probe"}.get(kind, "steady")
        self.current = threads
        self.buf, self.buf_s, self.skip = [], 0.0, 1
        ev = Event(kind, threads, slowdown, gain)
        self.history.append(ev)
        return ev

    def observe(self, n_tokens: int, seconds: float) -> Event | None:
        if self.skip:
            self.skip -= 1
            return None
        self.buf.append(seconds / max(self.rel(max(1, n_tokens)), 1e-9))
        self.buf_s += seconds
        need = self.probe_passes if self.phase == "probe" else self.window
        if len(self.buf) < need and not (self.buf_s >= self.window_s and len(self.buf) >= 2):
            if self.phase == "probe" and self.buf[-1] > self.factor * self.slow_med:
                return self._end_probe(self.buf[-1])  # hopeless: do not sit through the rest
            return None
        med = statistics.median(self.buf)
        self.buf, self.buf_s = [], 0.0
        if self.phase == "trial":
            return self._end_trial(med)
        if self.phase == "probe":
            return self._end_probe(med)
        return self._steady(med)

    def _steady(self, med: float) -> Event | None:
        t = self.current
        exp = self.expected(t)
        self.best[t] = min(self.best.get(t, med), med)
        if self.explore:
            self.explore = False
            self.prev, self.slow_med, self.slowdown = t, med, (med / exp if exp else None)
            return self._switch("explore", self.lower(t), self.slowdown)
        slow = exp is not None and med > self.factor * exp
        self.slow_windows = self.slow_windows + 1 if slow else 0
        if self.cooldown:
            self.cooldown -= 1
        elif self.slow_windows >= self.sustain and t > 1:
            self.slow_windows = 0
            self.prev, self.slow_med, self.slowdown = t, med, med / exp
            return self._switch("trial", self.lower(t), self.slowdown)
        if t < self.top:
            self.since_check += 1
            if self.since_check >= self.check_every:
                self.since_check = 0
                self.prev, self.slow_med = t, med
                return self._switch("probe", self.top)
        return None

    def _end_trial(self, med: float) -> Event:
        t_new, back = self.current, self.prev
        if med * self.improve <= self.slow_med:
            self.best[t_new] = min(self.best.get(t_new, med), med)
            ev = self._switch("adapt", t_new, self.slowdown, self.slow_med / med)
            if self.adapted is None:
                self.adapted = ev
            self.since_check = 0
            return ev
        # fewer threads were no faster: the slowdown was something else (or there was none)
        self.cooldown, self.backoff = self.backoff, min(self.backoff * 2, 256)
        return self._switch("revert", back)

    def _end_probe(self, med: float) -> Event:
        back = self.prev
        if med * 1.1 < self.slow_med:   # the configured count is faster again: the load is gone
            self.best[self.top] = min(self.best.get(self.top, med), med)
            self.check_every = 16
            return self._switch("restore", self.top)
        self.check_every = min(self.check_every * 2, self.check_max)
        return self._switch("revert", back)


# -- glue ---------------------------------------------------------------------------------------

def adapt_message(ev: Event, top: int) -> str:
    """The one line said when decoding moved to fewer threads."""
    th = f"{ev.threads} thread{'s' if ev.threads > 1 else ''}"
    if ev.slowdown and ev.slowdown >= 1.5:
        what = (f"decoding ran {ev.slowdown:.0f}x below this machine's measured speed (another program busy?); "
                f"{th} instead of {top} decode {ev.gain:.1f}x faster")
    else:
        what = f"decoding with {top} threads ran {ev.gain:.1f}x slower than with {th} (another program busy?)"
    return f"{what}: using {ev.threads} (--threads sets the count)"


class Governor:
    """Feeds a detector from the live statistics of streaming answers and applies its thread
    counts to the context between steps; says once (through `say`) when it moved to fewer
    threads. One per process: what it learnt carries over from answer to answer."""

    def __init__(self, ctx, detector: SlowdownDetector, *, say: Callable[[str], None],
                 verbose: Callable[[str], None] | None = None):
        self.ctx, self.det, self.say, self.verbose = ctx, detector, say, verbose
        self.said = False
        self._st = None
        self._seen = (0, 0, 0.0)

    @classmethod
    def for_engine(cls, engine, *, say, verbose=None) -> "Governor":
        """A governor for `engine`'s context, with the engine's calibrated costs as the machine's
        measured speed when it has them (they are measured at the context's thread count)."""
        costs = engine.costs
        unit, rel = None, None
        if costs and costs.get(1):
            from .policy import cost

            unit = costs[1]
            rel = lambda n: cost(costs, n) / costs[1]  # noqa: E731
        det = SlowdownDetector(engine.ctx.n_threads, unit_s=unit, relative_cost=rel)
        return cls(engine.ctx, det, say=say, verbose=verbose)

    def update(self, st) -> None:
        """Look at `st` (the answer's live Stats) and act on what changed since the last look."""
        if st is not self._st:
            self._st, self._seen = st, (0, 0, 0.0)
        steps, toks, dec = st.steps, st.pass_tokens, st.decode_s
        d_steps = steps - self._seen[0]
        if d_steps <= 0:
            return
        per_tok, per_s = (toks - self._seen[1]) / d_steps, (dec - self._seen[2]) / d_steps
        self._seen = (steps, toks, dec)
        for _ in range(d_steps):
            ev = self.det.observe(round(per_tok), per_s)
            if ev is None:
                continue
            if ev.threads != self.ctx.n_threads:
                self.ctx.set_n_threads(ev.threads)
            if ev.kind == "adapt" and not self.said:
                self.said = True
                self.say(adapt_message(ev, self.det.top))
            elif self.verbose is not None:
                self.verbose(f"threads: {ev.kind} -> {ev.threads}")

    def watch(self, tokens: Iterator, stats: Callable[[], object]) -> Iterator:
        """Pass `tokens` through, updating after each from `stats()` (the answer's Stats)."""
        for tok in tokens:
            self.update(stats())
            yield tok
