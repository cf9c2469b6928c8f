"""Chat templates from the GGUF, rendered in a sandbox with limits (mtpchat/render.py), and
turned into tokens so that what a user typed is never parsed as control tokens.

Masking: the template is rendered with a random sentinel in place of each message's content;
the text around the sentinels is the template's own (tokenised with control tokens parsed), the
contents are tokenised as plain text. That is only sound when the template shows each content
exactly once and unchanged, so anything else (a message left out, printed twice, or passed
through a filter such as `| upper`) is refused: the sentinel never reaches the model and the
user's text is never guessed at.
"""
from __future__ import annotations

import secrets

from .binding import Model
from .render import TemplateError, TemplateWorker

# used when a GGUF carries no template (ChatML, as SmolLM2 and Qwen use)
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_TAG = "mtpchat-sentinel"
_CACHE_MAX = 100_000   # tokenised pieces kept (each content and template piece once per session)


class ChatTemplateError(ValueError):
    pass


class ChatFormat:
    def __init__(self, model: Model):
        self.model = model
        self.source = model.chat_template() or CHATML
        try:
            self._worker = TemplateWorker(self.source)
        except TemplateError as e:
            raise ChatTemplateError(f"the model's chat template {e}") from None
        # what llama.cpp resolved (an id outside the vocabulary is never handed to it)
        self.specials = {"bos_token": model.token_text(model.bos) if model.bos >= 0 else "",
                         "eos_token": model.token_text(model.eos) if model.eos >= 0 else ""}
        self._cache: dict[tuple[str, bool, bool], list[int]] = {}

    def close(self) -> None:
        self._worker.close()

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        try:
            return self._worker.render(messages, add_generation_prompt, self.specials)
        except TemplateError as e:
            raise ChatTemplateError(f"the model's chat template {e}") from None
        except (TypeError, ValueError) as e:  # a message that is not JSON (never from mtpchat itself)
            raise ChatTemplateError(f"cannot render these messages: {e}") from None

    def _tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        key = (text, add_special, parse_special)
        toks = self._cache.get(key)
        if toks is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            toks = self._cache[key] = self.model.tokenize(text, add_special=add_special, parse_special=parse_special)
        return toks

    def content_tokens(self, text: str) -> int:
        """Tokens of a message's content as plain text (cached): what it adds to a prompt,
        the template's own tokens around it aside."""
        return len(self._tokenize(text, False, False))

    def tokens(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Template text is tokenised with special tokens parsed; message contents never are."""
        marks = [f"\x02{_TAG}-{secrets.token_hex(8)}\x03" for _ in messages]
        masked = [dict(m, content=mark) for m, mark in zip(messages, marks)]
        text = self.render(masked, add_generation_prompt)
        spans = []
        for i, (mark, m) in enumerate(zip(marks, messages)):
            n = text.count(mark)
            if n != 1:
                how = "does not appear in the prompt as written (left out or transformed)" if n == 0 \
                    else f"appears {n} times in the prompt"
                raise ChatTemplateError(
                    f"the model's chat template is not usable: message {i + 1} ({m.get('role', '?')}) {how}; "
                    f"mtpchat refuses it so that typed text can never become control tokens")
            spans.append((text.index(mark), i))
        spans.sort()
        pieces: list[tuple[str, bool]] = []   # (text, is a message content)
        pos = 0
        for start, i in spans:
            pieces.append((text[pos:start], False))
            pieces.append((messages[i]["content"], True))
            pos = start + len(marks[i])
        pieces.append((text[pos:], False))
        low = _TAG.lower()
        for piece, is_content in pieces:
            if not is_content and (low in piece.lower() or "\x02" in piece or "\x03" in piece):
                raise ChatTemplateError("the model's chat template is not usable: it prints a changed copy of a "
                                        "message; mtpchat refuses it so that typed text can never become control tokens")

        out: list[int] = []
        bos = self.specials["bos_token"]
        first = not (bos and text.startswith(bos))
        for piece, is_content in pieces:
            if not piece:
                continue
            out += self._tokenize(piece, first, not is_content)
            first = False
        return out
