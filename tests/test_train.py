"""mtpchat train on a tiny random llama: attention rules, exact ordinary outputs, learning,
checkpoint -> GGUF -> llama.cpp round trip, resume. CPU, seconds."""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")
pytest.importorskip("transformers", reason="the [train] extra (transformers) is not installed")

from mtpchat.train import checkpoint as ckpt  # noqa: E402
from mtpchat.train.base import load_base  # noqa: E402
from mtpchat.train.layout import build_layout  # noqa: E402
from mtpchat.train.model import MtpModel  # noqa: E402
from mtpchat.train.trainer import Examples, Trainer, TrainConfig, evaluate, losses  # noqa: E402

K = 3


_BASES = {}


def fresh(tiny_base, seed=0, rank=4):
    """A new MtpModel on a copy of the tiny base (loaded from its GGUF once per module)."""
    import copy

    if tiny_base not in _BASES:
        _BASES[tiny_base] = load_base(tiny_base, dtype=torch.float32)
    base, arch = _BASES[tiny_base]
    return MtpModel(copy.deepcopy(base), n_masks=K, rank=rank, alpha=2 * rank, seed=seed), arch


def synthetic_examples(n=12, seed=0):
    """Sequences with learnable structure: an answer counts upwards from a random start."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prompt = [3] + rng.integers(270, 320, 4).tolist()
        start = int(rng.integers(270, 290))
        answer = [start + (t % 30) for t in range(14)]
        out.append({"id": f"s{i}", "category": "test", "prompt_ids": prompt, "answer_ids": answer, "stopped": True})
    return out


def test_attention_mask_follows_the_rules():
    seqs = [([10, 11, 12, 13, 14, 15], 2), ([20, 21, 22, 23, 24], 3)]
    lay = build_layout(seqs, K)
    allowed = lay.joint_allowed()
    T = lay.ids.numel()
    M = lay.mask_j.numel()
    assert M > 0
    for q in range(T):
        for kk in range(T + M):
            want = kk < T and lay.seg[kk] == lay.seg[q] and kk <= q   # never a mask
            assert bool(allowed[q, kk]) == bool(want)
    for m in range(M):
        a, j = int(lay.anchor[m]), int(lay.mask_j[m])
        for kk in range(T):
            assert bool(allowed[T + m, kk]) == bool(lay.seg[kk] == lay.seg[a] and kk <= a)
        for m2 in range(M):
            same = lay.block[m2] == lay.block[m] and lay.mask_j[m2] <= j
            assert bool(allowed[T + m, T + m2]) == bool(same)
    # positions and labels: m_j after x_i sits at i+j and predicts x_{i+j+1}
    for m in range(M):
        a, j = int(lay.anchor[m]), int(lay.mask_j[m]) + 1
        s = int(lay.seg[a])
        off = 0 if s == 0 else len(seqs[0][0])
        i = a - off
        toks = seqs[s][0]
        assert int(lay.mask_pos[m]) == i + j
        assert int(lay.labels[m]) == toks[i + j + 1] and int(lay.prev[m]) == toks[i + j]
        assert int(lay.source[m]) == a + j
    # anchors start at the last prompt token
    assert int(lay.anchor.min()) == seqs[0][1] - 1


def test_ordinary_logits_equal_the_base_exactly(tiny_base):
    model, _ = fresh(tiny_base)
    for lin in model.lora.values():
        torch.nn.init.normal_(lin.lora_B, std=0.5)   # an adapter that really changes mask outputs
    ex = synthetic_examples(2)
    lay = build_layout([(e["prompt_ids"] + e["answer_ids"], len(e["prompt_ids"])) for e in ex], K)
    T = lay.ids.numel()
    with torch.no_grad():
        with_adapter = model.unembed(model.joint_pass(lay))
        without = model.unembed(model.joint_pass(lay, adapter=False))
        assert torch.equal(with_adapter[:T], without[:T])
        assert (with_adapter[T:] - without[T:]).abs().max() > 1e-2
        # the same as the plain base model run on each sequence alone
        ids = ex[0]["prompt_ids"] + ex[0]["answer_ids"]
        plain = model.base(input_ids=torch.tensor([ids])).logits[0]
        assert torch.allclose(with_adapter[: len(ids)], plain, atol=1e-5)
        # the training split (ordinary pass without grad, then masks against its cache) equals one joint pass
        h_ord, cache = model.ordinary_pass(lay)
        z = model.mask_pass(lay, cache)
        joint = model.joint_pass(lay)
        assert torch.equal(h_ord, model.joint_pass(lay, adapter=False)[:T]) or torch.allclose(h_ord, joint[:T], atol=1e-5)
        assert torch.allclose(z, joint[T:], atol=1e-4)


def test_steps_walk_epochs_whose_pack_counts_differ(tiny_base, tmp_path):
    """Sequences of mixed lengths pack into a different number of steps each epoch; a run longer
    than an epoch takes every pack of every epoch once, in order (the epoch-0 count taken as the
    period ran past a shorter epoch's packs and crashed a long run)."""
    from mtpchat.train.trainer import make_packs

    rng = np.random.default_rng(5)
    examples = [dict(e, answer_ids=e["answer_ids"][:int(rng.integers(2, 14))]) for e in synthetic_examples(40)]
    cfg = TrainConfig(n_masks=K, rank=4, alpha=8, steps=4, batch_tokens=48, save_every=0, eval_every=0)
    epochs = [make_packs(examples, cfg, e) for e in range(4)]
    counts = [len(p) for p in epochs]
    assert len(set(counts)) > 1, counts   # else the check could not tell the two mappings apart
    model, arch = fresh(tiny_base)
    tr = Trainer(model, Examples(train=examples, dev=[]), cfg, tmp_path / "ck", base_name="tiny", architecture=arch)
    want = [p for packs in epochs for p in packs]
    assert [tr.pack(s) for s in range(len(want))] == want


def test_a_few_steps_reduce_the_loss(tiny_base, tmp_path):
    model, arch = fresh(tiny_base)
    data = Examples(train=synthetic_examples(8), dev=synthetic_examples(2, seed=1))
    cfg = TrainConfig(n_masks=K, rank=4, alpha=8, lr=5e-3, warmup=2, steps=12, batch_tokens=80,
                      save_every=0, eval_every=0)
    tr = Trainer(model, data, cfg, tmp_path / "ck", base_name="tiny", architecture=arch)
    lay = build_layout([(e["prompt_ids"] + e["answer_ids"], 5) for e in data.train], K)
    with torch.no_grad():
        before = {k: float(v) for k, v in losses(model, lay).items()}
    tau0 = evaluate(model, data.train, K)["tau"]
    tr.run()
    with torch.no_grad():
        after = {k: float(v) for k, v in losses(model, lay).items()}
    assert after["mask"] < 0.9 * before["mask"] and after["sampler"] < 0.9 * before["sampler"], (before, after)
    assert evaluate(model, data.train, K)["tau"] >= tau0


def test_untrained_sampler_is_the_plain_mask_head(tiny_base):
    model, _ = fresh(tiny_base)
    z = torch.randn(5, model.embed_weight.shape[1])
    assert torch.equal(model.sample_head(torch.tensor([5, 6, 7, 8, 9]), z), z)


def test_checkpoint_converts_and_runs_in_llama_cpp(tiny_base, tmp_path):
    from mtpchat import binding as B
    from mtpchat import format as F
    from mtpchat.convert.command import convert
    from mtpchat.engine import Engine
    from mtpchat.sampler_head import SamplerHead, q8_0_round
    from mtpchat.sampling import GREEDY

    model, arch = fresh(tiny_base)
    data = Examples(train=synthetic_examples(6), dev=synthetic_examples(1, seed=1))
    cfg = TrainConfig(n_masks=K, rank=4, alpha=8, lr=5e-3, warmup=1, steps=3, batch_tokens=60, save_every=0,
                      eval_every=0)
    Trainer(model, data, cfg, tmp_path / "ck", base_name=tiny_base.name, architecture=arch).run()
    with torch.no_grad():   # trained LoRA B is tiny after 3 steps: make the check sensitive
        for lin in model.lora.values():
            lin.lora_B.normal_(std=0.3)
        model.sampler.norm2.weight.fill_(0.5)
    Trainer(model, data, TrainConfig(n_masks=K, rank=4, alpha=8, steps=3), tmp_path / "ck2",
            base_name=tiny_base.name, architecture=arch, resume=False).save()
    folder = tmp_path / "ck2"
    cfg_json = json.loads((folder / "mtp_config.json").read_text())
    assert cfg_json["format"] == "mtpchat-checkpoint" and cfg_json["n_masks"] == K and cfg_json["architecture"] == "llama"
    names = set(ckpt.load_tensors(folder)[1])
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in names

    # load into a fresh model: identical parameters
    other, _ = fresh(tiny_base, seed=5)
    ckpt.load_into(other, folder)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), other.named_parameters()):
        assert torch.equal(p1, p2), n1

    # the checked path users take: mtpchat convert (llama Q/K rows of lora_B permuted there)
    gguf = convert(str(folder), str(tiny_base), tmp_path / "tiny-mtp.gguf").out
    info = F.read_mtp_info(F.open_gguf(gguf))
    assert info.n_masks == K and info.lora_rank == 4

    # llama.cpp's mask logits after a prefix equal torch's
    prefix = [3, 280, 281, 282, 283, 284]
    lay = build_layout([(prefix + [285, 286, 287, 288], len(prefix))], K)
    rows = [m for m in range(lay.mask_j.numel()) if int(lay.anchor[m]) == len(prefix) - 1]
    with torch.no_grad():
        h_ord, cache = model.ordinary_pass(lay)
        z = model.mask_pass(lay, cache)[rows]
        want = model.unembed(z).numpy()
        want_ord = model.unembed(h_ord[: len(prefix)]).numpy()
        # the same masks without the adapter: how much the adapter moves them
        T = lay.ids.numel()
        unadapted = model.unembed(model.joint_pass(lay, adapter=False)[[T + r for r in rows]]).numpy()
    assert np.abs(want - unadapted).max() > 0.5
    lm = B.Model(gguf)
    adapter = B.Adapter(lm)
    ctx = B.Context(lm, n_ctx=64, n_batch=32)
    ctx.set_adapter(adapter)
    toks = prefix + info.mask_ids
    n = ctx.decode(toks, list(range(len(toks))), outputs=[1] * len(toks))
    got = ctx.logits(n)[:, : model.vocab_size].copy()
    # llama.cpp keeps its KV cache in F16: differences of ~1e-3 even for the plain base
    assert np.abs(got[: len(prefix)] - want_ord).max() < 1e-2
    assert np.abs(got[len(prefix):] - want).max() < 1e-2, np.abs(got[len(prefix):] - want).max()
    ctx.close()

    # the engine's sampler head agrees with torch's
    head = SamplerHead(F.open_gguf(gguf), info)
    zz = z[0].numpy()
    with torch.no_grad():
        # both engine heads keep fc1/fc2 and their inputs in Q8_0: torch gets the same rounding
        for fc in (model.sampler.fc1, model.sampler.fc2):
            fc.weight.copy_(torch.from_numpy(q8_0_round(fc.weight.float().numpy())))
            fc.register_forward_pre_hook(lambda _, args: (torch.from_numpy(q8_0_round(args[0].numpy())),))
        delta = (model.sample_head(torch.tensor([290]), z[:1]) - z[:1])[0].numpy()
    assert np.abs(head.delta(290, zz) - delta).max() < 1e-3
    lm.close()

    # and the MTP engine decodes with it
    eng = Engine(gguf, n_ctx=128, tree=f"linear:{K}")
    out = [t.id for t in eng.generate(prefix, GREEDY, max_tokens=6)]
    eng.close()
    plain = Engine(tiny_base, mtp=False, n_ctx=128)
    assert out == [t.id for t in plain.generate(prefix, GREEDY, max_tokens=6)]
    plain.close()


def test_saved_checkpoint_is_the_shared_format_and_resumes(tiny_base, tmp_path):
    """A few steps, saved: convert's checks accept the folder, its resume/ state loads, and a new
    Trainer on the same folder carries on from it with the same weights."""
    from mtpchat.convert import checkpoint as C

    model, arch = fresh(tiny_base)
    data = Examples(train=synthetic_examples(6), dev=synthetic_examples(1, seed=1))
    cfg = TrainConfig(n_masks=K, rank=4, alpha=8, lr=5e-3, warmup=1, steps=2, batch_tokens=40, save_every=0,
                      eval_every=0)
    out = Trainer(model, data, cfg, tmp_path / "ck", base_name="t", architecture=arch).save()
    ck = C.load_checkpoint(out)
    assert (ck.n_masks, ck.rank, ck.alpha, ck.arch) == (K, 4, 8.0, arch)
    assert ck.targets == list(C.HF_TO_GGUF) and ckpt.read_config(out) == ck.config
    assert set(ckpt.load_tensors(out)[1]) == {C.peft_name(stem, ab) for stem in model.lora for ab in "AB"}
    assert ckpt.load_resume(out)["trainer"]["step"] == 0
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for lin in model.lora.values():
            lin.lora_B.normal_(std=0.1)
    tr = Trainer(model, data, cfg, out, base_name="t", architecture=arch)   # resumes: the saved weights return
    assert tr.step == 0 and all(torch.equal(p, saved[n]) for n, p in model.named_parameters() if n in saved)
    tr.run()
    again, _ = fresh(tiny_base, seed=7)
    t2 = Trainer(again, data, cfg, out, base_name="t", architecture=arch)
    assert t2.step == 2 and t2.opt.state_dict()["state"]
    for (n, p1), (_, p2) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(p1, p2), n


def test_the_trained_checkpoint_loads_by_the_trainers_names():
    """The version-1 checkpoint in train/checkpoints passes the shared checks, and `load_into`
    finds each of its tensors under the name it looks for (PEFT names of the block's modules)."""
    from mtpchat import format as F
    from mtpchat.convert import checkpoint as C

    folder = Path(__file__).resolve().parent.parent / "train" / "checkpoints" / "smollm2-135m-k4"
    cfg, adapter, sampler, masks = ckpt.load_tensors(folder)
    assert cfg["n_masks"] == 4 and cfg["lora"]["rank"] == 16
    stems = [C.peft_stem(i, m) for i in range(30) for m in cfg["lora"]["target_modules"]]
    assert set(adapter) == {C.peft_name(s, ab) for s in stems for ab in "AB"}
    assert set(sampler) == set(F.SAMPLER_TENSORS) and set(masks) == {"mask_embeddings"}
    assert ckpt.load_resume(folder) is None          # published without its optimizer state


def test_resume_continues_from_the_saved_step(tiny_base, tmp_path):
    data = Examples(train=synthetic_examples(8), dev=synthetic_examples(1, seed=1))
    cfg = dict(n_masks=K, rank=4, alpha=8, lr=5e-3, warmup=2, steps=4, batch_tokens=40, eval_every=0)

    straight, arch = fresh(tiny_base)
    Trainer(straight, data, TrainConfig(save_every=0, **cfg), tmp_path / "a", base_name="t", architecture=arch).run()

    first, _ = fresh(tiny_base)
    t1 = Trainer(first, data, TrainConfig(save_every=2, **cfg), tmp_path / "b", base_name="t", architecture=arch)
    t1.total = 2          # an interruption after two steps
    t1.run()
    second, _ = fresh(tiny_base)
    t2 = Trainer(second, data, TrainConfig(save_every=2, **cfg), tmp_path / "b", base_name="t", architecture=arch)
    assert t2.step == 2
    t2.run()
    assert t2.step == 4
    for (n, p1), (_, p2) in zip(straight.named_parameters(), second.named_parameters()):
        assert torch.allclose(p1, p2, atol=1e-6), n
    assert json.loads((tmp_path / "b" / "mtp_config.json").read_text())["training"]["steps"] == 4

    # a checkpoint of other shapes is refused with a clear error
    from mtpchat.train.base import TrainError
    third, _ = fresh(tiny_base, rank=2)
    with pytest.raises(TrainError, match="trained with"):
        Trainer(third, data, TrainConfig(**{**cfg, "rank": 2, "alpha": 4}), tmp_path / "b", base_name="t",
                architecture=arch)


def test_init_grows_the_rank_without_changing_the_outputs(tiny_base, tmp_path):
    """--init into a higher rank at the same alpha/rank: the mask outputs at step 0 are the
    checkpoint's, the new rank is trainable, and another scale is refused."""
    from mtpchat.train.base import TrainError

    data = Examples(train=synthetic_examples(6), dev=[])
    small, arch = fresh(tiny_base, rank=2)
    with torch.no_grad():
        for lin in small.lora.values():
            lin.lora_B.normal_(std=0.5)
    cfg = dict(n_masks=K, lr=5e-3, warmup=1, steps=2, batch_tokens=40, save_every=0, eval_every=0)
    out = Trainer(small, data, TrainConfig(rank=2, alpha=4, **cfg), tmp_path / "r2", base_name="t",
                  architecture=arch).save()
    big, _ = fresh(tiny_base, seed=3, rank=4)
    tr = Trainer(big, data, TrainConfig(rank=4, alpha=8, **cfg), tmp_path / "r4", base_name="t",
                 architecture=arch, init_from=out)
    ex = synthetic_examples(2, seed=4)
    lay = build_layout([(e["prompt_ids"] + e["answer_ids"], len(e["prompt_ids"])) for e in ex], K)
    with torch.no_grad():
        before, after = small.joint_pass(lay), big.joint_pass(lay)
    assert (before - small.joint_pass(lay, adapter=False)).abs().max() > 1e-2   # the adapter matters
    assert torch.allclose(before, after, atol=1e-5)
    tr.run()
    assert any(lin.lora_B[:, 2:].abs().max() > 0 for lin in big.lora.values())
    other, _ = fresh(tiny_base, rank=4)
    with pytest.raises(TrainError, match="--alpha 8"):
        Trainer(other, data, TrainConfig(rank=4, alpha=4, **cfg), tmp_path / "r4b", base_name="t",
                architecture=arch, init_from=out)


def test_targets_come_from_llama_cpp_and_resume(tiny_base, tmp_path):
    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY
    from mtpchat.train import data as D

    prompts = [{"id": "a", "category": "chat", "prompt": "hi"}, {"id": "b", "category": "code", "prompt": "ab"}]
    cache = tmp_path / "d.jsonl"
    first = D.generate_gguf(tiny_base, prompts[:1], cache, max_tokens=6)
    with cache.open("a") as f:
        f.write('{"id": "b", "prompt_')          # a line cut by an interruption
    seen = []
    done = D.generate_gguf(tiny_base, prompts, cache, max_tokens=6, on_item=lambda i, n: seen.append(i))
    assert [d["id"] for d in done] == ["a", "b"] and seen[0] == 1     # "a" was not generated again
    assert done[0] == first[0] and len(cache.read_text().splitlines()) == 2
    eng = Engine(tiny_base, mtp=False, n_ctx=256)
    want = [t.id for t in eng.generate(done[1]["prompt_ids"], GREEDY, max_tokens=6)]
    eng.close()
    assert done[1]["answer_ids"][:len(want)] == want


def test_builtin_prompts_are_diverse():
    from mtpchat.train.prompts import builtin_prompts

    p = builtin_prompts()
    assert len(p) >= 1200 and len({x["id"] for x in p}) == len(p) == len({x["prompt"] for x in p})
    assert {x["category"] for x in p[:5]} == {"code", "math", "chat", "writing", "lists"}
    assert builtin_prompts() == p


DEV_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "prompts"


def _word_grams(text: str, n: int = 6) -> set:
    import re

    w = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


@pytest.mark.skipif(not DEV_PROMPTS.is_dir(), reason="the development prompt files (../shared/prompts) are not beside this checkout")
def test_builtin_prompts_share_no_six_word_run_with_the_dev_sets():
    from mtpchat.train.prompts import builtin_prompts

    dev = [json.loads(line)["prompt"] for f in sorted(DEV_PROMPTS.glob("*.jsonl"))
           for line in f.read_text().splitlines() if line.strip()]
    assert len(dev) >= 30
    dev_grams = set().union(*(_word_grams(d) for d in dev))
    leaks = [x["prompt"] for x in builtin_prompts() if _word_grams(x["prompt"]) & dev_grams]
    assert leaks == []


def test_committed_targets_are_the_builtin_prompts_through_the_base(smol_path):
    """train/targets holds one greedy answer per built-in prompt, and each prompt's ids are what
    the base's chat template and tokenizer make of it today (a stale file would train on other
    prompts than it names)."""
    from mtpchat.binding import Model
    from mtpchat.chat import ChatFormat
    from mtpchat.train.data import _messages, read_cache
    from mtpchat.train.prompts import builtin_prompts

    rows = read_cache(Path(__file__).resolve().parents[1] / "train" / "targets" / "smollm2-135m-instruct-q4_1.n256.jsonl")
    prompts = {p["id"]: p for p in builtin_prompts()}
    assert sorted(r["id"] for r in rows) == sorted(prompts)
    chat = ChatFormat(Model(smol_path, vocab_only=True))
    for r in rows[::25]:
        assert r["prompt_ids"] == chat.tokens(_messages(prompts[r["id"]])), r["id"]
        assert 0 < len(r["answer_ids"]) <= 257 and r["category"] == prompts[r["id"]]["category"]


def test_cli_bad_input_is_one_clear_line(tmp_path):
    import typer
    from typer.testing import CliRunner

    from mtpchat.train.command import register

    app = typer.Typer()

    @app.callback()
    def main():
        pass

    register(app)
    r = CliRunner().invoke(app, ["train", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no such GGUF file" in r.output and "Traceback" not in r.output
    bad = tmp_path / "p.jsonl"
    bad.write_text("{not json\n")
    r = CliRunner().invoke(app, ["train", "--prompts", str(bad), "--out", str(tmp_path / "o"), "--device", "tpu"])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output


def test_cli_flags_build_one_train_config(tmp_path, monkeypatch):
    """The flags' defaults are TrainConfig's, and the command hands `_train` one TrainConfig plus
    the run options."""
    from dataclasses import MISSING, fields

    import typer
    from typer.testing import CliRunner

    from mtpchat.train import command

    assert command.config_defaults() == {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    seen = []
    monkeypatch.setattr(command, "_train", seen.append)
    app = typer.Typer()

    @app.callback()
    def main():
        pass

    command.register(app)
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert seen[-1].config == TrainConfig() and seen[-1].out == tmp_path / "o" and seen[-1].base is None
    assert (seen[-1].device, seen[-1].dtype, seen[-1].max_new_tokens, seen[-1].init) == ("auto", "auto", 256, None)
    r = CliRunner().invoke(app, ["train", "m.gguf", "-o", "o", "-k", "3", "--rank", "8", "--alpha", "16", "--lr", "1e-3",
                                 "--warmup", "5", "--steps", "7", "--epochs", "2", "--batch-tokens", "256",
                                 "--anchors", "64", "--max-minutes", "3", "--save-every", "20", "--eval-every", "0",
                                 "--threads", "1", "--no-eval-at-start", "--eval-seqs", "4", "--ce-vocab", "data",
                                 "--sampler-lr-scale", "0.5", "--seed", "2", "--init", "ck", "--prompts", "p.jsonl",
                                 "--max-prompts", "9", "--data", "d.jsonl", "--targets-gguf", "t.gguf",
                                 "--max-new-tokens", "64", "--device", "cpu", "--dtype", "fp32"])
    assert r.exit_code == 0, r.output
    assert seen[-1].config == TrainConfig(n_masks=3, rank=8, alpha=16, lr=1e-3, warmup=5, steps=7, epochs=2,
                                          batch_tokens=256, anchors_per_seq=64, max_minutes=3, save_every=20,
                                          eval_every=0, threads=1, eval_at_start=False, eval_seqs=4,
                                          ce_vocab="data", sampler_lr_scale=0.5, seed=2)
    o = seen[-1]
    assert (o.base, o.out, o.init, o.prompts, o.max_prompts, o.data, o.targets_gguf, o.max_new_tokens, o.device,
            o.dtype) == ("m.gguf", Path("o"), Path("ck"), Path("p.jsonl"), 9, Path("d.jsonl"), Path("t.gguf"), 64,
                         "cpu", "fp32")


def test_chunked_and_subset_cross_entropy(tiny_base):
    """The chunked CE equals one F.cross_entropy over the full logits; the subset CE equals the CE
    of the logits restricted to the subset's columns, with the labels renumbered."""
    import torch.nn.functional as F

    from mtpchat.train.trainer import _ce, vocab_subset

    model, _ = fresh(tiny_base)
    h = torch.randn(7, model.embed_weight.shape[1])
    ex = synthetic_examples(4)
    labels = torch.tensor([e["answer_ids"][i] for i, e in enumerate(ex * 2)][:7])
    full = F.cross_entropy(model.unembed(h), labels)
    assert torch.allclose(_ce(model, h, labels, chunk=3), full, atol=1e-5)
    cols, table = vocab_subset(ex, model.vocab_size)
    assert sorted(cols.tolist()) == sorted({t for e in ex for t in e["answer_ids"]})
    want = F.cross_entropy(model.unembed(h)[:, cols], table[labels])
    assert torch.allclose(_ce(model, h, labels, (cols, table), chunk=2), want, atol=1e-5)
    assert torch.allclose(model.unembed(h, cols), model.unembed(h)[:, cols])


def test_subset_vocab_training_runs_and_learns(tiny_base, tmp_path):
    model, arch = fresh(tiny_base)
    data = Examples(train=synthetic_examples(8), dev=synthetic_examples(2, seed=1))
    cfg = TrainConfig(n_masks=K, rank=4, alpha=8, lr=5e-3, warmup=2, steps=12, batch_tokens=80,
                      save_every=0, eval_every=0, ce_vocab="data", threads=1)
    tr = Trainer(model, data, cfg, tmp_path / "ck", base_name="tiny", architecture=arch)
    assert tr.subset is not None and torch.get_num_threads() == 1
    lay = build_layout([(e["prompt_ids"] + e["answer_ids"], 5) for e in data.train], K)
    with torch.no_grad():
        before = float(losses(model, lay, tr.subset)["mask"])
    tr.run()
    with torch.no_grad():
        assert float(losses(model, lay, tr.subset)["mask"]) < 0.9 * before


def test_time_limit_stops_steps_and_evaluation(tiny_base, tmp_path):
    """--max-minutes is checked before every step and inside the held-out evaluation loop."""
    import time

    model, arch = fresh(tiny_base)
    data = Examples(train=synthetic_examples(8), dev=synthetic_examples(4, seed=1))
    r = evaluate(model, data.dev, K, deadline=time.perf_counter() - 1)
    assert r["seqs"] == 1          # a deadline already past: one sequence, never none
    assert evaluate(model, data.dev, K)["seqs"] == 4
    cfg = TrainConfig(n_masks=K, rank=4, alpha=8, steps=1000, batch_tokens=40, save_every=0, eval_every=5,
                      max_minutes=1e-4)
    out = Trainer(model, data, cfg, tmp_path / "ck", base_name="tiny", architecture=arch).run()
    assert out["step"] < 1000


def test_dtype_auto_picks_float32_on_a_cpu_without_bf16(monkeypatch):
    from mtpchat.train import base as B

    monkeypatch.setattr(B, "cpu_has_bf16", lambda: False)
    assert B.pick_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(B, "cpu_has_bf16", lambda: True)
    assert B.pick_dtype("auto", torch.device("cpu")) == torch.bfloat16
    assert B.pick_dtype("fp32") == torch.float32
