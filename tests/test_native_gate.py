"""The patched llama.cpp: per-token gated LoRA and self-contained MTP GGUF files."""
import numpy as np
import pytest

from mtpchat import binding as B
from mtpchat import format as F
from synthetic import random_mtp_parts, write_adapter_gguf


def decode_all(ctx, tokens, start=0, outputs=None, pos=None, seqs=None):
    outputs = outputs or [1] * len(tokens)
    pos = pos if pos is not None else list(range(start, start + len(tokens)))
    n = ctx.decode(tokens, pos, seq_ids=seqs, outputs=outputs)
    return ctx.logits(n).copy()


@pytest.fixture(params=["tiny", "smol"])
def mtp(request):
    path = request.getfixturevalue("tiny_mtp" if request.param == "tiny" else "smol_mtp")
    model = B.Model(path)
    info = F.read_mtp_info(F.open_gguf(path))
    yield model, B.Adapter(model), info
    model.close()


def mixed_batch(model, info):
    """A verification tree in one batch: chain o0..o4 (seq 0), a block of two masks after o1
    (seq 1) and a block of all masks after o4 (seq 2). Returns (tokens, positions, seq ids)."""
    o = (model.tokenize("The quick brown fox jumps") + [10, 11, 12, 13, 14])[:5]
    m = info.mask_ids
    toks = o[:2] + m[:2] + o[2:] + m
    pos = [0, 1, 2, 3, 2, 3, 4] + [5 + j for j in range(len(m))]
    seqs = [[0, 1, 2], [0, 1, 2], [1], [1], [0, 2], [0, 2], [0, 2]] + [[2]] * len(m)
    return toks, pos, seqs


def tree_ctx(model):
    return B.Context(model, n_ctx=256, n_batch=64, n_seq_max=3)


def test_gate_set_comes_from_the_file(mtp):
    model, adapter, info = mtp
    assert adapter.gate_tokens == sorted(info.mask_ids)
    assert model.n_vocab == max(info.mask_ids) + 1


def test_ordinary_tokens_keep_base_logits(mtp):
    model, adapter, info = mtp
    toks, pos, seqs = mixed_batch(model, info)
    ctx = tree_ctx(model)
    base = decode_all(ctx, toks, pos=pos, seqs=seqs)
    ctx.clear()
    ctx.set_adapter(adapter)
    gated = decode_all(ctx, toks, pos=pos, seqs=seqs)
    ordinary = [i for i, t in enumerate(toks) if t not in info.mask_ids]
    masks = [i for i, t in enumerate(toks) if t in info.mask_ids]
    assert np.abs(gated[ordinary] - base[ordinary]).max() <= 1e-6
    # the adapter does act on the mask tokens (else the test above proves nothing)
    assert np.abs(gated[masks] - base[masks]).max() > 1e-2
    ctx.close()


def test_mask_logits_equal_two_pass_stock_lora(mtp):
    """Masks after the ordinary prefix == prefix without adapter, then masks with the ungated adapter."""
    model, adapter, info = mtp
    prefix = model.tokenize("Once upon a time")[:4] or [10, 11, 12, 13]
    toks = prefix + info.mask_ids
    ctx = B.Context(model, n_ctx=256, n_batch=64)
    ctx.set_adapter(adapter)
    one_pass = decode_all(ctx, toks)[len(prefix):]

    ctx.clear()
    ctx.set_adapter(None)
    ctx.decode(prefix, list(range(len(prefix))))
    adapter.gate_tokens = None  # stock LoRA: every token
    ctx.set_adapter(adapter)
    two_pass = decode_all(ctx, info.mask_ids, start=len(prefix))
    assert np.abs(one_pass - two_pass).max() <= 1e-4
    ctx.close()


def test_empty_gate_and_no_adapter_give_base_outputs(mtp):
    model, adapter, info = mtp
    toks, pos, seqs = mixed_batch(model, info)
    ctx = tree_ctx(model)
    base = decode_all(ctx, toks, pos=pos, seqs=seqs)
    adapter.gate_tokens = []
    ctx.set_adapter(adapter)
    ctx.clear()
    assert np.array_equal(decode_all(ctx, toks, pos=pos, seqs=seqs), base)
    ctx.close()


def test_only_requested_rows(mtp):
    """After the last layer only the output rows remain: their gates must follow them."""
    model, adapter, info = mtp
    toks, pos, seqs = mixed_batch(model, info)
    ctx = tree_ctx(model)
    ctx.set_adapter(adapter)
    full = decode_all(ctx, toks, pos=pos, seqs=seqs)
    want = [i for i in range(len(toks)) if i % 3 != 1]
    ctx.clear()
    part = decode_all(ctx, toks, pos=pos, seqs=seqs, outputs=[int(i in want) for i in range(len(toks))])
    assert np.array_equal(part, full[want])
    ctx.close()


def test_graph_without_gate_tokens_is_not_reused_for_masks(mtp):
    """A batch without mask tokens skips the adapter; the next batch of the same shape must not
    reuse that graph when it holds mask tokens."""
    model, adapter, info = mtp
    k = len(info.mask_ids)
    prefix = model.tokenize("Hello there friend")[:3] or [10, 11, 12]
    fresh = B.Context(model, n_ctx=256, n_batch=64)
    fresh.set_adapter(adapter)
    fresh.decode(prefix, list(range(len(prefix))))
    want = decode_all(fresh, info.mask_ids, start=len(prefix))

    ctx = B.Context(model, n_ctx=256, n_batch=64)
    ctx.set_adapter(adapter)
    ctx.decode(prefix, list(range(len(prefix))))
    decode_all(ctx, prefix[:1] * k, start=len(prefix))      # same shape, no gate token
    ctx.seq_rm(0, len(prefix), -1)
    got = decode_all(ctx, info.mask_ids, start=len(prefix))
    assert np.array_equal(got, want)
    ctx.close()
    fresh.close()


def test_standalone_gated_adapter_file(tiny_base, tiny_mtp, tmp_path):
    """The same LoRA as an adapter GGUF with adapter.lora.gate_token_ids gates the same way."""
    model = B.Model(tiny_mtp)
    info = F.read_mtp_info(F.open_gguf(tiny_mtp))
    parts = random_mtp_parts(tiny_base, k=3, rank=8, seed=1)
    path = write_adapter_gguf(tiny_base, parts, tmp_path / "gated.gguf", gate_ids=info.mask_ids)
    standalone = B.Adapter(model, path)
    assert standalone.gate_tokens == info.mask_ids
    toks, pos, seqs = mixed_batch(model, info)
    ctx = tree_ctx(model)
    ctx.set_adapter(B.Adapter(model))
    from_model = decode_all(ctx, toks, pos=pos, seqs=seqs)
    ctx.clear()
    ctx.set_adapter(standalone)
    assert np.abs(decode_all(ctx, toks, pos=pos, seqs=seqs) - from_model).max() <= 1e-5
    ungated = B.Adapter(model, write_adapter_gguf(tiny_base, parts, tmp_path / "plain.gguf", gate_ids=None))
    assert ungated.gate_tokens is None
    model.close()


def test_plain_and_mtp_models_load(tiny_base, tiny_mtp):
    plain = B.Model(tiny_base)
    mtp = B.Model(tiny_mtp)
    assert mtp.n_vocab == plain.n_vocab + 3
    assert F.read_mtp_info(F.open_gguf(tiny_base)) is None
    with pytest.raises(B.LlamaError, match="adapter"):
        B.Adapter(plain)  # a plain model carries no adapter
    plain.close()
    mtp.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_gguf_is_a_clean_error(tiny_mtp, tmp_path, damage):
    data = tiny_mtp.read_bytes()
    bad = tmp_path / "bad.gguf"
    if damage == "truncate":
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    with pytest.raises(B.LlamaError):
        B.Model(bad)
    with pytest.raises(F.FormatError):
        F.open_gguf(bad)
