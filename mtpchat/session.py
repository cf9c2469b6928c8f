"""A conversation with one engine: the message list, fitting it into the context, and saving it.
No terminal code here: the CLI renders what `ask` yields."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from . import cleanup
from .chat import ChatFormat
from .engine import Engine, Token
from .sampling import SamplingParams
from .stats import Stats

SAVE_VERSION = 1
MAX_CHAT_FILE = 16 << 20    # bytes; a conversation that fits any context is far smaller
MAX_MESSAGES = 100_000


class PromptTooLong(ValueError):
    pass


def sampling_defaults(model) -> SamplingParams:
    """llama-cli's defaults, overridden by the GGUF's general.sampling.* keys when present."""
    p = SamplingParams()
    keys = {"temp": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
            "penalty_repeat": "repeat_penalty", "penalty_last_n": "repeat_last_n"}
    found = {}
    for key, field in keys.items():
        v = model.meta(f"general.sampling.{key}")
        if v is None:
            continue
        try:
            found[field] = int(v) if field in ("top_k", "repeat_last_n") else float(v)
        except ValueError:
            continue
    return replace(p, **found)


class Session:
    def __init__(self, engine: Engine, *, system: str | None = None, params: SamplingParams | None = None,
                 max_tokens: int = 512, stop: tuple[str, ...] = ()):
        self.engine = engine
        self.stop = tuple(stop)   # strings that end an answer (not printed), as llama-cli's -r
        self.chat = ChatFormat(engine.model)
        self.system = system
        self.params = params or sampling_defaults(engine.model)
        self.max_tokens = max_tokens
        self.messages: list[dict] = []
        self.last = Stats()
        self.total = Stats()
        self.dropped = 0   # turns dropped by the last ask to fit the context

    def _system(self) -> list[dict]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def _all(self) -> list[dict]:
        return self._system() + self.messages

    def prompt(self) -> list[int]:
        """Tokens of the conversation, oldest turns dropped (system prompt kept) to leave room
        for an answer.

        Linear in the conversation's length: the newest messages that fit are found from their
        (cached) content token counts plus the template's measured tokens per message, and only
        that window is rendered and tokenised; a wrong guess costs a render of the window, never
        one of the whole conversation per dropped turn."""
        n_ctx = self.engine.ctx.n_ctx
        budget = n_ctx - min(self.max_tokens, n_ctx // 4)
        msgs, system = self.messages, self._system()
        self.dropped = 0
        start = self._estimate_start(budget)
        while True:
            tokens = self._tokens(system, start)
            if len(tokens) <= budget:
                break
            if start >= len(msgs) - 1:
                raise PromptTooLong(f"the prompt ({len(tokens)} tokens) does not fit the context "
                                    f"({n_ctx} tokens; --ctx raises it)")
            start = self._next_start(start)
        while start > 0:  # the guess may have dropped more than needed: take exchanges back
            prev = self._prev_start(start)
            more = self._tokens(system, prev)
            if len(more) > budget:
                break
            start, tokens = prev, more
        if start:
            self.dropped = max(1, sum(m["role"] == "user" for m in msgs[:start]))
            del msgs[:start]
        return tokens

    def _tokens(self, system: list[dict], start: int) -> list[int]:
        window = system + self.messages[start:]
        tokens = self.chat.tokens(window)
        content = sum(self.chat.content_tokens(m["content"]) for m in window)
        if window:  # the template's own tokens per message, for the next guess
            self._per_message = max(0.0, (len(tokens) - content) / len(window))
        return tokens

    def _estimate_start(self, budget: int) -> int:
        """The first message of the newest run of messages that should fit `budget` tokens."""
        msgs = self.messages
        per = getattr(self, "_per_message", 8.0)
        total = sum(self.chat.content_tokens(m["content"]) + per for m in self._system()) + 2 * per
        start = len(msgs) - 1
        for i in range(len(msgs) - 1, -1, -1):
            total += self.chat.content_tokens(msgs[i]["content"]) + per
            if total > budget:
                break
            start = i
        while start < len(msgs) - 1 and msgs[start]["role"] != "user":
            start += 1   # a window starts with a user message
        return max(start, 0)

    def _next_start(self, start: int) -> int:
        start += 1
        while start < len(self.messages) - 1 and self.messages[start]["role"] != "user":
            start += 1
        return start

    def _prev_start(self, start: int) -> int:
        start -= 1
        while start > 0 and self.messages[start]["role"] != "user":
            start -= 1
        return start

    def ask(self, text: str) -> Iterator[Token]:
        self.messages.append({"role": "user", "content": text})
        try:
            tokens = self.prompt()
        except PromptTooLong:
            self.messages.pop()
            raise
        self.last = Stats()
        answer = []
        try:
            for tok in self.engine.generate(tokens, self.params, max_tokens=self.max_tokens, stats=self.last,
                                            stop=self.stop):
                answer.append(tok.text)
                yield tok
        finally:
            # an interrupted answer stays in the conversation, as far as it got
            self.messages.append({"role": "assistant", "content": "".join(answer)})
            self.engine.recover()
            self.total.merge(self.last)

    def clear(self) -> None:
        self.messages = []

    def save(self, path: str | Path) -> None:
        """Write the conversation as JSON (atomically: a failure leaves no file behind)."""
        data = {"version": SAVE_VERSION, "model": os.path.basename(self.engine.model.path),
                "system": self.system, "messages": self.messages}
        try:
            cleanup.write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        except OSError as e:
            raise ValueError(f"cannot save to {path}: {e.strerror}") from None

    def load(self, path: str | Path) -> None:
        """Read a saved conversation; anything else is one ValueError line, the session unchanged."""
        self.system, self.messages = read_chat_file(path)


def read_chat_file(path: str | Path) -> tuple[str | None, list[dict]]:
    """(system prompt, messages) of a file written by Session.save. Chat files are untrusted:
    size-capped, parsed without recursion blow-ups, and checked field by field."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise ValueError(f"{path} is a folder, not a saved conversation")
        if size > MAX_CHAT_FILE:
            raise ValueError(f"{path} is {size / (1 << 20):.0f} MiB: saved conversations are at most "
                             f"{MAX_CHAT_FILE >> 20} MiB")
        raw = p.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):   # invalid JSON or UTF-8, or nesting deeper than Python's stack
        raise ValueError(f"{path} is not a saved conversation (invalid JSON)") from None
    bad = ValueError(f"{path} is not a saved mtpchat conversation")
    if not isinstance(data, dict) or type(data.get("version")) is not int or data["version"] != SAVE_VERSION:
        raise bad
    msgs, system = data.get("messages"), data.get("system")
    if not isinstance(msgs, list) or len(msgs) > MAX_MESSAGES or not (system is None or isinstance(system, str)):
        raise bad
    out = []
    for m in msgs:
        if not (isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)):
            raise bad
        out.append({"role": m["role"], "content": m["content"]})
    try:
        for text in [system or ""] + [m["content"] for m in out]:
            text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{path} holds text that is not valid Unicode") from None
    return system, out
