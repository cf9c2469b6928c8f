"""The `mtpchat` command: thin Typer entry points over the engine, the session and the tools."""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Optional

import typer

from . import __version__

def _no_flag_metavars() -> None:
    """Typer writes a type after every option in --help, `<bool>` after flags too, as if they
    took a value: flags show none."""
    try:
        from typer.core import TyperOption
    except ImportError:
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_mtpchat", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) and not getattr(self, "count", False) else shown(self, ctx)

    display_type_rich._mtpchat = True
    TyperOption.display_type_rich = display_type_rich


_no_flag_metavars()

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Local chat that writes several tokens per forward pass (gated-LoRA MTP on llama.cpp).")


class UsageError(ValueError):
    pass


def fail(msg: str, code: int = 1):
    print(f"mtpchat: error: {msg}", file=sys.stderr)
    raise typer.Exit(code)


def _version(value: bool):
    if value:
        import llama_cpp

        print(f"mtpchat {__version__} (llama-cpp-python {llama_cpp.__version__})")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    pass


def _check(name: str, value, ok: bool, what: str):
    if value is not None and not ok:
        raise UsageError(f"invalid value for {name}: {value} ({what})")


INT32_MAX = 2**31 - 1
MAX_CTX = 1 << 24       # tokens; llama.cpp allocates (and clears) the whole cache up front
MAX_THREADS = 512       # ggml's thread pools hold at most GGML_MAX_N_THREADS = 512


def _check_engine_options(ctx: int, threads: Optional[int], gpu_layers: int) -> None:
    """The options that end up in ctypes fields, which would truncate them silently."""
    _check("--ctx", ctx, 64 <= ctx <= MAX_CTX, f"64 to {MAX_CTX}")
    _check("--threads", threads, threads is None or 1 <= threads <= MAX_THREADS, f"1 to {MAX_THREADS}")
    _check("--gpu-layers", gpu_layers, -1 <= gpu_layers <= INT32_MAX, "-1 (all) or more")


def load_engine(model: Optional[str], *, ctx: int, threads: Optional[int], gpu_layers: int, mtp: bool,
                tree: str = "auto", verbose: bool = False, draft_head: str = "sampler", native: bool = True,
                graph_head: bool = True):
    from . import binding
    from .engine import Engine
    from .models import resolve

    from .contention import clamp_threads

    binding.set_verbose(verbose)
    threads, warning = clamp_threads(threads)
    if warning:
        print(f"mtpchat: warning: {warning}", file=sys.stderr)
    path = resolve(model)
    return Engine(path, n_ctx=ctx, n_threads=threads, n_gpu_layers=gpu_layers, mtp=mtp, tree=tree,
                  draft_head=draft_head, native=native, graph_head=graph_head)


def _errors(fn):
    """Known failures become one line on stderr and exit 1; Ctrl-C exits 130."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .binding import LlamaError
        from .chat import ChatTemplateError
        from .format import FormatError
        from .models import ModelNotFound
        from .session import PromptTooLong

        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            raise typer.Exit(130)
        except (UsageError, LlamaError, FormatError, ModelNotFound, PromptTooLong, ChatTemplateError,
                ValueError, OSError) as e:
            fail(str(e) or e.__class__.__name__)
    return wrapper


@app.command()
@_errors
def run(
    model: Optional[str] = typer.Argument(None, help="A .gguf path or org/repo:file.gguf; default: the embedded SmolLM2-135M."),
    prompt: Optional[str] = typer.Option(None, "-p", "--prompt", help="Answer this and exit (stdin, if piped, is appended)."),
    system: Optional[str] = typer.Option(None, "-s", "--system", help="System prompt."),
    max_tokens: int = typer.Option(512, "-n", "--max-tokens", help="Most tokens per answer."),
    temp: Optional[float] = typer.Option(None, "--temp", help="Temperature (0 = greedy). Default: the GGUF's, else 0.8."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sample among the most likely tokens whose probabilities add up to P (1: off). Default: the GGUF's, else 0.95."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample among the K most likely tokens (0: all). Default: the GGUF's, else 40."),
    min_p: Optional[float] = typer.Option(None, "--min-p", help="Drop tokens less likely than P times the most likely one (0: off). Default: the GGUF's, else 0.05."),
    repeat_penalty: Optional[float] = typer.Option(None, "--repeat-penalty", help="Applied in verification too: output stays exact."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the sampler's random numbers, for repeatable sampled answers. Default: a new one each run."),
    stop: Optional[list[str]] = typer.Option(None, "--stop", "-r", help="End the answer at this text (not printed); repeatable."),
    ctx: int = typer.Option(4096, "--ctx", help="Context size in tokens (llama.cpp rounds it up to a multiple of 256)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads. Default: the physical cores, and fewer while another program makes decoding crawl (said once on stderr)."),
    gpu_layers: int = typer.Option(0, "-ngl", "--gpu-layers", help="Layers to offload to the GPU (-1: all)."),
    no_mtp: bool = typer.Option(False, "--no-mtp", help="Decode plainly even with an MTP model."),
    tree: str = typer.Option("auto", "--tree", help="auto (sized to this machine) | plain | linear:K | quadratic:K | lookup:K"),
    no_markdown: bool = typer.Option(False, "--no-markdown", help="Print answers as they come, without rendering Markdown."),
    plain_alias: bool = typer.Option(False, "--plain", hidden=True),  # the old name of --no-markdown
    show_drafts: bool = typer.Option(False, "--show-drafts", help="Colour tokens that came from accepted drafts."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the answer and statistics."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Statistics and llama.cpp's warnings and errors on stderr (MTPCHAT_LLAMA_LOG=1: llama.cpp's whole log)."),
):
    """Chat with a model; with -p or a pipe, answer once and exit."""
    from dataclasses import replace

    from .session import Session, sampling_defaults

    _check("--max-tokens", max_tokens, 1 <= max_tokens <= INT32_MAX, f"1 to {INT32_MAX}")
    _check("--temp", temp, temp is None or (math.isfinite(temp) and temp >= 0), "0 or more")
    _check("--top-p", top_p, top_p is None or 0 < top_p <= 1, "in (0, 1]")
    _check("--top-k", top_k, top_k is None or 0 <= top_k <= INT32_MAX, "0 or more")
    _check("--min-p", min_p, min_p is None or 0 <= min_p < 1, "in [0, 1)")
    _check("--repeat-penalty", repeat_penalty,
           repeat_penalty is None or (math.isfinite(repeat_penalty) and repeat_penalty > 0), "more than 0")
    _check("--seed", seed, seed is None or 0 <= seed < 2**64, "0 or more")
    _check_engine_options(ctx, threads, gpu_layers)

    interactive = prompt is None and sys.stdin.isatty() and sys.stdout.isatty() and not as_json
    text = None
    if not interactive:
        piped = "" if sys.stdin.isatty() else sys.stdin.read()
        text = "\n\n".join(t for t in (prompt, piped) if t and t.strip())
        if not text.strip():
            raise UsageError("empty prompt (give -p TEXT or pipe text on stdin)")

    from .engine import parse_tree

    parse_tree(tree)
    engine = load_engine(model, ctx=ctx, threads=threads, gpu_layers=gpu_layers, mtp=not no_mtp,
                         tree="plain" if no_mtp else tree, verbose=verbose)
    if not engine.mtp and not no_mtp and (interactive or verbose):
        print("mtpchat: this model has no MTP parts: decoding plainly", file=sys.stderr)
    ctx_note = None
    if engine.ctx.n_ctx != ctx:
        ctx_note = f"--ctx {ctx} became {engine.ctx.n_ctx} (llama.cpp sizes the context in multiples of 256)"
        if interactive or verbose:
            print(f"mtpchat: note: {ctx_note}", file=sys.stderr)
    params = sampling_defaults(engine.model)
    given = {"temperature": temp, "top_p": top_p, "top_k": top_k, "min_p": min_p,
             "repeat_penalty": repeat_penalty, "seed": seed}
    params = replace(params, **{k: v for k, v in given.items() if v is not None})
    session = Session(engine, system=system, params=params, max_tokens=max_tokens, stop=tuple(stop or ()))
    if engine.mtp and engine.kind == "auto":
        if interactive:   # the first start on a machine measures for a few seconds: say so
            from rich.console import Console

            with Console(stderr=True).status("this machine's pass costs (measured once per model and thread "
                                             "count, then cached) ..."):
                engine.calibrate()
        else:
            engine.calibrate()
    governor = None
    if threads is None and gpu_layers == 0:
        # fewer threads while another program makes decoding crawl (mtpchat/contention.py)
        from .contention import Governor

        governor = Governor.for_engine(
            engine, say=lambda m: print(f"mtpchat: {m}", file=sys.stderr, flush=True),
            verbose=(lambda m: print(f"mtpchat: {m}", file=sys.stderr, flush=True)) if verbose else None)
    if interactive:
        from .repl import Repl

        Repl(session, markdown=not (no_markdown or plain_alias), show_drafts=show_drafts, governor=governor,
             notes=[ctx_note] if ctx_note else []).loop()
        return
    _answer_once(session, text, as_json=as_json, verbose=verbose, governor=governor, ctx_note=ctx_note)


def _answer_once(session, text: str, *, as_json: bool, verbose: bool, governor=None, ctx_note=None) -> None:
    import itertools

    from .session import PromptTooLong
    from .stats import status_line

    out = []
    tokens = session.ask(text)
    if governor is not None:
        tokens = governor.watch(tokens, lambda: session.last)
    try:
        first = next(tokens, None)   # the prompt is checked against the context here
    except PromptTooLong as e:
        raise PromptTooLong(f"{e}; {ctx_note}" if ctx_note else str(e)) from None
    for tok in itertools.chain([first] if first is not None else [], tokens):
        if as_json:
            out.append(tok.text)
        else:
            sys.stdout.write(tok.text)
            sys.stdout.flush()
    if session.dropped:
        print(f"mtpchat: dropped {session.dropped} old turn(s) to fit the context", file=sys.stderr)
    st = session.last
    if as_json:
        print(json.dumps({"model": os.path.basename(session.engine.model.path), "text": "".join(out),
                          "mtp": session.engine.kind != "plain", "truncated": st.truncated,
                          "threads": session.engine.ctx.n_threads, "stats": st.as_dict()}))
    else:
        sys.stdout.write("\n")
        if st.truncated and (verbose or sys.stderr.isatty()):
            print(f"mtpchat: {cut_off_note(st, session)}", file=sys.stderr)
    if verbose:
        print(status_line(st, plain=session.engine.kind == "plain"), file=sys.stderr)


def cut_off_note(st, session) -> str:
    """What to say when an answer stopped short: at the token limit or a full context."""
    if st.finish_reason == "context":
        return f"the answer was cut off: the context ({session.engine.ctx.n_ctx} tokens) is full (--ctx raises it)"
    return f"the answer was cut off at the {session.max_tokens}-token limit (-n/--max-tokens raises it)"


@app.command()
@_errors
def info(
    model: Optional[str] = typer.Argument(None, help="A .gguf path or org/repo:file.gguf; default: the embedded model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Describe a model: architecture, size, quantisation, context, MTP parts, chat template."""
    from .model_info import describe

    d = describe(model)
    if as_json:
        print(json.dumps(d, indent=1))
        return
    from rich.console import Console
    from rich.markup import escape

    # whole values, never cut to the terminal (the path is what `convert --base` needs); long
    # lines wrap in a terminal and stay one line in a pipe
    out = Console(soft_wrap=True, highlight=False)
    for line in info_lines(d):
        key, _, rest = line.partition("  ")
        out.print(f"[bold]{escape(key)}[/]  {escape(rest)}" if key.strip() else escape(line))


def info_lines(d: dict) -> list[str]:
    """`mtpchat info` as text: one `key  value` line per field, tensor types as a small table."""
    def show(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, (list, tuple)):
            return ", ".join(map(str, v))
        return "" if v is None else str(v)

    w = max(map(len, d)) if d else 0
    lines = []
    for k, v in d.items():
        if k == "tensor_types" and isinstance(v, dict):
            rows = sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))
            tw = max([len("type")] + [len(t) for t in v])
            nw = max([len("tensors")] + [len(str(n)) for n in v.values()])
            lines.append(f"{k:<{w}}  {'type':<{tw}}  {'tensors':>{nw}}")
            lines += [f"{'':<{w}}  {t:<{tw}}  {n:>{nw}}" for t, n in rows]
        else:
            lines.append(f"{k:<{w}}  {show(v)}".rstrip())
    return lines


@app.command()
@_errors
def bench(
    model: Optional[str] = typer.Argument(None, help="A .gguf path or org/repo:file.gguf; default: the embedded model."),
    prompts: str = typer.Option(..., "--prompts", help="JSON Lines prompt file (DESIGN.md section 6)."),
    max_tokens: int = typer.Option(128, "-n", "--max-tokens", help="Most tokens per answer."),
    tree: str = typer.Option("auto", "--tree", help="auto | linear:K | quadratic:K | lookup:K (the MTP side)"),
    ctx: int = typer.Option(4096, "--ctx", help="Context size in tokens."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads, fixed for the whole run. Default: the physical cores."),
    gpu_layers: int = typer.Option(0, "-ngl", "--gpu-layers", help="Layers to offload to the GPU (-1: all)."),
    repeats: int = typer.Option(3, "--repeats", help="Runs per prompt and side, alternating; the fastest counts."),
    draft_head: str = typer.Option("sampler", "--draft-head", help="sampler | plain: draft with the sampler head, or with the top mask logit (to measure what the head adds)."),
    step: str = typer.Option("native", "--step", help="native | host | python: one C call per step (verifying and drafting inside the pass's graph where the step has mask blocks), the same call doing both on the host from the pass's logits, or the Python reference step (to measure what each saves)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Plain vs MTP greedy decoding of the same GGUF, prompt by prompt, in one process."""
    from .bench import load_prompts, render, run_bench
    from .engine import parse_tree

    if parse_tree(tree)[0] == "plain":
        raise UsageError("--tree plain would compare plain decoding with itself (auto, linear:K, quadratic:K, lookup:K)")
    _check("--max-tokens", max_tokens, 1 <= max_tokens <= INT32_MAX, f"1 to {INT32_MAX}")
    _check("--repeats", repeats, 1 <= repeats <= 1000, "1 to 1000")
    _check_engine_options(ctx, threads, gpu_layers)
    if step not in ("native", "host", "python"):
        raise UsageError(f"--step must be native, host or python, not {step!r}")
    items = load_prompts(prompts)
    engine = load_engine(model, ctx=ctx, threads=threads, gpu_layers=gpu_layers, mtp=True, tree=tree,
                         draft_head=draft_head, native=step != "python", graph_head=step == "native")
    if engine.kind == "plain":
        raise UsageError(f"{os.path.basename(engine.model.path)} has no MTP parts: bench compares MTP with plain "
                         f"decoding of the same file (build an MTP model with mtpchat convert CHECKPOINT, or "
                         f"compare prompt-lookup drafts with --tree lookup:K)")
    result = run_bench(engine, items, max_tokens=max_tokens, tree=tree, repeats=repeats)
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        render(result)


@app.command()
@_errors
def calibrate(
    model: Optional[str] = typer.Argument(None, help="A .gguf path or org/repo:file.gguf; default: the embedded model."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (the table is per thread count)."),
    gpu_layers: int = typer.Option(0, "-ngl", "--gpu-layers", help="Layers to offload to the GPU (-1: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Measure again what a pass of n tokens costs on this machine (the table `--tree auto` plans
    with) and replace the cached table. Run it on a quiet machine."""
    _check_engine_options(512, threads, gpu_layers)
    engine = load_engine(model, ctx=512, threads=threads, gpu_layers=gpu_layers, mtp=True)
    table = engine.calibrate(force=True)
    note = engine.calibration_note
    if as_json:
        print(json.dumps({"model": os.path.basename(engine.model.path), "threads": engine.ctx.n_threads,
                          "seconds_per_pass": {str(n): t for n, t in sorted(table.items())}, "note": note}))
        return
    one = table[1]
    print(f"{os.path.basename(engine.model.path)}, {engine.ctx.n_threads} threads: "
          + ", ".join(f"{n} tok {t * 1e3:.2f} ms ({t / one:.2f}x)" for n, t in sorted(table.items()) if n >= 1)
          + f"; new graph {table.get(0, 0.0) * 1e3:.1f} ms")
    if note:
        print(f"mtpchat: {note}", file=sys.stderr)


def _register_optional():
    """convert and train live in their own folders; each adds its command here."""
    for mod in ("mtpchat.convert.command", "mtpchat.train.command"):
        try:
            module = __import__(mod, fromlist=["register"])
        except ImportError:
            continue
        module.register(app)


_register_optional()


def main():
    # typer bundles its own click: reach its exception types through typer's public ones
    usage_error = typer.BadParameter.__mro__[1]      # UsageError
    click_error = typer.BadParameter.__mro__[2]      # ClickException
    args = sys.argv[1:]
    if not args:
        args = ["--help"]
    try:
        rv = app(args=args, standalone_mode=False)
    except usage_error as e:
        # one line and exit 1 (click's default prints a usage block and exits 2)
        print(f"mtpchat: error: {e.format_message()}", file=sys.stderr)
        sys.exit(1)
    except click_error as e:
        print(f"mtpchat: error: {e.format_message()}", file=sys.stderr)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        print(file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
