"""Chat templates from the GGUF, rendered in a sandbox, and turned into tokens so that what a
user typed is never parsed as control tokens."""
from __future__ import annotations

import secrets
from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .binding import Model

# used when a GGUF carries no template (ChatML, as SmolLM2 and Qwen use)
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class ChatTemplateError(ValueError):
    pass


def _raise(msg):
    raise ChatTemplateError(f"chat template: {msg}")


class ChatFormat:
    def __init__(self, model: Model):
        self.model = model
        self.source = model.chat_template() or CHATML
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self.template = env.from_string(self.source)
        except TemplateError as e:
            raise ChatTemplateError(f"the model's chat template does not parse: {e}") from None
        vocab_tokens = {"bos_token": model.meta("tokenizer.ggml.bos_token_id"),
                        "eos_token": model.meta("tokenizer.ggml.eos_token_id")}
        self.specials = {k: (model.token_text(int(v)) if v not in (None, "") else "") for k, v in vocab_tokens.items()}

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.specials)
        except ChatTemplateError:
            raise
        except Exception as e:  # a sandbox violation or a broken template
            raise ChatTemplateError(f"the model's chat template failed: {e}") from None

    def tokens(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Template text is tokenised with special tokens parsed; message contents never are."""
        marks = [f"@@mtpchat{secrets.token_hex(6)}@@" for _ in messages]
        masked = [dict(m, content=mark) for m, mark in zip(messages, marks)]
        text = self.render(masked, add_generation_prompt)
        out: list[int] = []
        bos = self.specials["bos_token"]
        first = not (bos and text.startswith(bos))
        for mark, m in zip(marks, messages):
            head, sep, text = text.partition(mark)
            if head:
                out += self.model.tokenize(head, add_special=first, parse_special=True)
                first = False
            if sep:
                out += self.model.tokenize(m["content"], add_special=first, parse_special=False)
                first = False
        if text:
            out += self.model.tokenize(text, add_special=first, parse_special=True)
        return out
