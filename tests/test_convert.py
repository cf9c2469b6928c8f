"""`mtpchat convert`: checkpoint folder + base (GGUF or Hugging Face) → one MTP GGUF, and the
errors it gives for bad input."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import typer
from synthetic import random_mtp_parts, write_tiny_hf_llama, write_tiny_llama
from typer.testing import CliRunner

from mtpchat import binding as B
from mtpchat import format as F
from mtpchat.convert import checkpoint as C
from mtpchat.convert.command import convert, register
from mtpchat.convert.tensorfile import TensorFileError, read_safetensors, write_safetensors
from mtpchat.convert.writer import write_mtp_gguf

TRAINED = Path(__file__).resolve().parent.parent / "train" / "checkpoints" / "smollm2-135m-k4"


def make_app():
    app = typer.Typer()

    @app.callback()
    def main():  # a callback keeps `convert` a subcommand, as in the real CLI
        pass

    register(app)
    return app


def cli(*args):
    return CliRunner().invoke(make_app(), ["convert", *map(str, args)])


def make_checkpoint(folder, base, *, k=3, rank=8, seed=1, targets=F.LORA_TARGETS):
    """A random checkpoint fitting the GGUF `base`, and the parts (GGUF layout) it holds."""
    parts = random_mtp_parts(base, k=k, rank=rank, seed=seed, targets=targets)
    facts = C.base_facts(F.open_gguf(base))
    C.write_checkpoint(folder, parts, arch=facts["arch"], vocab_size=facts["n_vocab"], n_head=facts["n_head"],
                       n_head_kv=facts["n_head_kv"], base_model=str(base))
    return parts


def logits(path, tokens, adapter=False):
    model = B.Model(path)
    ctx = B.Context(model, n_ctx=256, n_batch=64)
    if adapter:
        a = B.Adapter(model)
        ctx.set_adapter(a)
    n = ctx.decode(tokens, list(range(len(tokens))), outputs=[1] * len(tokens))
    out = ctx.logits(n).copy()
    ctx.close()
    model.close()
    return out


def assert_mtp_file(out, base, parts, *, k):
    """Metadata, mask tokens, and ordinary-token logits of `out` equal to the base model's."""
    g, gb = F.open_gguf(out), F.open_gguf(base)
    info = F.read_mtp_info(g)
    n_vocab = len(gb.kv["tokenizer.ggml.tokens"])
    assert info.n_masks == k and info.mask_ids == list(range(n_vocab, n_vocab + k))
    assert info.lora_rank == parts.rank and info.lora_alpha == parts.alpha
    assert list(g.kv["tokenizer.ggml.tokens"][n_vocab:]) == [F.mask_token_text(j + 1) for j in range(k)]
    for name, t in gb.tensors.items():  # every base tensor is still there, in its own type
        assert g.tensors[name].type == t.type
    model = B.Model(out)
    assert model.n_vocab == n_vocab + k
    assert [model.token_text(i) for i in info.mask_ids] == [F.mask_token_text(j + 1) for j in range(k)]
    model.close()
    ordinary = [5, 70, 300, 9, 12, 200, 33]
    toks = ordinary + info.mask_ids
    n = len(ordinary)
    # the file's own model is the base's: same batch, same logits
    assert np.abs(logits(out, ordinary)[:, :n_vocab] - logits(base, ordinary)).max() <= 1e-5
    # gating: with the adapter on, ordinary rows keep those logits. Compared within one batch
    # shape, since some CPU kernels (K-quants on AVX-512) round differently by batch size
    mtp_logits = logits(out, toks, adapter=True)
    plain = logits(out, toks)
    assert np.abs(mtp_logits[:n] - plain[:n]).max() <= 1e-5
    assert np.abs(mtp_logits[n:] - plain[n:]).max() > 1e-3  # and the LoRA is live on the masks
    return info


# --- safetensors -----------------------------------------------------------------------------

def test_safetensors_roundtrip_and_bf16(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_safetensors(tmp_path / "x.safetensors", {"a": a, "h": a.astype(np.float16), "i": np.arange(3)})
    got = read_safetensors(tmp_path / "x.safetensors")
    assert np.array_equal(got["a"], a) and got["h"].dtype == np.float16 and list(got["i"]) == [0, 1, 2]
    # BF16 written by hand (numpy has no bfloat16): the top half of each float32
    raw = (a.view(np.uint32) >> 16).astype("<u2").tobytes()
    head = json.dumps({"b": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, len(raw)]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(len(head).to_bytes(8, "little") + head + raw)
    assert np.array_equal(read_safetensors(tmp_path / "b.safetensors")["b"], a)


@pytest.mark.parametrize("damage", ["short", "offsets", "header", "tiny"])
def test_safetensors_reader_rejects_damage(tmp_path, damage):
    p = write_safetensors(tmp_path / "x.safetensors", {"a": np.ones((4, 4), np.float32)})
    data = p.read_bytes()
    if damage == "short":
        data = data[:-10]
    elif damage == "offsets":
        data = data.replace(b"[0,64]", b"[0,99]")
    elif damage == "header":
        data = (10**12).to_bytes(8, "little") + data[8:]
    else:
        data = data[:5]
    p.write_bytes(data)
    with pytest.raises(TensorFileError):
        read_safetensors(p)


# --- conversions -----------------------------------------------------------------------------

def test_tiny_gguf_base(tmp_path, tiny_base):
    parts = make_checkpoint(tmp_path / "ck", tiny_base)
    out = tmp_path / "out" / "tiny-mtp.gguf"
    r = cli(tmp_path / "ck", "--base", tiny_base, "-o", out)
    assert r.exit_code == 0, r.output
    assert str(out) in r.output.replace("\n", "") and "masks: 3" in r.output
    # the checkpoint (HF layout, Q/K rows un-permuted) maps back to exactly the parts it came from
    ref = write_mtp_gguf(tiny_base, tmp_path / "ref.gguf", parts)
    g, gr = F.open_gguf(out), F.open_gguf(ref)
    assert set(g.tensors) == set(gr.tensors)
    for name, t in gr.tensors.items():
        assert np.array_equal(np.asarray(g.tensors[name].data), np.asarray(t.data)), name
    assert_mtp_file(out, tiny_base, parts, k=3)
    assert sorted(os.listdir(out.parent)) == ["tiny-mtp.gguf"]  # no temporary files left


def test_qk_permutation_is_applied(tmp_path, tiny_base):
    """An unpermuted q/k lora_B would be a silent quality bug: the file must hold the permuted rows."""
    parts = make_checkpoint(tmp_path / "ck", tiny_base)
    convert(str(tmp_path / "ck"), str(tiny_base), tmp_path / "o.gguf")
    hf = read_safetensors(tmp_path / "ck" / C.ADAPTER)
    g = F.open_gguf(tmp_path / "o.gguf")
    qb = hf["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    got = np.asarray(g.tensors["blk.0.attn_q.weight.lora_b"].data)
    assert not np.array_equal(got, qb)
    assert np.array_equal(got, C.permute_rows(qb, 4)) and np.array_equal(got, parts.lora["blk.0.attn_q.weight"][1])
    vb = hf["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    assert np.array_equal(np.asarray(g.tensors["blk.0.attn_v.weight.lora_b"].data), vb)


def test_smollm2_gguf_base(tmp_path, smol_path):
    parts = make_checkpoint(tmp_path / "ck", smol_path, k=4, rank=4, targets=("attn_q", "attn_k", "ffn_down"))
    s = convert(str(tmp_path / "ck"), str(smol_path), tmp_path / "smol-mtp.gguf")
    assert s.n_masks == 4 and s.arch == "llama" and s.n_lora == 90
    g = F.open_gguf(s.out)
    assert g.tensors["token_embd.weight"].type.name == "Q8_0"  # mask rows added in the base's own type
    rows = g.rows("token_embd.weight", np.array(s.mask_ids))
    assert np.abs(rows - parts.mask_embd).max() < 0.02 * np.abs(parts.mask_embd).max()
    assert_mtp_file(s.out, smol_path, parts, k=4)


def test_trained_checkpoint_still_converts(tmp_path, smol_path):
    """The version-1 checkpoint trained in this repository reads, checks and converts onto its base."""
    ck = C.load_checkpoint(TRAINED)
    assert (ck.arch, ck.n_masks, ck.rank, ck.alpha) == ("llama", 4, 16, 32.0)
    s = convert(str(TRAINED), str(smol_path), tmp_path / "smol-k4.gguf")
    assert s.n_masks == 4 and s.n_lora == 30 * 7 and s.rank == 16
    info = F.read_mtp_info(F.open_gguf(s.out))
    assert info.mask_ids == s.mask_ids and info.lora_alpha == 32.0


def test_k_quant_base(tmp_path):
    """K-quant embedding/output rows are quantised with ggml's own code."""
    from mtpchat.convert.hf_base import quantize

    f32 = write_tiny_llama(tmp_path / "t.gguf", n_embd=256, n_head=4, n_head_kv=2, n_ff=256)
    base = tmp_path / "t-q4km.gguf"
    quantize(f32, base, "q4_k_m")
    gb = F.open_gguf(base)
    types = {gb.tensors[n].type.name for n in ("token_embd.weight", "output.weight")}
    assert types <= {"Q4_K", "Q5_K", "Q6_K"}, types
    parts = make_checkpoint(tmp_path / "ck", base, k=2, rank=4)
    s = convert(str(tmp_path / "ck"), str(base), tmp_path / "o.gguf")
    rows = F.open_gguf(s.out).rows("token_embd.weight", np.array(s.mask_ids))
    assert np.abs(rows - parts.mask_embd).max() < 0.1 * np.abs(parts.mask_embd).max()
    assert_mtp_file(s.out, base, parts, k=2)


# --- Hugging Face base (needs torch, transformers, sentencepiece: the train extra) -------------

@pytest.fixture(scope="module")
def hf_ready():
    from mtpchat.convert.hf_base import missing_modules

    if missing := missing_modules():
        pytest.skip(f"Hugging Face base conversion needs {', '.join(missing)} (pip install 'mtpchat[train]')")


def hf_checkpoint(folder, hf, *, k=3, rank=4, seed=3):
    """A checkpoint in the trainer's format with random LoRA in Hugging Face layout, written
    straight from numpy (not through convert's own helpers)."""
    cfg = json.loads((hf / "config.json").read_text())
    d, n_layer, n_ff = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    n_q, n_kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    rng = np.random.default_rng(seed)
    dims = {"q_proj": (n_q, d), "k_proj": (n_kv, d), "v_proj": (n_kv, d), "o_proj": (d, n_q),
            "gate_proj": (n_ff, d), "up_proj": (n_ff, d), "down_proj": (d, n_ff)}
    lora = {}
    for i in range(n_layer):
        for mod, (n_out, n_in) in dims.items():
            grp = "mlp" if mod in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            stem = f"base_model.model.model.layers.{i}.{grp}.{mod}"
            lora[stem + ".lora_A.weight"] = (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32)
            lora[stem + ".lora_B.weight"] = (rng.standard_normal((n_out, rank)) / np.sqrt(rank)).astype(np.float32)
    sampler = {"fc1.weight": rng.standard_normal((d, 2 * d)).astype(np.float32), "fc2.weight": np.eye(d, dtype=np.float32)}
    for n in ("fc1.bias", "norm1.bias", "fc2.bias", "norm2.bias"):
        sampler[n] = np.zeros(d, np.float32)
    sampler["norm1.weight"] = sampler["norm2.weight"] = np.ones(d, np.float32)
    masks = rng.standard_normal((k, d)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "adapter_model.safetensors", lora)
    write_safetensors(folder / "sampler.safetensors", sampler)
    write_safetensors(folder / "mask_embeddings.safetensors", {"mask_embeddings": masks})
    config = {"format": "mtpchat-checkpoint", "format_version": 1, "base_model": "tiny-hf-llama",
              "architecture": "llama", "hidden_size": d, "vocab_size": cfg["vocab_size"], "n_masks": k,
              "mask_tokens": [f"<|mtp_mask_{j + 1}|>" for j in range(k)],
              "lora": {"rank": rank, "alpha": 2.0 * rank, "target_modules": list(dims)},
              "sampler": {"type": "mlp2", "input": "concat(embed(prev),hidden)", "activation": "silu",
                          "norm": "layernorm", "norm_eps": 1e-5, "residual": True, "hidden_size": d}}
    (folder / "mtp_config.json").write_text(json.dumps(config))
    return lora, masks, config


def torch_reference(hf, lora, masks, alpha_over_r, tokens_ordinary, k):
    """Logits (base vocabulary) of the HF model for `ordinary + masks` with the gated LoRA applied
    to the mask positions only, in plain torch."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(hf, torch_dtype=torch.float32).eval()
    n = len(tokens_ordinary)
    gate = torch.tensor([0.0] * n + [1.0] * k)[None, :, None]
    hooks = []
    for name, mod in model.named_modules():
        key = "base_model.model." + name
        if key + ".lora_A.weight" in lora:
            A = torch.from_numpy(lora[key + ".lora_A.weight"])
            Bm = torch.from_numpy(lora[key + ".lora_B.weight"])
            hooks.append(mod.register_forward_hook(
                lambda m, inp, out, A=A, Bm=Bm: out + gate * alpha_over_r * (inp[0] @ A.T @ Bm.T)))
    with torch.no_grad():
        emb = model.get_input_embeddings()(torch.tensor([tokens_ordinary]))
        x = torch.cat([emb, torch.from_numpy(masks)[None]], dim=1)
        out = model(inputs_embeds=x).logits[0].numpy()
    for h in hooks:
        h.remove()
    return out


def test_hf_base_in_checkpoint_matches_torch(tmp_path, smol_path, hf_ready):
    src = tmp_path / "ck"
    write_tiny_hf_llama(src, smol_path)  # full base weights inside the checkpoint folder
    lora, masks, cfg = hf_checkpoint(src, src)
    out = tmp_path / "tiny-hf-mtp.gguf"
    r = cli(src, "-o", out)
    assert r.exit_code == 0, r.output
    g = F.open_gguf(out)
    assert g.kv["tokenizer.ggml.pre"] == "smollm" and g.tensors["token_embd.weight"].type.name == "F32"
    info = F.read_mtp_info(g)
    ordinary = B.Model(out).tokenize("Hello world, 12 cats")
    got = logits(out, ordinary + info.mask_ids, adapter=True)[:, :cfg["vocab_size"]]
    want = torch_reference(src, lora, masks, 2.0, ordinary, 3)
    # the same without the Q/K LoRA: how far a wrong Q/K permutation could move the mask logits
    n = len(ordinary)
    no_qk = {name: a for name, a in lora.items() if ".q_proj." not in name and ".k_proj." not in name}
    off = np.abs(torch_reference(src, no_qk, masks, 2.0, ordinary, 3)[n:] - want[n:]).max()
    # llama.cpp keeps its KV cache in F16: agreement to ~1e-3 of the logit scale, not bit-exact
    assert np.abs(got[:n] - want[:n]).max() < 0.1  # ordinary tokens: the base model
    assert np.abs(got[n:] - want[n:]).max() < 0.1  # masks: gated LoRA with Q/K rows permuted right
    assert off > 5.0  # (measured: errors ~0.03, a missing Q/K delta ~50)
    assert sorted(os.listdir(tmp_path)) == ["ck", "tiny-hf-mtp.gguf"]


def test_hf_base_folder_q4_0(tmp_path, smol_path, hf_ready):
    hf = write_tiny_hf_llama(tmp_path / "hf", smol_path, hidden=64)
    hf_checkpoint(tmp_path / "ck", hf)
    r = cli(tmp_path / "ck", "--base", hf, "--outtype", "q4_0", "-o", tmp_path / "o.gguf")
    assert r.exit_code == 0, r.output
    g = F.open_gguf(tmp_path / "o.gguf")
    assert g.tensors["blk.0.attn_q.weight"].type.name == "Q4_0"
    assert F.read_mtp_info(g).n_masks == 3
    assert B.Model(tmp_path / "o.gguf").n_vocab == 49152 + 3


# --- bad input ---------------------------------------------------------------------------------

def edit_config(ck, **changes):
    cfg = json.loads((ck / "mtp_config.json").read_text())
    cfg.update(changes)
    (ck / "mtp_config.json").write_text(json.dumps(cfg))


def damage(case, ck, tmp_path):
    """Make checkpoint `ck` bad in one way; returns extra CLI arguments."""
    if case == "empty":
        for f in ck.iterdir():
            f.unlink()
    elif case == "no-config":
        (ck / "mtp_config.json").unlink()
    elif case == "version":
        edit_config(ck, format_version=2)
    elif case == "arch":
        edit_config(ck, architecture="phi3")
    elif case == "arch-mismatch":
        edit_config(ck, architecture="qwen2")
    elif case == "shape":
        t = read_safetensors(ck / C.ADAPTER)
        name = next(n for n in t if n.endswith("lora_A.weight"))
        t[name] = t[name][:, :-1]
        write_safetensors(ck / C.ADAPTER, t)
    elif case == "hidden":  # a checkpoint trained for another model size
        cfg = json.loads((ck / "mtp_config.json").read_text())
        edit_config(ck, hidden_size=32, sampler={**cfg["sampler"], "hidden_size": 32})
    elif case == "vocab":
        edit_config(ck, vocab_size=1000)
    elif case == "pickle":
        (ck / C.ADAPTER).rename(ck / "adapter_model.bin")
    elif case == "pickle-base":
        (ck / "config.json").write_text("{}")
        (ck / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
        return []  # no --base: the base would have to come from the pickle
    elif case == "truncated":
        data = (ck / C.SAMPLER).read_bytes()
        (ck / C.SAMPLER).write_bytes(data[: len(data) // 2])
    elif case == "outtype":
        return ["--outtype", "q4_k_m"]
    elif case == "no-base":
        return []
    elif case in HOSTILE:
        HOSTILE[case][0](ck)
    return None


# -- hostile checkpoints (issue 10): type confusion, recursion, overflow, aliasing, non-finite ----

def _raw_safetensors(path, header: bytes, data: bytes = b""):
    import struct

    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def _header_of(path) -> tuple[dict, bytes]:
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _edit_header(path, fn):
    header, data = _header_of(path)
    fn(header)
    _raw_safetensors(path, json.dumps(header).encode(), data)


def _set_tensor(ck, file, name, value):
    t = read_safetensors(ck / file)
    key = next(n for n in t if n.endswith(name))
    t[key] = np.full_like(t[key], value)
    write_safetensors(ck / file, t)


def _lora(ck, **changes):
    cfg = json.loads((ck / "mtp_config.json").read_text())
    edit_config(ck, lora={**cfg["lora"], **changes})


def _sampler(ck, **changes):
    cfg = json.loads((ck / "mtp_config.json").read_text())
    edit_config(ck, sampler={**cfg["sampler"], **changes})


def _overlap(header):
    names = [n for n in header if n != "__metadata__"]
    a, b = names[0], names[1]
    header[b]["data_offsets"] = list(header[a]["data_offsets"])
    header[b]["shape"], header[b]["dtype"] = list(header[a]["shape"]), header[a]["dtype"]


HOSTILE = {
    "dtype-list": (lambda ck: _edit_header(ck / C.SAMPLER, lambda h: h["fc1.bias"].update(dtype=["F32"])),
                   "malformed header entry"),
    "shape-bool": (lambda ck: _edit_header(ck / C.SAMPLER, lambda h: h["fc1.bias"].update(shape=[True])),
                   "malformed header entry"),
    "shape-overflow": (lambda ck: _edit_header(ck / C.MASKS, lambda h: h["mask_embeddings"].update(shape=[2**40, 2**40, 2**40])),
                       "implausible shape"),
    "shape-huge-dim": (lambda ck: _edit_header(ck / C.MASKS, lambda h: h["mask_embeddings"].update(shape=[2**62, 0])),
                       "malformed header entry"),
    "overlap": (lambda ck: _edit_header(ck / C.SAMPLER, _overlap), "overlap"),
    "deep-header": (lambda ck: _raw_safetensors(ck / C.SAMPLER, b"[" * 100_000 + b"]" * 100_000), "bad header"),
    "deep-config": (lambda ck: (ck / "mtp_config.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000),
                    "nested too deeply"),
    "targets-list": (lambda ck: _lora(ck, target_modules=[["q_proj"]]), "target_modules"),
    "targets-dict": (lambda ck: _lora(ck, target_modules=[{"q_proj": 1}]), "target_modules"),
    "targets-str": (lambda ck: _lora(ck, target_modules="q_proj"), "target_modules"),
    "alpha-nan": (lambda ck: (ck / "mtp_config.json").write_text(
        (ck / "mtp_config.json").read_text().replace('"alpha": 16.0', '"alpha": NaN')), "alpha nan"),
    "alpha-inf": (lambda ck: (ck / "mtp_config.json").write_text(
        (ck / "mtp_config.json").read_text().replace('"alpha": 16.0', '"alpha": Infinity')), "alpha inf"),
    "alpha-huge-negative": (lambda ck: _lora(ck, alpha=-1e30), "alpha -1e+30"),
    "alpha-string": (lambda ck: _lora(ck, alpha="16"), "'alpha' must be a number"),
    "rank-bool": (lambda ck: _lora(ck, rank=True), "'rank' must be a positive integer"),
    "eps-inf": (lambda ck: (ck / "mtp_config.json").write_text(
        (ck / "mtp_config.json").read_text().replace('"norm_eps": 1e-05', '"norm_eps": Infinity')), "norm_eps"),
    "masks-dict": (lambda ck: edit_config(ck, mask_tokens={"a": 1}), "mask_tokens"),
    "sampler-nan": (lambda ck: _set_tensor(ck, C.SAMPLER, "fc2.weight", np.nan), "not finite"),
    "lora-inf": (lambda ck: _set_tensor(ck, C.ADAPTER, "lora_B.weight", np.inf), "not finite"),
    "lora-huge": (lambda ck: _set_tensor(ck, C.ADAPTER, "lora_A.weight", 1e20), "beyond"),
    "mask-embedding-nan": (lambda ck: _set_tensor(ck, C.MASKS, "mask_embeddings", np.nan), "not finite"),
    "config-list": (lambda ck: (ck / "mtp_config.json").write_text("[1, 2]"), "must hold a JSON object"),
}


BAD = {
    "empty": "is empty", "no-config": "mtp_config.json is missing", "version": "format version 2 is not supported",
    "arch": "not supported yet", "arch-mismatch": "architecture 'qwen2'", "shape": "shape mismatch",
    "hidden": "hidden size mismatch", "vocab": "vocabulary mismatch", "pickle": "pickle",
    "pickle-base": "pickle", "truncated": "truncated", "outtype": "is not known", "no-base": "--base",
    **{case: needle for case, (_, needle) in HOSTILE.items()},
}


def test_gguf_base_re_encoded_as_q8_0(tmp_path, tiny_base):
    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY

    ck = tmp_path / "ck"
    make_checkpoint(ck, tiny_base)
    out = tmp_path / "q8.gguf"
    r = cli(ck, "--base", tiny_base, "--outtype", "q8_0", "-o", out)
    assert r.exit_code == 0, r.output
    g = F.open_gguf(out)
    assert g.tensors["blk.0.attn_q.weight"].type.name == "Q8_0"
    assert g.tensors["blk.0.attn_q.weight.lora_a"].type.name == "F32"   # the adapter keeps its type
    assert F.read_mtp_info(g).n_masks == len(F.read_mtp_info(F.open_gguf(out)).mask_ids)
    plain, mtp = Engine(out, mtp=False, n_ctx=256), Engine(out, tree="quadratic:2", n_ctx=256)
    prompt = [5, 17, 42, 99, 7]
    want = [t.id for t in plain.generate(prompt, GREEDY, max_tokens=12)]
    assert len(want) == 12 and [t.id for t in mtp.generate(prompt, GREEDY, max_tokens=12)] == want
    plain.close()
    mtp.close()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(tmp_path, tiny_base, case):
    ck = tmp_path / "ck"
    make_checkpoint(ck, tiny_base)
    extra = damage(case, ck, tmp_path)
    out = tmp_path / "out" / "x.gguf"
    args = [ck, "-o", out] + (["--base", tiny_base] if extra is None else extra)
    if case in ("outtype",):
        args += ["--base", tiny_base]
    r = cli(*args)
    assert r.exit_code == 1, r.output
    assert BAD[case] in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    assert not out.exists() and not (out.parent.exists() and os.listdir(out.parent))


def test_unknown_repo_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    r = cli("nobody-here/no-such-mtp-checkpoint", "-o", tmp_path / "x.gguf")
    assert r.exit_code == 1 and "not in the local Hugging Face cache" in " ".join(r.output.split()), r.output
    assert not (tmp_path / "x.gguf").exists()


def test_existing_output_needs_force(tmp_path, tiny_base):
    make_checkpoint(tmp_path / "ck", tiny_base)
    out = tmp_path / "x.gguf"
    out.write_bytes(b"keep me")
    r = cli(tmp_path / "ck", "--base", tiny_base, "-o", out)
    assert r.exit_code == 1 and "--force" in r.output and out.read_bytes() == b"keep me"
    r = cli(tmp_path / "ck", "--base", tiny_base, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert F.read_mtp_info(F.open_gguf(out)).n_masks == 3
    assert sorted(os.listdir(tmp_path)) == ["ck", "x.gguf"]


def test_real_cli(tmp_path, tiny_base):
    """`python -m mtpchat convert` as users run it: summary on stdout, one error line on stderr."""
    from conftest import run_cli

    make_checkpoint(tmp_path / "ck", tiny_base)
    r = run_cli("convert", tmp_path / "ck", "--base", tiny_base, "-o", tmp_path / "o.gguf")
    assert r.returncode == 0, r.stderr
    assert "o.gguf" in r.stdout and "masks: 3" in r.stdout
    r = run_cli("convert", tmp_path / "ck", "--base", tiny_base, "-o", tmp_path / "o.gguf")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().startswith("mtpchat: error:") and "--force" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signal_during_convert_leaves_nothing_behind(tmp_path, smol_path, sig):
    """A real `mtpchat convert` process, signalled while it writes: no output, no temp file, no
    work folder (SIGTERM and SIGHUP clean up as Ctrl-C does), one line on stderr."""
    import signal
    import subprocess
    import sys
    import time

    make_checkpoint(tmp_path / "ck", smol_path, rank=4)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "smol-mtp.gguf"
    # a shell's background job inherits SIGINT ignored, and Python then keeps ignoring it (as
    # nohup intends): the child gets the default disposition, as a terminal's program has
    proc = subprocess.Popen([sys.executable, "-m", "mtpchat", "convert", str(tmp_path / "ck"), "--base",
                             str(smol_path), "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    # wait until the temp file is being written (the work folder exists from the start)
    while not any(p.name.endswith(".tmp") for p in out_dir.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the temp file never appeared"
        time.sleep(0.002)
    proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == "SIGINT" else 128 + getattr(signal, sig)), (proc.returncode, stderr)
    assert "Traceback" not in stderr and len([l for l in stderr.splitlines() if l.strip()]) == 1, stderr
    assert "no output written" in stderr
    assert list(out_dir.iterdir()) == [], list(out_dir.iterdir())


def test_averaged_checkpoint_is_the_weighted_mean_and_converts(tmp_path, tiny_base):
    """`python -m mtpchat.train.average` (torch-free): every tensor is the weighted mean, the result
    converts to a working MTP file, and bad input is one error line with nothing written."""
    import subprocess
    import sys

    pa = make_checkpoint(tmp_path / "a", tiny_base, seed=1)
    pb = make_checkpoint(tmp_path / "b", tiny_base, seed=2)

    def avg(*args):
        return subprocess.run([sys.executable, "-m", "mtpchat.train.average", *map(str, args)],
                              capture_output=True, text=True, timeout=120)

    r = avg(tmp_path / "m", tmp_path / "a", tmp_path / "b", "--weights", "1,3")
    assert r.returncode == 0, r.stderr
    for name in (C.ADAPTER, C.SAMPLER, C.MASKS):
        a, b, m = (read_safetensors(tmp_path / d / name) for d in "abm")
        assert set(m) == set(a)
        for k in a:
            assert np.allclose(m[k], 0.25 * a[k] + 0.75 * b[k], atol=1e-6), k
    cfg = json.loads((tmp_path / "m" / C.CONFIG).read_text())
    assert [e["weight"] for e in cfg["training"]["averaged"]] == [0.25, 0.75]
    parts = C.build_parts(C.load_checkpoint(tmp_path / "m"), C.base_facts(F.open_gguf(tiny_base)))
    assert np.allclose(parts.mask_embd, 0.25 * pa.mask_embd + 0.75 * pb.mask_embd, atol=1e-6)
    out = tmp_path / "m.gguf"
    assert cli(tmp_path / "m", "--base", tiny_base, "-o", out).exit_code == 0
    assert_mtp_file(out, tiny_base, parts, k=3)

    make_checkpoint(tmp_path / "k4", tiny_base, k=4)
    for args, says in [((tmp_path / "a",), "two checkpoints"),
                       ((tmp_path / "a", tmp_path / "k4"), "differ"),
                       ((tmp_path / "a", tmp_path / "b", "--weights", "1,nan"), "positive"),
                       ((tmp_path / "a", tmp_path / "b", "--weights", "1"), "1 weights for 2"),
                       ((tmp_path / "a", tmp_path / "missing"), "not a folder")]:
        r = avg(tmp_path / "bad", *args)
        assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and not (tmp_path / "bad").exists()
    # an existing output: a checkpoint is replaced only with --force; anything else never
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    r = avg(tmp_path / "notes", tmp_path / "a", tmp_path / "b", "--force")
    assert r.returncode == 1 and "not a checkpoint folder" in r.stderr
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    r = avg(tmp_path / "m", tmp_path / "a", tmp_path / "b")
    assert r.returncode == 1 and "--force" in r.stderr and "Traceback" not in r.stderr
    r = avg(tmp_path / "m", tmp_path / "a", tmp_path / "b", "--force")
    assert r.returncode == 0, r.stderr
    assert np.allclose(read_safetensors(tmp_path / "m" / C.MASKS)["mask_embeddings"],
                       0.5 * pa.mask_embd + 0.5 * pb.mask_embd, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
