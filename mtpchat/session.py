"""A conversation with one engine: the message list, fitting it into the context, and saving it.
No terminal code here: the CLI renders what `ask` yields."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from .chat import ChatFormat
from .engine import Engine, Token
from .sampling import SamplingParams
from .stats import Stats

SAVE_VERSION = 1


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
                 max_tokens: int = 512):
        self.engine = engine
        self.chat = ChatFormat(engine.model)
        self.system = system
        self.params = params or sampling_defaults(engine.model)
        self.max_tokens = max_tokens
        self.messages: list[dict] = []
        self.last = Stats()
        self.total = Stats()
        self.dropped = 0   # turns dropped by the last ask to fit the context

    def _all(self) -> list[dict]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages

    def prompt(self) -> list[int]:
        """Tokens of the conversation, oldest turns dropped (system prompt kept) to leave room
        for an answer."""
        n_ctx = self.engine.ctx.n_ctx
        room = min(self.max_tokens, n_ctx // 4)
        self.dropped = 0
        while True:
            tokens = self.chat.tokens(self._all())
            if len(tokens) + room <= n_ctx:
                return tokens
            if len(self.messages) <= 1:
                raise PromptTooLong(f"the prompt ({len(tokens)} tokens) does not fit the context "
                                    f"({n_ctx} tokens; --ctx raises it)")
            # drop the oldest exchange
            cut = 2 if len(self.messages) > 2 and self.messages[1]["role"] == "assistant" else 1
            del self.messages[:cut]
            self.dropped += 1

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
            for tok in self.engine.generate(tokens, self.params, max_tokens=self.max_tokens, stats=self.last):
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
        data = {"version": SAVE_VERSION, "model": os.path.basename(self.engine.model.path),
                "system": self.system, "messages": self.messages}
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)

    def load(self, path: str | Path) -> None:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from None
        except ValueError:
            raise ValueError(f"{path} is not a saved conversation (invalid JSON)") from None
        msgs = data.get("messages") if isinstance(data, dict) else None
        if (data.get("version") != SAVE_VERSION if isinstance(data, dict) else True) or not isinstance(msgs, list) or not all(
                isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
                for m in msgs):
            raise ValueError(f"{path} is not a saved mtpchat conversation")
        system = data.get("system")
        self.system = system if isinstance(system, str) else None
        self.messages = msgs

