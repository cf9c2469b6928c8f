"""The trainable parts around a frozen base model: gated LoRA on the block linears, k mask
embeddings and the sampler head (docs/DESIGN.md §1.2, §1.3), plus the two passes that training runs."""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mtpchat.convert.checkpoint import HF_TO_GGUF

from .layout import Layout, additive

TARGETS = tuple(HF_TO_GGUF)   # every linear layer of a block, by its Hugging Face name


class Gate:
    """Per-token gate shared by every gated LoRA layer. None: adapter off (exact base outputs);
    True: every token is a mask; a (1, S, 1) tensor: 1 on mask tokens, 0 on ordinary ones."""

    def __init__(self):
        self.value = None


class GatedLoRALinear(nn.Module):
    """y = W x + g * (alpha/r) * B A x. The base layer is untouched, so with g = 0 (or the gate
    off) a token's output is the base output bit for bit."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, gate: Gate):
        super().__init__()
        self.base = base
        self.gate = gate
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # PEFT's init: B = 0 so training starts at the base

    def forward(self, x):
        y = self.base(x)
        g = self.gate.value
        if g is None:
            return y
        h = x.to(self.lora_A.dtype) @ self.lora_A.T
        if g is not True:
            h = h * g
        return y + ((h @ self.lora_B.T) * self.scale).to(y.dtype)


class Sampler(nn.Module):
    """out = z + LN2(SiLU(fc2(LN1(SiLU(fc1([E(prev); z])))))), LN2's weight zero at the start so an
    untrained head is exactly the plain mask head."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.fc1 = nn.Linear(2 * d, d)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.fc2 = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        nn.init.zeros_(self.norm2.weight)

    def forward(self, prev_emb, z):
        h = self.norm1(F.silu(self.fc1(torch.cat([prev_emb, z], dim=-1))))
        return z + self.norm2(F.silu(self.fc2(h)))


def _cache_kwarg(module) -> str:
    # transformers 5.x renamed past_key_values to cache (the old name still works, with a warning)
    import inspect

    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


class MtpModel(nn.Module):
    def __init__(self, base, *, n_masks: int, rank: int, alpha: float, targets=TARGETS, seed: int = 0):
        super().__init__()
        self.base = base
        self.inner = base.model          # the decoder stack; its output is after the final norm
        self.gate = Gate()
        self.rank, self.alpha, self.n_masks, self.targets = rank, float(alpha), n_masks, tuple(targets)
        for p in base.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lora = self._wrap_linears()
            emb = self.embed_weight.float()
            # distinct random rows at the scale of real token embeddings
            rows = torch.randn(n_masks, emb.shape[1], generator=g).to(emb.device, emb.dtype) * emb.std() + emb.mean(0)
            self.mask_emb = nn.Parameter(rows)
            self.sampler = Sampler(emb.shape[1])

    # -- construction ---------------------------------------------------------------------

    def _wrap_linears(self) -> dict[str, GatedLoRALinear]:
        wrapped = {}
        for name, module in list(self.inner.layers.named_modules()):
            for attr in self.targets:
                child = getattr(module, attr, None)
                if isinstance(child, nn.Linear):
                    lin = GatedLoRALinear(child, self.rank, self.alpha, self.gate)
                    setattr(module, attr, lin)
                    wrapped[f"layers.{name}.{attr}"] = lin
        if not wrapped:
            raise ValueError("no linear layers to adapt were found in the base model")
        return wrapped

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- pieces of the model ----------------------------------------------------------------

    @property
    def embed_weight(self) -> torch.Tensor:
        return self.inner.embed_tokens.weight

    @property
    def vocab_size(self) -> int:
        return self.embed_weight.shape[0]

    @property
    def device(self):
        return self.embed_weight.device

    @property
    def dtype(self):
        return self.embed_weight.dtype

    def embed_scale(self):
        # gemma scales embeddings inside its embedding module; llama.cpp applies the same scale to
        # every row of token_embd, so mask rows are stored unscaled and scaled here
        return getattr(self.inner.embed_tokens, "embed_scale", 1.0)

    def unembed(self, h: torch.Tensor, cols: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 logits over the base vocabulary (mask ids are never targets and are banned), or
        over the token ids `cols` only (the training loss's vocabulary subset)."""
        w = self.base.lm_head.weight[: self.vocab_size]
        if cols is not None:
            w = w[cols]
        logits = F.linear(h.to(w.dtype), w).float()
        cap = getattr(self.base.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def sample_head(self, prev: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Sampler output for mask latents z given previous token ids (raw input embedding rows)."""
        return self.sampler(self.embed_weight[prev].float(), z.float())

    @contextmanager
    def gated(self, value):
        old, self.gate.value = self.gate.value, value
        try:
            yield
        finally:
            self.gate.value = old

    # -- passes ------------------------------------------------------------------------------

    def _run(self, embeds, pos, allowed, cache=None):
        kw = {_cache_kwarg(self.inner): cache} if cache is not None else {}
        out = self.inner(inputs_embeds=embeds[None], position_ids=pos[None].to(self.device),
                         attention_mask=additive(allowed, self.dtype).to(self.device), use_cache=True, **kw)
        new_cache = getattr(out, "cache", None)
        if new_cache is None:
            new_cache = getattr(out, "past_key_values", None)
        return out.last_hidden_state[0], new_cache

    def ordinary_pass(self, lay: Layout):
        """Ordinary tokens without the adapter and without gradients: exact base hidden states
        (after the final norm) and their KV cache for the mask pass."""
        with torch.no_grad(), self.gated(None):
            emb = self.inner.embed_tokens(lay.ids.to(self.device))
            return self._run(emb, lay.pos, lay.ordinary_allowed())

    def mask_embeds(self, mask_j: torch.Tensor) -> torch.Tensor:
        return (self.mask_emb[mask_j.to(self.device)] * self.embed_scale()).to(self.dtype)

    def mask_pass(self, lay: Layout, cache) -> torch.Tensor:
        """Mask tokens (adapter on for all of them) against the ordinary KV cache: latents z (M, d)."""
        with self.gated(True):
            h, _ = self._run(self.mask_embeds(lay.mask_j), lay.mask_pos, lay.mask_allowed(), cache)
        return h

    def joint_pass(self, lay: Layout, *, adapter: bool = True) -> torch.Tensor:
        """One pass over [ordinary, masks] with the per-token gate: the reference for the two-pass
        split (tests) and what the attention rules describe. Returns hidden states (T+M, d)."""
        T, M = lay.ids.numel(), lay.mask_j.numel()
        emb = torch.cat([self.inner.embed_tokens(lay.ids.to(self.device)), self.mask_embeds(lay.mask_j)])
        gate = torch.cat([torch.zeros(T), torch.ones(M)]).view(1, -1, 1).to(self.device)
        with self.gated(gate if adapter else None):
            h, _ = self._run(emb, torch.cat([lay.pos, lay.mask_pos]), lay.joint_allowed())
        return h
