"""Cost of one llama_decode of n tokens on this machine: the tree policy's only view of the
hardware. Measured per model file, thread count and device, and cached.

A table measured while other processes loaded the cores can claim nonsense (a pass of 8 tokens
cheaper than a pass of 1), and a cached one would mislead every later run. So:
- each size is warmed up (graph build), then timed until the fastest passes agree
  (the minimum is what the hardware can do; load only ever adds time);
- a table is checked for plausibility (positive, roughly monotone, no pass of n tokens far
  beyond n one-token passes) and only a plausible one is cached;
- a cached table is re-validated cheaply at start (a few one-token passes) and re-measured when
  this machine now runs a pass at a very different speed;
- the cache file is updated under a lock, so concurrent runs never lose each other's entries.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

SIZES = (1, 2, 4, 8, 16, 32)
FILLER_TEXT = " the quick brown fox jumps over the lazy dog and runs far away" * 4
MIN_REPS, MAX_REPS = 3, 9     # timed passes per size, after the warm-up pass
STABLE = 0.05                 # the fastest three timed passes agree within 5%: stop timing
MONOTONE_SLACK = 0.8          # a larger pass under 0.8x a smaller one: the machine was disturbed
MAX_SLOPE = 2.0               # a pass of n tokens costs at most 2n one-token passes
REVALIDATE_RATIO = 2.0        # a cached 1-token cost off by more than 2x either way is re-measured
CACHE_FILE = "calibration-v3.json"   # v3: minimum-of-stable timings, plausibility-checked


def home() -> Path:
    """$MTPCHAT_HOME (the tests set it), else the cache folder of everything else."""
    from .native import cache_dir

    return Path(os.environ["MTPCHAT_HOME"]) if os.environ.get("MTPCHAT_HOME") else cache_dir()


def cache_key(model_path: str, n_threads: int, device: str) -> str:
    """One table per model file (by path, size and time), thread count and device."""
    st = os.stat(model_path)
    return f"{os.path.realpath(model_path)}|{st.st_size}|{int(st.st_mtime)}|t{n_threads}|{device}"


def _time_pass(ctx, toks: list[int]) -> float:
    n = len(toks)
    t = time.perf_counter()
    ctx.decode(toks, list(range(n)), outputs=[1] * n)
    # reading the logits waits for an asynchronous backend (a GPU) to finish the pass
    ctx.logits(n)[-1, 0].item()
    dt = time.perf_counter() - t
    ctx.seq_rm(0, 0, -1)
    return dt


def _stable_min(ctx, toks: list[int]) -> float:
    times: list[float] = []
    while len(times) < MAX_REPS:
        times.append(_time_pass(ctx, toks))
        best = sorted(times)[:3]
        if len(times) >= MIN_REPS and best[-1] <= best[0] * (1 + STABLE):
            break
    return min(times)


def measure(ctx, *, mask_ids: list[int], filler: list[int]) -> dict[int, float]:
    """Seconds per pass of n tokens on `ctx`, in the shape MTP passes have (mask tokens, hidden
    states; `mask_ids` empty for a plain model); key 0: seconds to build the graph of a new shape.
    Uses and empties the context's KV cache."""
    table, builds = {}, []
    ctx.clear()
    for n in SIZES:
        if n > ctx.n_batch:
            break
        n_mask = min(len(mask_ids), n // 2) if n > 1 else 0
        toks = filler[: n - n_mask] + [mask_ids[j % len(mask_ids)] for j in range(n_mask)]
        ctx.set_embeddings(n > 1 and bool(mask_ids))
        first = _time_pass(ctx, toks)  # builds the graph
        table[n] = _stable_min(ctx, toks)
        builds.append(max(0.0, first - table[n]))
    # the first pass of a new shape also builds its graph: the policy charges shape changes
    table[0] = sorted(builds)[len(builds) // 2] if builds else 0.0
    ctx.set_embeddings(False)
    ctx.clear()
    return table


def implausible(table: dict[int, float]) -> str | None:
    """Why a table cannot describe this machine at rest, or None when it can."""
    sizes = sorted(n for n in table if n >= 1)
    if not sizes or sizes[0] != 1 or any(not (table[n] > 0) for n in sizes):
        return "missing or non-positive pass times"
    one = table[1]
    for a, b in zip(sizes, sizes[1:]):
        if table[b] < MONOTONE_SLACK * table[a]:
            return f"a pass of {b} tokens measured faster than one of {a}"
    for n in sizes:
        if table[n] > MAX_SLOPE * n * one:
            return f"a pass of {n} tokens measured at {table[n] / one:.1f}x one token"
    return None


def monotone(table: dict[int, float]) -> dict[int, float]:
    """Pass times never decrease with the pass size (small measurement noise removed)."""
    out, run = dict(table), 0.0
    for n in sorted(x for x in table if x >= 1):
        run = max(run, table[n])
        out[n] = run
    return out


def one_pass_now(ctx, filler: list[int]) -> float:
    """The cheap check of a cached table: the fastest of a few one-token passes."""
    ctx.clear()
    ctx.set_embeddings(False)
    _time_pass(ctx, filler[:1])
    t = min(_time_pass(ctx, filler[:1]) for _ in range(MIN_REPS))
    ctx.clear()
    return t


@contextlib.contextmanager
def _locked_cache():
    """The cache's JSON, read and (if changed by the caller) written back under an exclusive lock."""
    path = home() / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cache = json.loads(path.read_text())
            if not isinstance(cache, dict):
                cache = {}
        except (OSError, ValueError):
            cache = {}
        before = json.dumps(cache, sort_keys=True)
        yield cache
        if json.dumps(cache, sort_keys=True) != before:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps(cache, indent=1))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)


def _parse(entry) -> dict[int, float] | None:
    try:
        table = {int(n): float(t) for n, t in entry.items()}
    except (AttributeError, TypeError, ValueError):
        return None
    return None if implausible(table) else table


def load_or_measure(ctx, key: str, *, mask_ids: list[int], filler: list[int],
                    force: bool = False) -> tuple[dict[int, float], str | None]:
    """(table, note): the cached table for `key` when it still matches this machine, else one
    measured on `ctx` now (which empties its KV cache). `note` says why a table was (re)measured
    or why it was not cached; None when the cached table was used as is."""
    with _locked_cache() as cache:
        cached = None if force else _parse(cache.get(key))
    note = None
    if cached is not None:
        ratio = one_pass_now(ctx, filler) / cached[1]
        if 1 / REVALIDATE_RATIO <= ratio <= REVALIDATE_RATIO:
            return cached, None
        note = f"a one-token pass now takes {ratio:.2f}x the cached time: re-measured"
    table = measure(ctx, mask_ids=mask_ids, filler=filler)
    why = implausible(table)
    if why:
        table = measure(ctx, mask_ids=mask_ids, filler=filler)  # once more: a load spike passes
        why = implausible(table)
    if why:
        # used for this run only (made monotone), never cached: it would mislead later runs
        return monotone(table), f"cost table not cached ({why}; is the machine busy?)"
    with _locked_cache() as cache:
        cache[key] = {str(n): t for n, t in table.items()}
    return table, note
