#!/usr/bin/env python3
"""Which file type should the default model's base have? Compares two GGUFs of the same weights
(e.g. the shipped Q4_1 and its Q8_0 re-encoding from `mtpchat convert --outtype q8_0`):

- plain decoding speed, the two files alternating, fastest of --repeats runs each;
- the cost of a pass of n tokens relative to one (calibrate.measure, as the tree policy sees it);
- agreement with the first file: top-1 agreement and mean KL(first || second) of the next-token
  distributions along the first file's own greedy answers to the prompt files.

    python native/bench_filetype.py A.gguf B.gguf --prompts ../shared/prompts/dev-*.jsonl --json

Timing needs a quiet machine: llama.cpp's spinning threads make a busy one 10-100x slower.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from mtpchat import binding as B
from mtpchat import calibrate
from mtpchat.bench import load_prompts
from mtpchat.chat import ChatFormat
from mtpchat.engine import Engine
from mtpchat.sampling import GREEDY


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def plain_tok_s(eng: Engine, prompt: list[int], n: int) -> float:
    eng.reset()
    t = time.perf_counter()
    got = sum(1 for _ in eng.generate(prompt, GREEDY, max_tokens=n))
    return got / (time.perf_counter() - t)


def sequence_logits(path: str, seqs: list[tuple[list[int], int]], n_vocab: int, threads: int) -> list[np.ndarray]:
    """Logits at every answer position of each (tokens, prompt length), in one pass per sequence."""
    model = B.Model(path)
    ctx = B.Context(model, n_ctx=2048, n_batch=2048, n_threads=threads)
    out = []
    for toks, p in seqs:
        ctx.clear()
        flags = [0] * len(toks)
        for i in range(p - 1, len(toks) - 1):
            flags[i] = 1
        n = ctx.decode(toks, list(range(len(toks))), outputs=flags)
        out.append(np.array(ctx.logits(n)[:, :n_vocab]))
    ctx.close()
    model.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--prompts", nargs="+", required=True)
    ap.add_argument("-n", type=int, default=96, help="answer tokens per prompt")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    engines = {name: Engine(name, mtp=False, n_ctx=2048, n_threads=args.threads) for name in (args.first, args.second)}
    first = engines[args.first]
    chat = ChatFormat(first.model)
    items = [it for f in args.prompts for it in load_prompts(f)]
    prompts = [chat.tokens([{"role": "user", "content": it["prompt"]}]) for it in items]
    threads = first.ctx.n_threads

    speed = {name: 0.0 for name in engines}
    warm = prompts[0]
    for eng in engines.values():
        plain_tok_s(eng, warm, 16)
    for r in range(args.repeats):
        order = list(engines) if r % 2 == 0 else list(engines)[::-1]
        for name in order:
            speed[name] = max(speed[name], plain_tok_s(engines[name], prompts[0], 128))
    costs = {}
    for name, eng in engines.items():
        eng.reset()
        table = calibrate.measure(eng.ctx, mask_ids=[], filler=eng.model.tokenize(calibrate.FILLER_TEXT))
        costs[name] = {n: round(t / table[1], 3) for n, t in sorted(table.items()) if n >= 1}

    # agreement along the first file's greedy answers
    seqs = []
    for p in prompts:
        first.reset()
        ans = [t.id for t in first.generate(p, GREEDY, max_tokens=args.n)]
        seqs.append((p + ans, len(p)))
    for eng in engines.values():
        eng.close()
    n_vocab = B.Model(args.first, vocab_only=True).n_vocab
    la = sequence_logits(args.first, seqs, n_vocab, threads)
    lb = sequence_logits(args.second, seqs, n_vocab, threads)
    agree, kls, total = 0, [], 0
    for a, b in zip(la, lb):
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
        pa, pb = log_softmax(a), log_softmax(b)
        kls.append((np.exp(pa) * (pa - pb)).sum(-1))
    kl = np.concatenate(kls)
    result = {"threads": threads, "plain_tok_s": {k: round(v, 1) for k, v in speed.items()},
              "speed_ratio": round(speed[args.second] / speed[args.first], 3),
              "pass_cost_vs_1": costs, "positions": total, "top1_agreement": round(agree / total, 4),
              "kl_mean": float(f"{kl.mean():.3g}"), "kl_p99": float(f"{np.quantile(kl, 0.99):.3g}")}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
