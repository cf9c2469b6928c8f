#!/usr/bin/env python3
"""Where does the batch shape change the logits? One text evaluated token by token (the plain
decoding shape) and again in passes of n tokens; for each n, the largest logit difference against
token by token over all positions, and how many positions change their argmax.

On a backend whose kernels do not depend on the batch size (this project's CPU build with Q4_0,
Q4_1, Q8_0) every row is 0. On CUDA, the step where the difference first appears names the kernel
switch: matrix-vector kernels serve passes of at most 8 tokens there (mmvq for quantised weights,
mmv for the f16 KV cache), tiled matrix kernels or cuBLAS serve larger ones. `--ngl 0` runs the
same text on the CPU in the same process, for comparison. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

TEXT = ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n"
        "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n"
        "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest.")
SIZES = (1, 2, 3, 4, 5, 8, 9, 12, 16, 25, 32)


def logits_in_passes(ctx, ids: list[int], n: int) -> np.ndarray:
    """Logits of every position, the text fed in consecutive passes of n tokens."""
    ctx.clear()
    rows = []
    for i in range(0, len(ids), n):
        chunk = ids[i:i + n]
        n_out = ctx.decode(chunk, list(range(i, i + len(chunk))), outputs=[1] * len(chunk))
        rows.append(np.array(ctx.logits(n_out)))
    return np.concatenate(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ngl", type=int, default=-1, help="layers on the GPU (-1: all)")
    args = ap.parse_args()

    from mtpchat import binding as B

    model = B.Model(args.model, n_gpu_layers=args.ngl)
    ids = model.tokenize(TEXT)
    ctx = B.Context(model, n_ctx=512, n_batch=64)
    ref = logits_in_passes(ctx, ids, 1)
    ref_top = ref.argmax(axis=1)
    out = {"model": args.model, "ngl": args.ngl, "positions": len(ids), "by_pass_size": {}}
    for n in SIZES:
        got = logits_in_passes(ctx, ids, n)
        out["by_pass_size"][n] = {"max_abs_diff": round(float(np.abs(got - ref).max()), 5),
                                  "argmax_changed": int((got.argmax(axis=1) != ref_top).sum())}
    ctx.close()
    model.close()
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
