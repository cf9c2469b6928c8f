"""Self-distillation data: the base model's own greedy answers to the training prompts.

Targets come from the patched llama.cpp running the base GGUF (the engine that will verify the
drafts: torch and llama.cpp greedy answers diverge on near-ties, DESIGN.md §7). Each finished
prompt is appended to a JSON Lines cache at once, so an interrupted run resumes where it stopped:

    {"id": ..., "category": ..., "prompt_ids": [...], "answer_ids": [...], "stopped": true}

`prompt_ids` is the chat-templated prompt exactly as llama.cpp tokenised it; `answer_ids` ends
with the end-of-turn token when the answer finished before the token limit (`stopped`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from .base import TrainError


def read_prompts(path: str | Path | None) -> list[dict]:
    """The built-in prompts, or a prompt file in the format `mtpchat bench` reads (DESIGN.md §6)."""
    if path is None:
        from .prompts import builtin_prompts

        return builtin_prompts()
    from mtpchat.bench import load_prompts

    try:
        return load_prompts(str(path))
    except ValueError as e:
        raise TrainError(str(e)) from None


def render_chat(template: str, prompt: str, system: str | None, bos: str = "", eos: str = "") -> str:
    """The model's own Jinja chat template with one user turn and the generation prompt."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise TrainError(f"chat template: {msg}")

    env.globals["raise_exception"] = raise_exception
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos, eos_token=eos)


def read_cache(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by an interruption: everything before it is good
    return out


def cache_name(base: str | Path, max_tokens: int, prompts: list[dict]) -> str:
    h = hashlib.sha256(json.dumps([p["prompt"] for p in prompts]).encode()).hexdigest()[:8]
    return f"{Path(str(base)).stem}.n{max_tokens}.{h}.jsonl"


def generate_gguf(gguf: str | Path, prompts: list[dict], cache: str | Path, *, max_tokens: int = 256,
                  n_ctx: int = 2048, on_item: Callable[[int, int], None] | None = None,
                  n_threads: int | None = None) -> list[dict]:
    """Greedy answers of the base GGUF for every prompt not yet in `cache`; returns all examples."""

    import llama_cpp.llama_cpp as C

    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY

    cache = Path(cache)
    done = read_cache(cache)
    # a line cut by an interruption: rewrite the file without it
    if cache.exists() and len(cache.read_text().splitlines()) != len(done):
        cache.write_text("".join(json.dumps(d) + "\n" for d in done))
    have = {d["id"] for d in done}
    todo = [p for p in prompts if p["id"] not in have]
    if on_item:
        on_item(len(prompts) - len(todo), len(prompts))
    if not todo:
        return [d for d in done if d["id"] in {p["id"] for p in prompts}]
    eng = Engine(gguf, mtp=False, n_ctx=n_ctx, n_threads=n_threads)
    try:
        template = eng.model.chat_template()
        if not template:
            raise TrainError(f"{gguf} has no chat template: cannot format the prompts")
        eot = C.llama_vocab_eot(eng.model.vocab)
        eot = eot if eot >= 0 else C.llama_vocab_eos(eng.model.vocab)
        bos_id = C.llama_vocab_bos(eng.model.vocab)
        bos = eng.model.piece(bos_id).decode("utf-8", "replace") if bos_id >= 0 else ""
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("a") as f:
            for n, p in enumerate(todo):
                text = render_chat(template, p["prompt"], p.get("system"), bos=bos)
                ids = eng.model.tokenize(text, add_special=True, parse_special=True)
                limit = min(max_tokens, n_ctx - len(ids) - 2)
                answer = [t.id for t in eng.generate(ids, GREEDY, max_tokens=limit)]
                stopped = len(answer) < limit
                if stopped and eot >= 0:
                    answer.append(int(eot))
                item = {"id": p["id"], "category": p.get("category", "other"), "prompt_ids": ids,
                        "answer_ids": answer, "stopped": stopped}
                f.write(json.dumps(item) + "\n")
                f.flush()
                done.append(item)
                if on_item:
                    on_item(len(prompts) - len(todo) + n + 1, len(prompts))
    finally:
        eng.close()
    return done


def generate_torch(model, tokenizer, prompts: list[dict], cache: str | Path, *, max_tokens: int = 256,
                   on_item=None) -> list[dict]:
    """Fallback for a Hugging Face base without a GGUF: greedy answers from torch. They can differ
    from what llama.cpp will verify on near-ties, so a GGUF of the same model is better."""
    import torch

    cache = Path(cache)
    done = read_cache(cache)
    have = {d["id"] for d in done}
    todo = [p for p in prompts if p["id"] not in have]
    eot = tokenizer.eos_token_id
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a") as f:
        for n, p in enumerate(todo):
            msgs = ([{"role": "system", "content": p["system"]}] if p.get("system") else []) + \
                   [{"role": "user", "content": p["prompt"]}]
            ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict):
                ids = ids["input_ids"]
            with torch.no_grad():
                out = model.generate(torch.tensor([ids], device=model.device), max_new_tokens=max_tokens,
                                     do_sample=False)
            answer = out[0, len(ids):].tolist()
            stopped = bool(answer) and answer[-1] == eot
            item = {"id": p["id"], "category": p.get("category", "other"), "prompt_ids": list(ids),
                    "answer_ids": answer, "stopped": stopped}
            f.write(json.dumps(item) + "\n")
            f.flush()
            done.append(item)
            if on_item:
                on_item(len(prompts) - len(todo) + n + 1, len(prompts))
    return done


def split(examples: list[dict], dev_fraction: float = 0.05, min_dev: int = 1) -> tuple[list[dict], list[dict]]:
    """Held-out slice chosen by a hash of the id: stable when the cache grows or is reordered."""
    def h(e):
        return int(hashlib.sha256(e["id"].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    usable = [e for e in examples if len(e["answer_ids"]) >= 3]
    if len(usable) < 2:
        raise TrainError("not enough training data: fewer than two answers with 3 or more tokens")
    ranked = sorted(usable, key=h)
    n_dev = max(min_dev, round(len(usable) * dev_fraction))
    dev_ids = {e["id"] for e in ranked[:n_dev]}
    return [e for e in usable if e["id"] not in dev_ids], [e for e in usable if e["id"] in dev_ids]
