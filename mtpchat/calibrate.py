"""Cost of one llama_decode of n tokens on this machine, measured once per model file, thread
count and offload setting, and cached (the tree policy's only view of the hardware)."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

SIZES = (1, 2, 4, 8, 16, 32)


def home() -> Path:
    return Path(os.environ.get("MTPCHAT_HOME") or Path.home() / ".cache" / "mtpchat")


def _key(engine) -> str:
    st = os.stat(engine.model.path)
    return f"{os.path.realpath(engine.model.path)}|{st.st_size}|{int(st.st_mtime)}|t{engine.ctx.n_threads}|{engine.device}"


def measure(engine, reps: int = 2) -> dict[int, float]:
    """Seconds per pass of n tokens, in the shape MTP passes have (mask tokens, hidden states);
    key 0: seconds to build the graph of a new shape."""
    ctx = engine.ctx
    masks = engine.info.mask_ids if engine.mtp else []
    filler = engine.model.tokenize(" the quick brown fox jumps over the lazy dog and runs far away" * 4)
    table = {}
    builds = []
    ctx.clear()
    for n in SIZES:
        if n > ctx.n_batch:
            break
        n_mask = min(len(masks), n // 2) if n > 1 else 0
        toks = filler[: n - n_mask] + [masks[j % len(masks)] for j in range(n_mask)]
        ctx.set_embeddings(n > 1 and engine.mtp)
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
    engine.tokens = []
    return table


def load_or_measure(engine) -> dict[int, float]:
    path = home() / "calibration-v2.json"  # v2: with the graph build time (key 0)
    key = _key(engine)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return {int(n): float(t) for n, t in cache[key].items()}
    # measured on an empty cache so nothing of a conversation is disturbed
    saved = list(engine.tokens)
    table = measure(engine)
    if saved:
        engine._prefill(saved)
    cache[key] = table
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)
    return table
