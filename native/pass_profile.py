#!/usr/bin/env python3
"""What a pass of n tokens costs on this backend, and why: each size timed in the plain shape
(ordinary tokens, no adapter) and in the MTP shape (half mask tokens, gated adapter, hidden
states on), after a 48-token history in the cache as in real decoding. Every pass is timed
from llama_decode to its logits being readable; `graph_ms` is the part llama.cpp spent in the
synchronised graph compute (llama_mtp_compute_us), the rest is host work around it (batch
checks, graph build or reuse, output copies). A last pair of rows reads all 25 outputs against
only the last one, which prices the copy of logits rows. Run it under GGML_CUDA_DISABLE_GRAPHS=1
too to see what CUDA graphs are worth at each size. `mtp_parts_4` splits the MTP shape's extra
cost at 4 tokens into hidden states and the adapter (graph ms). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

SIZES = (1, 2, 4, 8, 16, 25, 32)
HISTORY = 48


def timed_passes(ctx, toks, reps: int, *, all_outputs: bool = True) -> dict:
    n = len(toks)
    pos = list(range(HISTORY, HISTORY + n))
    outputs = [1] * n if all_outputs else [0] * (n - 1) + [1]
    wall, graph = [], []
    for _ in range(reps + 2):   # two warm-ups: the graph build, then a reuse
        c0 = ctx.compute_s
        t = time.perf_counter()
        n_out = ctx.decode(toks, pos, outputs=outputs)
        ctx.logits(n_out)[-1, 0].item()
        wall.append(time.perf_counter() - t)
        graph.append(ctx.compute_s - c0)
        ctx.seq_rm(0, HISTORY, -1)
    wall, graph = wall[2:], graph[2:]
    ms = lambda xs: round(1e3 * statistics.median(xs), 3)
    return {"wall_ms": ms(wall), "graph_ms": ms(graph), "host_ms": ms([w - g for w, g in zip(wall, graph)]),
            "min_wall_ms": round(1e3 * min(wall), 3), "first_ms": [round(1e3 * w, 3) for w in wall[:4]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ngl", type=int, default=-1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from mtpchat import binding as B, format as F

    info = F.read_mtp_info(F.open_gguf(args.model))
    model = B.Model(args.model, n_gpu_layers=args.ngl)
    filler = model.tokenize(" the quick brown fox jumps over the lazy dog and runs far away" * 12)
    ctx = B.Context(model, n_ctx=512, n_batch=64, n_threads=args.threads, n_seq_max=2)
    out = {"model": args.model, "ngl": args.ngl, "threads": ctx.n_threads, "plain": {}, "mtp": {}}
    ctx.decode(filler[:HISTORY], list(range(HISTORY)))
    for n in SIZES:
        out["plain"][n] = timed_passes(ctx, filler[HISTORY:HISTORY + n], args.reps)
    if info is not None:
        ctx.set_adapter(B.Adapter(model))
        ctx.set_embeddings(True)
        masks = info.mask_ids
        for n in SIZES:
            n_mask = min(len(masks), n // 2) if n > 1 else 0
            toks = filler[HISTORY:HISTORY + n - n_mask] + [masks[j % len(masks)] for j in range(n_mask)]
            out["mtp"][n] = timed_passes(ctx, toks, args.reps)
        ctx.set_embeddings(False)
        # what the MTP shape's extra cost is made of, at 4 tokens: hidden states alone, the adapter
        # with no mask token in the batch (its gate skips it), the adapter acting on 2 mask tokens
        plain4, masked4 = filler[HISTORY:HISTORY + 4], filler[HISTORY:HISTORY + 2] + masks[:2]
        out["mtp_parts_4"] = {"adapter_on_masks": timed_passes(ctx, masked4, args.reps)["graph_ms"],
                              "adapter_no_masks": timed_passes(ctx, plain4, args.reps)["graph_ms"]}
        ctx.set_adapter(None)
        ctx.set_embeddings(True)
        out["mtp_parts_4"]["hidden_states_only"] = timed_passes(ctx, plain4, args.reps)["graph_ms"]
        ctx.set_embeddings(False)
        out["mtp_parts_4"]["plain"] = timed_passes(ctx, plain4, args.reps)["graph_ms"]
    toks = filler[HISTORY:HISTORY + 25]
    out["outputs_25_all"] = timed_passes(ctx, toks, args.reps, all_outputs=True)
    out["outputs_25_last"] = timed_passes(ctx, toks, args.reps, all_outputs=False)
    ctx.close()
    model.close()
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
