"""`mtpchat bench`: plain greedy and MTP greedy decoding of the same GGUF, prompt by prompt, in
one process, with the same chat template. Speedups are ratios measured side by side."""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from .chat import ChatFormat
from .engine import Engine
from .sampling import GREEDY
from .stats import Stats


MAX_PROMPT_FILE = 64 << 20   # bytes: prompt files are untrusted input too


def load_prompts(path: str) -> list[dict]:
    """The prompts of a JSON Lines file (docs/DESIGN.md section 6); any problem is one ValueError line."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_PROMPT_FILE:
            raise ValueError(f"{path} is larger than {MAX_PROMPT_FILE >> 20} MiB")
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except (ValueError, RecursionError):   # RecursionError: nesting deeper than the stack
            raise ValueError(f"{path}:{n}: not valid JSON") from None
        if not isinstance(d, dict) or not isinstance(d.get("prompt"), str) or not d["prompt"].strip():
            raise ValueError(f"{path}:{n}: each line needs a non-empty \"prompt\"")
        for key in ("id", "category", "system"):
            if key in d and not isinstance(d[key], str):
                raise ValueError(f"{path}:{n}: \"{key}\" must be a string")
        d.setdefault("id", f"{p.stem}-{n}")
        d.setdefault("category", "default")
        items.append(d)
    if not items:
        raise ValueError(f"{path} holds no prompts")
    return items


def _run(engine: Engine, prompt: list[int], max_tokens: int) -> tuple[list[int], Stats]:
    engine.reset()  # each run pays its own prompt processing
    st = Stats()
    ids = [t.id for t in engine.generate(prompt, GREEDY, max_tokens=max_tokens, stats=st)]
    return ids, st


def top2_gap(engine: Engine, prompt: list[int], prefix: list[int]) -> float:
    """Plain top-1 minus top-2 logit at the position after prompt + prefix."""
    row = engine.logits_after(prompt + prefix)
    if len(engine.banned):
        row[engine.banned] = -np.inf
    top = np.partition(row, -2)[-2:]
    return float(top[1] - top[0])


def _r(x, nd):
    return None if x is None else round(x, nd)


def _agg(rows: list[dict]) -> dict:
    plain, mtp = Stats(), Stats()
    for r in rows:
        plain.merge(r["_plain"])
        mtp.merge(r["_mtp"])
    return {"prompts": len(rows), "identical": sum(r["identical"] for r in rows), "tokens": plain.tokens,
            "plain_tok_s": round(plain.tok_s, 2), "mtp_tok_s": round(mtp.tok_s, 2),
            "speedup": round(mtp.tok_s / plain.tok_s, 3) if plain.tok_s else None,
            "tau": round(mtp.tau, 3) if mtp.steps else None,
            # share of MTP generation time outside the backend's graph compute, and in the Python
            # sampler head (0 when the head runs in C)
            "outside_decode": _r(mtp.outside_decode, 4), "draft_share": _r(mtp.draft_share, 4),
            # host work per step: everything but the graph compute, timed in C around the
            # synchronised compute (llama_mtp_compute_us), so work moved into C still counts
            "host_ms_per_step": _r(mtp.host_ms_per_step, 3), "plain_host_ms_per_step": _r(plain.host_ms_per_step, 3)}


def run_bench(engine: Engine, items: list[dict], *, max_tokens: int, tree: str, repeats: int = 3,
              progress: bool = True) -> dict:
    import time
    from contextlib import nullcontext

    from rich.console import Console
    from rich.progress import Progress

    err = Console(stderr=True)
    bar_on = progress and err.is_terminal

    def note(msg: str) -> None:
        """Progress as lines when stderr is not a terminal (a log, CI): a bar would show nothing."""
        if progress and not err.is_terminal:
            print(f"bench: {msg}", file=sys.stderr, flush=True)

    chat = ChatFormat(engine.model)
    if engine.kind == "auto":
        t = time.perf_counter()
        note("this machine's pass costs (measured once per model and thread count, then cached) ...")
        with err.status("this machine's pass costs (measured once per model and thread count, then cached) ...") \
                if bar_on else nullcontext():
            engine.calibrate()
        note(f"pass costs ready ({time.perf_counter() - t:.1f} s)")
    note(f"{len(items)} prompts, {repeats} run(s) per side, up to {max_tokens} tokens each")
    # warm-up: build both paths' graphs and touch the weights before any timing
    warm = chat.tokens([{"role": "user", "content": "Hello"}])
    with engine.baseline():
        _run(engine, warm, 8)
    _run(engine, warm, 8)
    rows = []
    with Progress(console=err, transient=True, disable=not bar_on) as bar:
        task = bar.add_task("bench", total=len(items))
        for it in items:
            msgs = ([{"role": "system", "content": it["system"]}] if it.get("system") else [])
            prompt = chat.tokens(msgs + [{"role": "user", "content": it["prompt"]}])
            runs = {"plain": [], "mtp": []}
            # plain and MTP alternate (P M M P ...) and each keeps its fastest run, so that a
            # hiccup of the machine does not land on one side only
            for r in range(repeats):
                for side in (("plain", "mtp") if r % 2 == 0 else ("mtp", "plain")):
                    if side == "plain":
                        with engine.baseline():  # exactly as stock llama.cpp: no adapter attached
                            runs[side].append(_run(engine, prompt, max_tokens))
                    else:
                        runs[side].append(_run(engine, prompt, max_tokens))
            plain_ids, ps = min(runs["plain"], key=lambda r: r[1].gen_s)
            mtp_ids, ms = min(runs["mtp"], key=lambda r: r[1].gen_s)
            # every run of both sides must give the same tokens
            same = all(ids == plain_ids for ids, _ in runs["plain"] + runs["mtp"])
            row = {"id": it["id"], "category": it["category"], "tokens": ps.tokens, "mtp_tokens": ms.tokens,
                   "_plain": ps, "_mtp": ms, "steps": ms.steps,
                   "plain_tok_s": round(ps.tok_s, 2), "mtp_tok_s": round(ms.tok_s, 2),
                   "speedup": round(ms.tok_s / ps.tok_s, 3) if ps.tok_s else None,
                   "tau": round(ms.tau, 3), "acceptance": [round(a, 3) for a in ms.acceptance()],
                   "accepted_by_source": dict(ms.by_source), "trees": dict(ms.trees),
                   "prompt_tokens": len(prompt), "plain_prompt_tok_s": round(ps.prompt_tok_s, 1),
                   "mtp_prompt_tok_s": round(ms.prompt_tok_s, 1), "identical": same,
                   "outside_decode": _r(ms.outside_decode, 4), "plain_outside_decode": _r(ps.outside_decode, 4)}
            if not same:
                pos = next((i for i, (a, b) in enumerate(zip(plain_ids, mtp_ids)) if a != b),
                           min(len(plain_ids), len(mtp_ids)))
                row["first_divergence"] = pos
                row["top2_gap"] = round(top2_gap(engine, prompt, plain_ids[:pos]), 5)
            rows.append(row)
            bar.advance(task)
            note(f"{len(rows)}/{len(items)} {it['id']}: plain {ps.tok_s:.1f} tok/s, MTP {ms.tok_s:.1f} tok/s, "
                 f"{ms.tau:.2f} tokens/step, {'identical' if same else 'not identical'}")
    cats = defaultdict(list)
    for r in rows:
        cats[r["category"]].append(r)
    result = {"model": os.path.basename(engine.model.path), "device": engine.device, "threads": engine.ctx.n_threads,
              "tree": tree, "draft_head": engine.draft_head, "step": ("native" if engine.graph_head else "host") if engine.native else "python",
              "max_tokens": max_tokens, "repeats": repeats, "aggregate": _agg(rows),
              "by_category": {c: _agg(rs) for c, rs in sorted(cats.items())}, "prompts": rows,
              # what the tree policy was told (calibrated seconds per pass of n tokens) beside what
              # the trees it chose delivered while running (tokens per second per plan)
              "calibration": {str(n): t for n, t in sorted(engine.costs.items())} if engine.costs else None,
              "calibration_note": engine.calibration_note, "measured_tok_s": engine.measured_rates()}
    for r in rows:
        del r["_plain"], r["_mtp"]
    return result


def render(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    n = result["threads"]
    t = Table(title=f"{result['model']} · {result['device']} · {n} thread{'s' if n != 1 else ''} · tree {result['tree']}")
    for col in ("prompt", "category", "tokens", "plain tok/s", "MTP tok/s", "speedup", "tokens/step", "acceptance", "identical"):
        t.add_column(col, justify="right" if col not in ("prompt", "category", "acceptance") else "left")
    for r in result["prompts"]:
        ident = "yes" if r["identical"] else f"no @{r['first_divergence']} gap {r['top2_gap']:.3g}"
        t.add_row(r["id"], r["category"], str(r["tokens"]), f"{r['plain_tok_s']:.1f}", f"{r['mtp_tok_s']:.1f}",
                  f"{r['speedup']:.2f}x", f"{r['tau']:.2f}", " ".join(f"{a:.2f}" for a in r["acceptance"][:4]), ident)
    for name, a in [("all", result["aggregate"])] + list(result["by_category"].items()):
        t.add_row(f"[bold]{name}[/]", "", str(a["tokens"]), f"{a['plain_tok_s']:.1f}", f"{a['mtp_tok_s']:.1f}",
                  f"{a['speedup']:.2f}x", f"{a['tau']:.2f}", "", f"{a['identical']}/{a['prompts']}")
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160).print(t)
