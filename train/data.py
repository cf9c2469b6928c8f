"""Self-distillation data: the base model's own greedy answers to the training prompts.

Targets come from the patched llama.cpp running the base GGUF (the engine that will verify the
drafts: torch and llama.cpp greedy answers diverge on near-ties, docs/DESIGN.md §7). Each finished
prompt is appended to a JSON Lines cache at once, so an interrupted run resumes where it stopped:

    {"id": ..., "category": ..., "prompt_ids": [...], "answer_ids": [...], "stopped": true}

`prompt_ids` is the chat-templated prompt exactly as llama.cpp tokenised it; `answer_ids` ends
with the end-of-turn token when the answer finished before the token limit (`stopped`).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from .base import TrainError


class OutOfTime(Exception):
    """The time limit came while generating targets; the answers finished so far are cached."""

    def __init__(self, done: int, total: int):
        super().__init__(f"{done} of {total} prompts")
        self.done, self.total = done, total


def _late(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() >= deadline


def read_prompts(path: str | Path | None) -> list[dict]:
    """The built-in prompts, or a prompt file in the format `mtpchat bench` reads (docs/DESIGN.md §6)."""
    if path is None:
        from .prompts import builtin_prompts

        return builtin_prompts()
    from mtpchat.bench import load_prompts

    try:
        return load_prompts(str(path))
    except ValueError as e:
        raise TrainError(str(e)) from None


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


def _messages(p: dict) -> list[dict]:
    return ([{"role": "system", "content": p["system"]}] if p.get("system") else []) + \
           [{"role": "user", "content": p["prompt"]}]


def _append_answers(cache: Path, prompts: list[dict], todo: list[dict], done: list[dict], answer,
                    on_item, deadline: float | None = None) -> list[dict]:
    """Append `answer(prompt) -> (prompt_ids, answer_ids, stopped)` for every prompt in `todo`, one
    flushed line each, so that an interruption loses at most the prompt in progress. At the
    deadline (time.perf_counter()) it raises OutOfTime; `answer` returns None when the deadline
    came in the middle of an answer, which is then not cached (a cut answer is not a target)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a") as f:
        for n, p in enumerate(todo):
            got = None if _late(deadline) else answer(p)
            if got is None:
                raise OutOfTime(len(prompts) - len(todo) + n, len(prompts))
            ids, answer_ids, stopped = got
            item = {"id": p["id"], "category": p.get("category", "other"), "prompt_ids": list(ids),
                    "answer_ids": answer_ids, "stopped": stopped}
            f.write(json.dumps(item) + "\n")
            f.flush()
            done.append(item)
            if on_item:
                on_item(len(prompts) - len(todo) + n + 1, len(prompts))
    return done


def generate_gguf(gguf: str | Path, prompts: list[dict], cache: str | Path, *, max_tokens: int = 256,
                  n_ctx: int = 2048, on_item: Callable[[int, int], None] | None = None,
                  n_threads: int | None = None, deadline: float | None = None) -> list[dict]:
    """Greedy answers of the base GGUF for every prompt not yet in `cache`; returns all examples.
    Prompts are formatted exactly as `mtpchat run` formats them (mtpchat.chat.ChatFormat).
    Raises OutOfTime at `deadline` (a time.perf_counter()), with the finished answers cached."""
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
    # llama.cpp only when there is something to generate: a burst on a machine without a
    # llama.cpp build trains from committed targets
    from mtpchat.chat import ChatFormat, ChatTemplateError
    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY

    eng = Engine(gguf, mtp=False, n_ctx=n_ctx, n_threads=n_threads)
    try:
        if not eng.model.chat_template():
            raise TrainError(f"{gguf} has no chat template: cannot format the prompts")
        chat = ChatFormat(eng.model)
        eot = eng.model.end_of_turn

        def answer(p):
            try:
                ids = chat.tokens(_messages(p))
            except ChatTemplateError as e:
                raise TrainError(str(e)) from None
            limit = min(max_tokens, n_ctx - len(ids) - 2)
            answer_ids = []
            for t in eng.generate(ids, GREEDY, max_tokens=limit):
                if _late(deadline):
                    return None
                answer_ids.append(t.id)
            stopped = len(answer_ids) < limit
            if stopped and eot >= 0:
                answer_ids.append(int(eot))
            return ids, answer_ids, stopped

        return _append_answers(cache, prompts, todo, done, answer, on_item, deadline)
    finally:
        eng.close()


def generate_torch(model, tokenizer, prompts: list[dict], cache: str | Path, *, max_tokens: int = 256,
                   on_item=None, deadline: float | None = None) -> list[dict]:
    """Fallback for a Hugging Face base without a GGUF: greedy answers from torch. They can differ
    from what llama.cpp will verify on near-ties, so a GGUF of the same model is better."""
    import torch

    cache = Path(cache)
    done = read_cache(cache)
    have = {d["id"] for d in done}
    todo = [p for p in prompts if p["id"] not in have]
    eot = tokenizer.eos_token_id

    def answer(p):
        ids = tokenizer.apply_chat_template(_messages(p), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids], device=model.device), max_new_tokens=max_tokens,
                                 do_sample=False)
        answer_ids = out[0, len(ids):].tolist()
        return ids, answer_ids, bool(answer_ids) and answer_ids[-1] == eot

    return _append_answers(cache, prompts, todo, done, answer, on_item, deadline)


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
