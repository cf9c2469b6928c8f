"""Cost of one llama_decode of n tokens on this machine, measured once per model file, thread
count and offload setting, and cached (the tree policy's only view of the hardware)."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

SIZES = (1, 2, 4, 8, 16, 32)
FILLER_TEXT = " the quick brown fox jumps over the lazy dog and runs far away" * 4
REPS = 2   # timed passes per size, after the one that builds the graph


def home() -> Path:
    """$MTPCHAT_HOME (the tests set it), else the cache folder of everything else."""
    from .native import cache_dir

    return Path(os.environ["MTPCHAT_HOME"]) if os.environ.get("MTPCHAT_HOME") else cache_dir()


def cache_key(model_path: str, n_threads: int, device: str) -> str:
    """One table per model file (by path, size and time), thread count and device."""
    st = os.stat(model_path)
    return f"{os.path.realpath(model_path)}|{st.st_size}|{int(st.st_mtime)}|t{n_threads}|{device}"


def measure(ctx, *, mask_ids: list[int], filler: list[int], reps: int = REPS) -> dict[int, float]:
    """Seconds per pass of n tokens on `ctx`, in the shape MTP passes have (mask tokens, hidden
    states; `mask_ids` empty for a plain model); key 0: seconds to build the graph of a new shape.
    Uses and empties the context's KV cache."""
    table = {}
    builds = []
    ctx.clear()
    for n in SIZES:
        if n > ctx.n_batch:
            break
        n_mask = min(len(mask_ids), n // 2) if n > 1 else 0
        toks = filler[: n - n_mask] + [mask_ids[j % len(mask_ids)] for j in range(n_mask)]
        ctx.set_embeddings(n > 1 and bool(mask_ids))
        times = []
        for r in range(reps + 1):  # the first builds the graph
            t = time.perf_counter()
            ctx.decode(toks, list(range(n)), outputs=[1] * n)
            times.append(time.perf_counter() - t)
            ctx.seq_rm(0, 0, -1)
        table[n] = statistics.median(times[1:])
        builds.append(max(0.0, times[0] - table[n]))
    # the first pass of a new shape also builds its graph: the policy charges shape changes
    table[0] = statistics.median(builds) if builds else 0.0
    ctx.set_embeddings(False)
    ctx.clear()
    return table


def load_or_measure(ctx, key: str, *, mask_ids: list[int], filler: list[int]) -> dict[int, float]:
    """The cached table for `key`, or one measured on `ctx` now (which empties its KV cache)."""
    path = home() / "calibration-v2.json"  # v2: with the graph build time (key 0)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return {int(n): float(t) for n, t in cache[key].items()}
    table = measure(ctx, mask_ids=mask_ids, filler=filler)
    cache[key] = table
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return table
