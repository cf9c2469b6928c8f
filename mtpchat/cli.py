"""The `mtpchat` command: thin Typer entry points over the engine, the session and the tools."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

import typer

from . import __version__

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


def load_engine(model: Optional[str], *, ctx: int, threads: Optional[int], gpu_layers: int, mtp: bool,
                tree: str = "auto", verbose: bool = False):
    from . import binding
    from .engine import Engine
    from .models import resolve

    binding.set_verbose(verbose)
    path = resolve(model)
    return Engine(path, n_ctx=ctx, n_threads=threads, n_gpu_layers=gpu_layers, mtp=mtp, tree=tree)


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
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    top_k: Optional[int] = typer.Option(None, "--top-k"),
    min_p: Optional[float] = typer.Option(None, "--min-p"),
    repeat_penalty: Optional[float] = typer.Option(None, "--repeat-penalty", help="Applied in verification too: output stays exact."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    ctx: int = typer.Option(4096, "--ctx", help="Context size in tokens."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    gpu_layers: int = typer.Option(0, "-ngl", "--gpu-layers", help="Layers to offload to the GPU (-1: all)."),
    no_mtp: bool = typer.Option(False, "--no-mtp", help="Decode plainly even with an MTP model."),
    tree: str = typer.Option("auto", "--tree", help="auto (sized to this machine) | plain | linear:K | quadratic:K | lookup:K"),
    plain: bool = typer.Option(False, "--plain", help="No Markdown rendering."),
    show_drafts: bool = typer.Option(False, "--show-drafts", help="Colour tokens that came from accepted drafts."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the answer and statistics."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Statistics (and llama.cpp's log) on stderr."),
):
    """Chat with a model; with -p or a pipe, answer once and exit."""
    from dataclasses import replace

    from .session import Session, sampling_defaults

    _check("--max-tokens", max_tokens, max_tokens >= 1, "at least 1")
    _check("--temp", temp, temp is None or temp >= 0, "0 or more")
    _check("--top-p", top_p, top_p is None or 0 < top_p <= 1, "in (0, 1]")
    _check("--top-k", top_k, top_k is None or top_k >= 0, "0 or more")
    _check("--min-p", min_p, min_p is None or 0 <= min_p < 1, "in [0, 1)")
    _check("--repeat-penalty", repeat_penalty, repeat_penalty is None or repeat_penalty > 0, "more than 0")
    _check("--ctx", ctx, ctx >= 64, "at least 64")
    _check("--threads", threads, threads is None or threads >= 1, "at least 1")

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
    params = sampling_defaults(engine.model)
    given = {"temperature": temp, "top_p": top_p, "top_k": top_k, "min_p": min_p,
             "repeat_penalty": repeat_penalty, "seed": seed}
    params = replace(params, **{k: v for k, v in given.items() if v is not None})
    session = Session(engine, system=system, params=params, max_tokens=max_tokens)
    if engine.mtp and engine.kind == "auto":
        engine.calibrate()
    if interactive:
        from .repl import Repl

        Repl(session, markdown=not plain, show_drafts=show_drafts).loop()
        return
    _answer_once(session, text, as_json=as_json, verbose=verbose)


def _answer_once(session, text: str, *, as_json: bool, verbose: bool) -> None:
    from .stats import status_line

    out = []
    for tok in session.ask(text):
        if as_json:
            out.append(tok.text)
        else:
            sys.stdout.write(tok.text)
            sys.stdout.flush()
    if session.dropped:
        print(f"mtpchat: dropped {session.dropped} old turn(s) to fit the context", file=sys.stderr)
    if as_json:
        print(json.dumps({"model": os.path.basename(session.engine.model.path), "text": "".join(out),
                          "mtp": session.engine.kind != "plain", "stats": session.last.as_dict()}))
    else:
        sys.stdout.write("\n")
    if verbose:
        print(status_line(session.last, plain=session.engine.kind == "plain"), file=sys.stderr)


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
    from rich.table import Table

    t = Table(show_header=False, box=None)
    for k, v in d.items():
        t.add_row(f"[bold]{k}[/]", str(v))
    Console().print(t)


@app.command()
@_errors
def bench(
    model: Optional[str] = typer.Argument(None, help="A .gguf path or org/repo:file.gguf; default: the embedded model."),
    prompts: str = typer.Option(..., "--prompts", help="JSON Lines prompt file (DESIGN.md section 6)."),
    max_tokens: int = typer.Option(128, "-n", "--max-tokens"),
    tree: str = typer.Option("auto", "--tree", help="auto | plain | linear:K | quadratic:K | lookup:K"),
    ctx: int = typer.Option(4096, "--ctx"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    gpu_layers: int = typer.Option(0, "-ngl", "--gpu-layers"),
    repeats: int = typer.Option(3, "--repeats", help="Runs per prompt and side, alternating; the fastest counts."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Plain vs MTP greedy decoding of the same GGUF, prompt by prompt, in one process."""
    from .bench import load_prompts, render, run_bench
    from .engine import parse_tree

    parse_tree(tree)
    _check("--max-tokens", max_tokens, max_tokens >= 1, "at least 1")
    _check("--repeats", repeats, repeats >= 1, "at least 1")
    items = load_prompts(prompts)
    engine = load_engine(model, ctx=ctx, threads=threads, gpu_layers=gpu_layers, mtp=True, tree=tree)
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
