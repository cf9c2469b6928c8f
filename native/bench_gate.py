#!/usr/bin/env python3
"""Cost of the gated adapter in one llama_decode, on the default model with a random rank-16
gated adapter: a 16-token batch half of mask tokens and one with no mask token, each with and
without the adapter attached. Prints the ratios (targets on a CPU: <= 1.10 and <= 1.01)."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="base GGUF (default: the embedded SmolLM2-135M)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from mtpchat import binding as B
    from mtpchat.models import plain_base_path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))   # the test fixtures
    from synthetic import write_random_mtp

    base = args.model or plain_base_path()
    if base is None:
        sys.exit("no model: pass --model or run ./setup.sh")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_mtp(base, Path(tmp) / "bench-mtp.gguf", k=8, rank=args.rank)
        model = B.Model(path)
        adapter = B.Adapter(model)
        masks = adapter.gate_tokens
        prompt = model.tokenize("The history of the printing press begins in the fifteenth century, when")[:32]
        ordinary = model.tokenize(" a goldsmith in Mainz named Johannes Gutenberg combined movable metal type, oil-based ink"
                                  " and a wooden press adapted from those used for wine")[:16]
        assert len(ordinary) == 16
        batches = {"16 tokens, 8 masks": ordinary[:8] + masks, "16 tokens, no mask": ordinary[:16]}
        # one context per (batch, adapter): a context that alternates between a batch with gate
        # tokens and one without rebuilds its graph each time, which is not the cost asked about
        ctxs = {}
        for b in batches:
            for with_adapter in (False, True):
                ctx = ctxs[(b, with_adapter)] = B.Context(model, n_ctx=512, n_batch=64, n_threads=args.threads)
                ctx.set_adapter(adapter if with_adapter else None)
                ctx.decode(prompt, list(range(len(prompt))))
        p0 = len(prompt)

        def once(b, with_adapter):
            ctx = ctxs[(b, with_adapter)]
            tokens = batches[b]
            t = time.perf_counter()
            ctx.decode(tokens, list(range(p0, p0 + len(tokens))), outputs=[1] * len(tokens))
            dt = time.perf_counter() - t
            ctx.seq_rm(0, p0, -1)
            return dt

        times = {(b, a): [] for b in batches for a in (False, True)}
        for key in times:  # warm-up: build and cache each graph once
            once(*key)
        for _ in range(args.reps):  # interleaved so that machine noise hits all four alike
            for (b, a) in times:
                times[(b, a)].append(once(b, a))
        print(f"model {Path(base).name}, gated LoRA rank {args.rank}, {ctx.n_threads} threads, "
              f"median of {args.reps}")
        for b in batches:
            off = statistics.median(times[(b, False)]) * 1e3
            on = statistics.median(times[(b, True)]) * 1e3
            print(f"{b:20s} no adapter {off:7.2f} ms   gated adapter {on:7.2f} ms   ratio {on / off:.3f}")
        for ctx in ctxs.values():
            ctx.close()
        model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
