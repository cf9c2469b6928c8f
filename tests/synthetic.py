"""Random-weight models for the tests and native/bench_gate.py: a tiny llama GGUF from scratch,
random MTP parts (gated LoRA, mask embeddings, sampler) for any supported base GGUF, and a tiny
Hugging Face llama folder. Test fixtures: not part of the installed package."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mtpchat import format as F
from mtpchat.chat import CHATML
from mtpchat.convert.writer import MtpParts, write_mtp_gguf


def write_tiny_llama(path: str | Path, *, n_vocab_extra: int = 64, n_embd: int = 64, n_layer: int = 2,
                     n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, n_ctx: int = 512,
                     seed: int = 0) -> Path:
    """A llama-architecture F32 GGUF with random weights and a byte-level SPM vocabulary
    (<unk>, <s>, </s>, <|im_start|>, <|im_end|>, 256 byte tokens, then `n_vocab_extra` letters)."""
    from gguf import GGUFWriter, TokenType

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    extra = (["▁" + c for c in letters] + letters)[:n_vocab_extra]
    tokens += extra
    types += [TokenType.NORMAL] * len(extra)
    n_vocab = len(tokens)

    path = Path(path)
    w = GGUFWriter(path, "llama")
    w.add_name("tiny-llama-random")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)  # all F32
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 5 + [-1.0] * 256 + [-float(i) for i in range(len(extra))])
    w.add_token_types([int(t) for t in types])
    w.add_bos_token_id(1)
    w.add_eos_token_id(4)  # <|im_end|> ends a turn
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    def rand(*shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    n_kv = n_embd // n_head * n_head_kv
    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd, scale=1.0))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("output.weight", rand(n_vocab, n_embd))
    for i in range(n_layer):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(b + "attn_q.weight", rand(n_embd, n_embd))
        w.add_tensor(b + "attn_k.weight", rand(n_kv, n_embd))
        w.add_tensor(b + "attn_v.weight", rand(n_kv, n_embd))
        w.add_tensor(b + "attn_output.weight", rand(n_embd, n_embd))
        w.add_tensor(b + "ffn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(b + "ffn_gate.weight", rand(n_ff, n_embd))
        w.add_tensor(b + "ffn_up.weight", rand(n_ff, n_embd))
        w.add_tensor(b + "ffn_down.weight", rand(n_embd, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def random_mtp_parts(base: str | Path, *, k: int = 3, rank: int = 8, alpha: float | None = None,
                     targets=F.LORA_TARGETS, seed: int = 0) -> MtpParts:
    """Random but well-scaled MTP parts fitting `base`: the gated LoRA visibly changes mask outputs."""
    from gguf import quants

    g = F.open_gguf(base)
    n_embd = g.tensors["token_embd.weight"].shape[1]
    rng = np.random.default_rng(seed)
    sample = g.rows("token_embd.weight", np.arange(256))
    lora = {}
    for name, t in g.tensors.items():
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in targets and parts[3] == "weight":
            n_out, n_in = t.shape
            a = rng.standard_normal((rank, n_in)) / np.sqrt(n_in)
            b = rng.standard_normal((n_out, rank)) * 0.5 / np.sqrt(rank)
            lora[name] = (a.astype(np.float32), b.astype(np.float32))

    def lin(n_out, n_in):
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)

    d = n_embd
    sampler = {
        "fc1.weight": lin(d, 2 * d), "fc1.bias": np.zeros(d, np.float32),
        "norm1.weight": np.ones(d, np.float32), "norm1.bias": np.zeros(d, np.float32),
        "fc2.weight": lin(d, d), "fc2.bias": np.zeros(d, np.float32),
        "norm2.weight": np.full(d, 0.1, np.float32), "norm2.bias": np.zeros(d, np.float32),
    }
    mask_embd = (rng.standard_normal((k, d)) * sample.std()).astype(np.float32)
    return MtpParts(mask_embd=mask_embd, lora=lora, rank=rank, alpha=float(alpha or 2 * rank), sampler=sampler)


def write_random_mtp(base: str | Path, out: str | Path, *, k: int = 3, rank: int = 8, seed: int = 0,
                     force: bool = True) -> Path:
    return write_mtp_gguf(base, out, random_mtp_parts(base, k=k, rank=rank, seed=seed), force=force)


def write_adapter_gguf(base: str | Path, parts: MtpParts, out: str | Path, *, gate_ids: list[int] | None) -> Path:
    """The LoRA of `parts` as a stand-alone llama.cpp adapter GGUF; with `gate_ids` it is gated."""
    from gguf import GGUFWriter

    arch = str(F.open_gguf(base).kv["general.architecture"])
    w = GGUFWriter(out, arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(parts.alpha))
    if gate_ids is not None:
        w.add_array("adapter.lora.gate_token_ids", [int(i) for i in gate_ids])
    for name in sorted(parts.lora):
        a, b = parts.lora[name]
        w.add_tensor(name + ".lora_a", np.ascontiguousarray(a, np.float32))
        w.add_tensor(name + ".lora_b", np.ascontiguousarray(b, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(out)


def smol_tokenizer_files(smol_gguf: str | Path) -> dict[str, dict]:
    """SmolLM2's Hugging Face tokenizer files rebuilt from its GGUF vocabulary and merges
    (byte-level BPE, digits split one by one), so llama.cpp's converter recognises it ("smollm")."""
    g = F.open_gguf(smol_gguf)
    tokens = [str(t) for t in g.kv["tokenizer.ggml.tokens"]]
    types = [int(t) for t in g.kv["tokenizer.ggml.token_type"]]
    merges = [str(m) for m in g.kv["tokenizer.ggml.merges"]]
    special = [i for i, t in enumerate(types) if t == 3]
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i in special],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    cfg = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "clean_up_tokenization_spaces": False,
           "bos_token": tokens[1], "eos_token": tokens[2], "unk_token": tokens[0], "pad_token": tokens[2],
           "model_max_length": 8192, "chat_template": str(g.kv.get("tokenizer.chat_template", CHATML)),
           "additional_special_tokens": [tokens[1], tokens[2]]}
    return {"tokenizer.json": tok, "tokenizer_config.json": cfg}


def write_tiny_hf_llama(folder: str | Path, smol_gguf: str | Path, *, hidden: int = 64, n_layer: int = 2,
                        n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128, seed: int = 0,
                        tie: bool = True) -> Path:
    """A random-weight Hugging Face llama folder (config.json, F32 model.safetensors, SmolLM2's
    tokenizer) small enough for tests; vocabulary 49152 as SmolLM2's."""
    import json

    from mtpchat.convert.tensorfile import write_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = smol_tokenizer_files(smol_gguf)
    n_vocab = len(files["tokenizer.json"]["model"]["vocab"])
    rng = np.random.default_rng(seed)

    def rand(*shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[-1])
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    hd = hidden // n_head
    w = {"model.embed_tokens.weight": rand(n_vocab, hidden, scale=1.0),
         "model.norm.weight": (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)}
    if not tie:
        w["lm_head.weight"] = rand(n_vocab, hidden)
    for i in range(n_layer):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        w[p + "self_attn.q_proj.weight"] = rand(n_head * hd, hidden)
        w[p + "self_attn.k_proj.weight"] = rand(n_head_kv * hd, hidden)
        w[p + "self_attn.v_proj.weight"] = rand(n_head_kv * hd, hidden)
        w[p + "self_attn.o_proj.weight"] = rand(hidden, n_head * hd)
        w[p + "mlp.gate_proj.weight"] = rand(n_ff, hidden)
        w[p + "mlp.up_proj.weight"] = rand(n_ff, hidden)
        w[p + "mlp.down_proj.weight"] = rand(hidden, n_ff)
    write_safetensors(folder / "model.safetensors", w, metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": n_ff, "num_hidden_layers": n_layer, "num_attention_heads": n_head,
              "num_key_value_heads": n_head_kv, "head_dim": hd, "hidden_act": "silu", "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tie, "vocab_size": n_vocab,
              "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32", "attention_bias": False, "mlp_bias": False}
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return folder
