"""The metadata fuzzer behind tests/test_fuzz_metadata.py: hostile metadata *values* (not
structure: tests/test_native_gate.py covers truncation and garbage) in tiny GGUFs of the four
supported architectures, each run through the real CLI in a process of its own, since a failed
GGML_ASSERT kills the process.

Run as a script it forks one child per CLI call from a parent that has imported mtpchat once
(no llama.cpp threads exist yet at the fork), so ~50 cases take seconds, not a Python start-up
each:  python tests/metadata_fuzz.py CASES.json RESULTS.json
"""
from __future__ import annotations

import json
import math
import os
import random
import struct
import sys
from pathlib import Path

from gguf import GGUFValueType as T

HERE = Path(__file__).resolve().parent
ARCHS = ("llama", "qwen2", "qwen3", "gemma3")

# keys llama.cpp's load_hparams / vocab loader read ("{a}" is the architecture), by kind
COUNTS = ["{a}.block_count", "{a}.context_length", "{a}.embedding_length", "{a}.feed_forward_length",
          "{a}.attention.head_count", "{a}.attention.head_count_kv", "{a}.attention.key_length",
          "{a}.attention.value_length", "{a}.rope.dimension_count", "{a}.expert_count", "{a}.expert_used_count",
          "{a}.expert_group_count", "{a}.expert_group_used_count", "{a}.nextn_predict_layers", "{a}.vocab_size",
          "{a}.rope.scaling.original_context_length", "{a}.attention.sliding_window",
          "{a}.attention.sliding_window_pattern", "general.alignment", "general.sampling.top_k",
          "general.sampling.penalty_last_n", "mtp.version", "mtp.n_masks", "mtp.lora.rank"]
TOKEN_IDS = ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
             "tokenizer.ggml.eom_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
             "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.fim_pre_token_id"]
FLOATS = ["{a}.attention.layer_norm_rms_epsilon", "{a}.rope.freq_base", "{a}.rope.scaling.factor",
          "{a}.rope.scaling.attn_factor", "{a}.final_logit_softcapping", "{a}.rope.freq_base_swa",
          "general.sampling.temp", "general.sampling.top_p", "general.sampling.min_p",
          "general.sampling.penalty_repeat", "mtp.lora.alpha", "mtp.sampler.norm_eps"]
STRINGS = ["{a}.rope.scaling.type", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template",
           "mtp.sampler.type", "mtp.sampler.activation", "mtp.sampler.norm", "mtp.sampler.input", "general.type"]
BOOLS = ["tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix",
         "mtp.sampler.residual"]
ARRAYS = ["tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "mtp.mask_token_ids",
          "mtp.lora.target_modules", "{a}.attention.head_count", "{a}.feed_forward_length"]

# what exploring the pinned llama.cpp found aborting (exit 134), kept as fixed regression cases
KNOWN_ABORTS = [
    ("llama", "llama.block_count", 0, T.UINT32), ("llama", "llama.block_count", 513, T.UINT32),
    ("llama", "llama.block_count", 2**32 - 1, T.UINT32), ("qwen2", "qwen2.expert_count", 1, T.UINT32),
    ("llama", "llama.expert_used_count", 3, T.UINT32), ("qwen3", "qwen3.nextn_predict_layers", 3, T.UINT32),
    ("llama", "llama.expert_group_count", 1, T.UINT32),
    ("gemma3", "gemma3.attention.layer_norm_rms_epsilon", -1.0, T.FLOAT32),
    ("llama", "llama.attention.layer_norm_rms_epsilon", math.nan, T.FLOAT32),
    ("qwen2", "qwen2.rope.scaling.type", "bogus", T.STRING), ("llama", "tokenizer.ggml.model", "bert", T.STRING),
    ("llama", "tokenizer.ggml.model", "none", T.STRING), ("llama", "general.alignment", 1, T.UINT32),
    ("llama", "tokenizer.ggml.tokens", "duplicate", T.ARRAY),
    # the findings: ids out of range (eos == n_vocab: off by one), sampling defaults, alpha
    ("llama", "tokenizer.ggml.eos_token_id", "n_vocab", T.UINT32),
    ("gemma3", "tokenizer.ggml.bos_token_id", 100_000, T.UINT32),
    ("llama", "general.sampling.min_p", 2.0, T.FLOAT32), ("qwen3", "general.sampling.temp", math.nan, T.FLOAT32),
    ("llama", "mtp.lora.alpha", math.nan, T.FLOAT32), ("llama", "mtp.lora.alpha", math.inf, T.FLOAT32),
    ("llama", "mtp.lora.alpha", -1e30, T.FLOAT32), ("llama", "tokenizer.chat_template", 5, T.UINT32),
]

# edge values that are valid: accepted, and MTP output must still equal plain output
EDGE_OK = [
    ("llama", "mtp.lora.alpha", 9999.0, T.FLOAT32), ("gemma3", "mtp.lora.alpha", 1e-3, T.FLOAT32),
    ("qwen2", "mtp.sampler.norm_eps", 0.5, T.FLOAT32), ("qwen3", "general.sampling.top_k", 0, T.INT32),
]
FIXED = KNOWN_ABORTS + EDGE_OK


def _value(rng: random.Random, kind: str, n_vocab: int):
    """A hostile (value, type) for a key of this kind; sometimes of the wrong type."""
    r = rng.random()
    if r < 0.12:   # the wrong type altogether
        return rng.choice([("text", T.STRING), (True, T.BOOL), (1.5, T.FLOAT32), ([1, 2], T.ARRAY, T.UINT32),
                           (7, T.UINT32)])
    if kind in ("count", "id"):
        v = rng.choice([0, 1, 2, 3, -1, 7, 511, 512, 513, 1000, 2**31 - 1, 2**31, 2**32 - 1, 2**63,
                        n_vocab - 1, n_vocab, n_vocab + 1, rng.randrange(0, 4096)])
        if v < 0:
            return v, rng.choice([T.INT32, T.INT64])
        if v >= 2**32:
            return v, T.UINT64
        return v, rng.choice([T.UINT32, T.UINT32, T.UINT64] + ([T.INT32] if v < 2**31 else []))
    if kind == "float":
        v = rng.choice([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e-45, 1e38, -1e30, 2.0, 1e6, rng.uniform(-10, 10)])
        return v, rng.choice([T.FLOAT32, T.FLOAT32, T.FLOAT64])
    if kind == "string":
        return rng.choice(["", "bogus", "x" * 70_000, "llama", "gpt2", "linear", "\u00ff\u2603", "{{ x ", "{% for"]), T.STRING
    if kind == "bool":
        return rng.choice([(2, T.UINT8), (True, T.BOOL), (False, T.BOOL), ("yes", T.STRING)])
    raise ValueError(kind)


def _array(rng: random.Random, key: str, g) -> tuple:
    tokens = [str(t) for t in g.kv["tokenizer.ggml.tokens"]]
    n = len(tokens)
    if key == "tokenizer.ggml.tokens":
        choice = rng.choice(["duplicate", "short", "empty-entry", "one"])
        return _tokens(choice, tokens), T.ARRAY, T.STRING
    if key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        sub = T.FLOAT32 if key.endswith("scores") else T.INT32
        choice = rng.choice(["short", "nan", "wrong-type", "huge-values"])
        if choice == "short":
            return [0] * (n // 2), T.ARRAY, sub
        if choice == "nan" and sub is T.FLOAT32:
            return [math.nan] * n, T.ARRAY, sub
        if choice == "wrong-type":
            return ["x"] * n, T.ARRAY, T.STRING
        return [2**31 - 1] * n, T.ARRAY, T.INT32
    if key == "mtp.mask_token_ids":
        return rng.choice([([0, 1, 2], T.ARRAY, T.INT32), ([n, n + 1, n + 2], T.ARRAY, T.UINT32),
                           ([n - 1] * 3, T.ARRAY, T.INT32), ([-1, n - 2, n - 1], T.ARRAY, T.INT32),
                           (["a", "b", "c"], T.ARRAY, T.STRING), ([n - 2, n - 1], T.ARRAY, T.UINT32)])
    if key == "mtp.lora.target_modules":
        return rng.choice([(["attn_q", "bogus"], T.ARRAY, T.STRING), ([1, 2], T.ARRAY, T.UINT32), ([], T.ARRAY, T.STRING)])
    # per-layer counts
    return rng.choice([([4] * 600, T.ARRAY, T.UINT32), ([0, 4], T.ARRAY, T.UINT32), ([4], T.ARRAY, T.UINT32),
                       ([4, 2**31], T.ARRAY, T.UINT32), ([1.0, 2.0], T.ARRAY, T.FLOAT32)])


def _tokens(choice: str, tokens: list[str]) -> list[str]:
    t = list(tokens)
    if choice == "duplicate":
        t[300] = t[301]
    elif choice == "short":
        t = t[:len(t) // 2]
    elif choice == "empty-entry":
        t[300] = ""
    elif choice == "one":
        t = t[:1]
    return t


def make_cases(base_dir: Path, out_dir: Path, *, seed: int, n: int) -> list[dict]:
    """`n` cases: the FIXED ones first, then seeded random ones. base_dir holds tiny-{arch}.gguf
    and tiny-{arch}-mtp.gguf."""
    from gguf_edit import rewrite

    from mtpchat.gguf_file import GGUFFile

    rng = random.Random(seed)
    cases = []
    for i in range(n):
        if i < len(FIXED):
            arch, key, value, vtype = FIXED[i]
            mtp = key.startswith("mtp.") or (arch, key, value, vtype) in EDGE_OK
        else:
            arch = rng.choice(ARCHS)
            kind = rng.choice(["count"] * 5 + ["id"] * 3 + ["float"] * 4 + ["string"] * 2 + ["bool", "array", "array"])
            key = rng.choice({"count": COUNTS, "id": TOKEN_IDS, "float": FLOATS, "string": STRINGS,
                              "bool": BOOLS, "array": ARRAYS}[kind]).format(a=arch)
            mtp = key.startswith("mtp.") or rng.random() < 0.3
            value = vtype = None
        src = base_dir / f"tiny-{arch}{'-mtp' if mtp else ''}.gguf"
        g = GGUFFile(src)
        n_vocab = len(g.kv["tokenizer.ggml.tokens"])
        if value is None:
            spec = _array(rng, key, g) if kind == "array" else _value(rng, kind, n_vocab)
        elif value == "n_vocab":
            spec = (n_vocab, vtype)
        elif value == "duplicate":
            spec = (_tokens("duplicate", [str(t) for t in g.kv["tokenizer.ggml.tokens"]]), T.ARRAY, T.STRING)
        else:
            spec = (value, vtype)
        del g
        path = out_dir / f"case{i:02d}.gguf"
        try:
            rewrite(src, path, {key: spec})
        except (ValueError, TypeError, OverflowError, OSError, struct.error) as e:   # gguf-py cannot write it
            cases.append({"i": i, "key": key, "value": _show(spec[0]), "skipped": str(e)[:100]})
            continue
        cases.append({"i": i, "arch": arch, "key": key, "value": _show(spec[0]), "type": spec[1].name,
                      "mtp": mtp, "path": str(path)})
    return cases


def _show(v):
    if isinstance(v, list):
        return f"[{len(v)} items: {v[:3]!r}...]"
    if isinstance(v, str) and len(v) > 40:
        return v[:20] + f"...({len(v)} chars)"
    return repr(v)


# -- running: one forked child per CLI call ----------------------------------------------------

def _start(argv: list[str]):
    """mtpchat's CLI with `argv` in a forked child; returns (pid, stdout file, stderr file)."""
    import tempfile

    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.argv = ["mtpchat", *argv]
            from mtpchat.cli import main

            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - a traceback is a finding: print it
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid, out, err


def _finish(pid, out, err, status=None) -> dict:
    if status is None:
        return {"rc": None, "hung": True, "stderr": "", "stdout": ""}
    out.seek(0)
    err.seek(0)
    r = {"rc": os.waitstatus_to_exitcode(status), "stderr": err.read().decode("utf-8", "replace"),
         "stdout": out.read().decode("utf-8", "replace")}
    out.close()
    err.close()
    return r


def run_calls(calls: list[list[str]], *, jobs: int, timeout: float = 120.0) -> list[dict]:
    """Every argv of `calls` in its own forked child, `jobs` at a time (each uses one thread)."""
    import signal
    import time

    results: list[dict | None] = [None] * len(calls)
    running: dict[int, tuple] = {}   # pid -> (index, out, err, deadline)
    todo = list(range(len(calls)))
    while todo or running:
        while todo and len(running) < jobs:
            i = todo.pop(0)
            pid, out, err = _start(calls[i])
            running[pid] = (i, out, err, time.monotonic() + timeout)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid in running:
            i, out, err, _ = running.pop(pid)
            results[i] = _finish(pid, out, err, status)
            continue
        for pid, (i, out, err, deadline) in list(running.items()):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                running.pop(pid)
                results[i] = _finish(pid, out, err)
        time.sleep(0.005)
    return results


def run_cases(cases: list[dict], *, jobs: int | None = None) -> list[dict]:
    import mtpchat.cli  # noqa: F401 - imported once, before any fork (no llama.cpp threads yet)

    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    calls, where = [], []
    for c in cases:
        if "skipped" in c:
            continue
        common = ["run", c["path"], "-p", "hello", "-n", "4", "--temp", "0", "--ctx", "256", "--threads", "1", "--json"]
        mine = {"info": ["info", c["path"], "--json"]}
        if c["mtp"]:
            mine.update(run=common + ["--tree", "quadratic:2"], plain=common + ["--no-mtp"])
        else:
            mine["run"] = common
        for name, argv in mine.items():
            calls.append(argv)
            where.append((c["i"], name))
    done = run_calls(calls, jobs=jobs)
    results = {c["i"]: dict(c) for c in cases}
    for (i, name), r in zip(where, done):
        results[i][name] = r
    return [results[c["i"]] for c in cases]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    cases = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(run_cases(cases)))
