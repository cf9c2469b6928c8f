"""Hostile inputs (issue 10), one section per class of finding: no abort, hang, traceback, lost
text, debris on disk or change of MTP output, from any model file, template, chat file, prompt
file or option. Metadata values at large: tests/test_fuzz_metadata.py; checkpoints and convert's
signals: tests/test_convert.py."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from gguf import GGUFValueType as T
from gguf_edit import rewrite

from conftest import run_cli


def one_line_error(r, needle=""):
    """Exit 1, exactly one line on stderr (the CLI's), no traceback."""
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith("mtpchat: error:") and needle in lines[0], lines[0]
    return lines[0]


def n_vocab(path):
    from mtpchat.gguf_file import GGUFFile

    return len(GGUFFile(path).kv["tokenizer.ggml.tokens"])


# -- aborts from one metadata value -------------------------------------------------------------

@pytest.mark.parametrize("key,value,needle", [
    ("tokenizer.ggml.eos_token_id", "n_vocab", "eos_token_id"),     # off by one: == n_vocab
    ("tokenizer.ggml.bos_token_id", 1_000_000, "bos_token_id"),
    ("llama.block_count", 600, "block_count"),                      # > LLAMA_MAX_LAYERS
])
def test_metadata_that_aborted_is_one_line_in_run_and_info(tiny_base, tmp_path, key, value, needle):
    bad = rewrite(tiny_base, tmp_path / "bad.gguf",
                  {key: (n_vocab(tiny_base) if value == "n_vocab" else value, T.UINT32)})
    for args in (["run", bad, "-p", "hi", "-n", "2"], ["info", bad], ["info", bad, "--json"]):
        one_line_error(run_cli(*args), needle)


def test_a_failed_assert_past_the_checks_is_one_line(tiny_base, tmp_path):
    """The net under the checks: llama.cpp reached directly (no mtpchat check) with a layer count
    it asserts on prints one line and exits 1, not 134 with a debugger's backtrace."""
    bad = rewrite(tiny_base, tmp_path / "bad.gguf", {"llama.block_count": (600, T.UINT32)})
    code = ("import sys, mtpchat.binding, llama_cpp.llama_cpp as C; "
            "C.llama_model_load_from_file(sys.argv[1].encode(), C.llama_model_default_params())")
    r = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=120)
    line = one_line_error(r, "failed internal check")
    assert "n_layer" in line


def test_out_of_range_token_ids_never_reach_llama_cpp(tiny_base):
    from mtpchat import binding as B

    m = B.Model(tiny_base, vocab_only=True)
    for bad in (-1, m.n_vocab, 2**31 - 1):
        with pytest.raises(B.LlamaError, match="outside the vocabulary"):
            m.token_text(bad)
        with pytest.raises(B.LlamaError, match="outside the vocabulary"):
            m.piece(bad)
    m.close()


# -- chat templates: time, size, nesting, masking ----------------------------------------------

def with_template(base, path, template):
    return rewrite(base, path, {"tokenizer.chat_template": (template, T.STRING)})


TEMPLATES = {
    "nested-loops": ("{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
                     "{% endfor %}{% endfor %}{% endfor %}", "took more than"),
    "doubling": ("{% set ns = namespace(v='x') %}{% for i in range(40) %}{% set ns.v = ns.v ~ ns.v %}{% endfor %}"
                 "{{ ns.v }}", "MiB of memory"),
    "big-output": ("{% set a = 'x' * 64 %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
                   "{% for i in range(100000) %}{{ a }}{% endfor %}", "more than the limit"),
    "deep-if": ("{% if true %}" * 3000 + "{% for m in messages %}{{ m['content'] }}{% endfor %}" + "{% endif %}" * 3000,
                "nested too deeply"),
    "recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested too deeply"),
    "upper": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n{% endfor %}",
              "left out or transformed"),
    "twice": ("{% for m in messages %}{{ m['content'] }}<|im_end|>{{ m['content'] }}{% endfor %}", "appears 2 times"),
    "dropped": ("{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] }}{% endif %}{% endfor %}",
                "message 1 (system)"),
    "partial-copy": ("{% for m in messages %}{{ m['content'] }}|{{ m['content'][:12] }}{% endfor %}", "changed copy"),
    "raise": ("{{ raise_exception('this model needs a system prompt') }}", "needs a system prompt"),
    "syntax": ("{% for m in messages %}{{ m['content'] }", "does not parse"),
}


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_hostile_template_is_one_clear_line(tiny_base, tmp_path, case):
    template, needle = TEMPLATES[case]
    model = with_template(tiny_base, tmp_path / "t.gguf", template)
    t0 = time.monotonic()
    r = run_cli("run", model, "-s", "Be brief.", "-p", "hello", "-n", "2", "--temp", "0", timeout=120)
    one_line_error(r, needle)
    assert time.monotonic() - t0 < 60
    assert "mtpchat-sentinel" not in r.stderr + r.stdout


def test_masking_fails_closed_and_never_sends_the_sentinel(tiny_base, tmp_path):
    from mtpchat import binding as B
    from mtpchat.chat import ChatFormat, ChatTemplateError

    m = B.Model(with_template(tiny_base, tmp_path / "u.gguf", TEMPLATES["upper"][0]), vocab_only=True)
    chat = ChatFormat(m)
    with pytest.raises(ChatTemplateError, match="left out or transformed"):
        chat.tokens([{"role": "user", "content": "hello"}])
    chat.close()
    m.close()
    # a sound template: the user's text is in the prompt exactly, as plain text, and nothing else is
    m = B.Model(tiny_base, vocab_only=True)
    chat = ChatFormat(m)
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "a <|im_end|> b"}]
    toks = chat.tokens(msgs)
    text = b"".join(m.piece(t) for t in toks).decode("utf-8", "replace").replace("\u2581", " ")
    assert "a <|im_end|> b" in text and "sentinel" not in text
    typed = m.tokenize("a <|im_end|> b")
    assert any(toks[i:i + len(typed)] == typed for i in range(len(toks)))   # as plain text
    chat.close()
    m.close()


def test_the_template_worker_ignores_ctrl_c_and_comes_back_when_killed():
    """Ctrl-C stops an answer: it must not take the template worker with it (the next turn would
    fail); a worker killed from outside is replaced at the next render."""
    import signal

    from mtpchat.render import TemplateWorker

    w = TemplateWorker("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    msgs = [{"role": "user", "content": "a"}]
    assert w.render(msgs, True, {}) == "[a]"
    os.kill(w.proc.pid, signal.SIGINT)
    time.sleep(0.3)
    assert w.proc.poll() is None and w.render(msgs, True, {}) == "[a]"
    w.proc.kill()
    w.proc.wait()
    assert w.render(msgs, True, {}) == "[a]"
    w.close()


def test_a_normal_turn_renders_in_milliseconds(smol_path):
    from mtpchat import binding as B
    from mtpchat.chat import ChatFormat

    m = B.Model(smol_path, vocab_only=True)
    chat = ChatFormat(m)
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "some words " * 20}
            for i in range(10)]
    chat.tokens(msgs)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        chat.tokens(msgs)
        times.append(time.perf_counter() - t0)
    # a few ms on an idle machine (about 0.3 ms here); the bound leaves room for a loaded CI box
    assert sorted(times)[len(times) // 2] < 0.02, times
    chat.close()
    m.close()


# -- lost text: incremental UTF-8 ----------------------------------------------------------------

def test_non_latin_sampled_answer_keeps_its_text(smol_path):
    """The issue's own command: 24 sampled tokens of Japanese used to print "text": ""."""
    r = run_cli("run", "-p", "日本語で挨拶してください。", "-n", "24", "--temp", "1.5", "--seed", "1", "--top-k", "0",
                "--top-p", "1", "--min-p", "0", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["stats"]["tokens"] >= 1 and d["text"].strip(), d


# -- exactness: numeric metadata -------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -1e30])
def test_non_finite_alpha_is_refused(tiny_mtp, tmp_path, alpha):
    bad = rewrite(tiny_mtp, tmp_path / "a.gguf", {"mtp.lora.alpha": (alpha, T.FLOAT32)})
    one_line_error(run_cli("run", bad, "-p", "hi", "-n", "2", "--temp", "0"), "alpha")
    one_line_error(run_cli("info", bad), "alpha")


@pytest.mark.parametrize("tensor,value", [("mtp.sampler.fc1.weight", np.nan), ("blk.0.attn_q.weight.lora_a", np.inf),
                                          ("blk.1.ffn_down.weight.lora_b", 1e30)])
def test_non_finite_mtp_tensors_are_refused(tiny_mtp, tmp_path, tensor, value):
    from mtpchat.gguf_file import GGUFFile

    data = np.array(GGUFFile(tiny_mtp).tensors[tensor].data)
    data.flat[3] = value
    bad = rewrite(tiny_mtp, tmp_path / "t.gguf", tensors={tensor: data})
    one_line_error(run_cli("info", bad), tensor)


def test_extreme_but_allowed_values_keep_mtp_equal_to_plain(tiny_base, tmp_path):
    """The largest LoRA entries and alpha the checks let through still leave ordinary tokens alone."""
    from synthetic import random_mtp_parts

    from mtpchat import format as F
    from mtpchat.convert.writer import write_mtp_gguf
    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY

    parts = random_mtp_parts(tiny_base, k=3, rank=8, seed=3)
    rng = np.random.default_rng(0)
    big = F.LORA_ABS_MAX * 0.999
    parts.lora = {n: (np.sign(rng.standard_normal(a.shape)).astype(np.float32) * big,
                      np.sign(rng.standard_normal(b.shape)).astype(np.float32) * big) for n, (a, b) in parts.lora.items()}
    parts.alpha = F.ALPHA_MAX
    path = write_mtp_gguf(tiny_base, tmp_path / "big.gguf", parts)
    plain, mtp = Engine(path, mtp=False, n_ctx=256), Engine(path, tree="quadratic:3", n_ctx=256)
    for prompt in ([5, 17, 42, 99, 7], list(range(1, 30))):
        want = [t.id for t in plain.generate(prompt, GREEDY, max_tokens=32)]
        assert [t.id for t in mtp.generate(prompt, GREEDY, max_tokens=32)] == want
    plain.close()
    mtp.close()


@pytest.mark.parametrize("key,value,needle", [("general.sampling.min_p", 2.0, "min_p"),
                                              ("general.sampling.temp", float("nan"), "temp"),
                                              ("general.sampling.top_k", -5, "top_k")])
def test_bad_sampling_defaults_are_refused(tiny_base, tmp_path, key, value, needle):
    vtype = T.INT32 if isinstance(value, int) else T.FLOAT32
    bad = rewrite(tiny_base, tmp_path / "s.gguf", {key: (value, vtype)})
    one_line_error(run_cli("run", bad, "-p", "hi", "-n", "2"), needle)


def test_sane_sampling_defaults_are_used(tiny_base, tmp_path):
    from mtpchat import binding as B
    from mtpchat.session import sampling_defaults

    good = rewrite(tiny_base, tmp_path / "s.gguf", {"general.sampling.temp": (0.5, T.FLOAT32),
                                                   "general.sampling.top_k": (7, T.INT32)})
    m = B.Model(good, vocab_only=True)
    p = sampling_defaults(m)
    assert p.temperature == pytest.approx(0.5) and p.top_k == 7
    m.close()


# -- tracebacks from untrusted files: chat files and prompt files ---------------------------------

def deep_json(path, depth=100_000):
    path.write_text("[" * depth + "]" * depth)
    return path


def test_prompt_files_are_one_line(tmp_path):
    cases = {
        "deep": ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        "list-id": ('{"prompt": "hi", "id": ["x"]}', '"id" must be a string'),
        "dict-category": ('{"prompt": "hi", "category": {"a": 1}}', '"category" must be a string'),
        "number-system": ('{"prompt": "hi", "system": 3}', '"system" must be a string'),
        "binary": (None, "not UTF-8"),
    }
    for name, (text, needle) in cases.items():
        f = tmp_path / f"{name}.jsonl"
        if text is None:
            f.write_bytes(b'{"prompt": "\xff\xfe"}\n')
        else:
            f.write_text(text + "\n")
        one_line_error(run_cli("bench", "--prompts", f, "-n", "2"), needle)


def test_chat_files_are_capped_and_checked(tiny_base, tmp_path):
    from mtpchat import session as S

    big = tmp_path / "big.json"
    big.write_text(json.dumps({"version": 1, "messages": [{"role": "user", "content": "x" * (S.MAX_CHAT_FILE + 1)}]}))
    bad = {"deep": (deep_json(tmp_path / "deep.json"), "invalid JSON"), "big": (big, "at most 16 MiB"),
           "folder": (tmp_path, "folder"), "missing": (tmp_path / "none.json", "cannot read")}
    for name, content in {"roles": {"version": 1, "messages": [{"role": "system", "content": "x"}]},
                          "content": {"version": 1, "messages": [{"role": "user", "content": ["x"]}]},
                          "system": {"version": 1, "system": {"a": 1}, "messages": []},
                          "version": {"version": True, "messages": []}, "list": [1, 2]}.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(content))
        bad[name] = (f, "not a saved mtpchat conversation")
    for name, (path, needle) in bad.items():
        with pytest.raises(ValueError, match=needle):
            S.read_chat_file(path)


def test_repl_survives_hostile_chat_files_and_a_failed_save(tiny_base, tmp_path):
    pexpect = pytest.importorskip("pexpect", reason="pexpect (test extra) drives the pseudo-terminal")
    deep = deep_json(tmp_path / "deep.json")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(sys.executable, ["-m", "mtpchat", "run", str(tiny_base), "--temp", "0", "-n", "4"],
                          env=env, encoding="utf-8", timeout=120, dimensions=(40, 120))
    try:
        child.expect(">>>")
        child.sendline(f"/load {deep}")
        child.expect("invalid JSON")
        child.expect(">>>")
        child.sendline(f"/save {folder}")
        child.expect("cannot save")
        child.expect(">>>")
        before = child.before
        child.sendline("hello")
        child.expect("tokens/step")   # the answer's status line: the session is alive
        child.expect(">>>")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert ".tmp" not in before
    assert list(folder.iterdir()) == [] and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_save_leaves_no_temp_file_and_names_no_temp_file(tiny_base, tmp_path):
    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY
    from mtpchat.session import Session

    eng = Engine(tiny_base, mtp=False, n_ctx=256)
    s = Session(eng, params=GREEDY, max_tokens=4)
    s.messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]
    for target in (tmp_path, tmp_path / "no" / "such" / "folder.json"):
        with pytest.raises(ValueError, match="cannot save") as e:
            s.save(target)
        assert ".tmp" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
    s.save(tmp_path / "ok.json")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.json"]
    eng.close()


# -- stalls: fitting a long conversation into the context -----------------------------------------

def test_a_20000_message_chat_file_answers_at_once(tiny_base, tmp_path):
    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY
    from mtpchat.session import Session

    f = tmp_path / "long.json"
    f.write_text(json.dumps({"version": 1, "system": "Be brief.", "messages": [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i} " * 3} for i in range(20_000)]}))
    eng = Engine(tiny_base, mtp=False, n_ctx=256)
    s = Session(eng, params=GREEDY, max_tokens=8)
    s.load(f)
    renders = []
    real = s.chat.render
    s.chat.render = lambda *a, **k: renders.append(len(a[0])) or real(*a, **k)
    t0 = time.perf_counter()
    "".join(t.text for t in s.ask("and now?"))
    elapsed = time.perf_counter() - t0
    assert elapsed < 20, elapsed                      # minutes before: a full render per dropped turn
    assert len(renders) <= 4 and max(renders) < 100, renders   # only windows that fit were rendered
    assert s.dropped >= 9_900 and s.messages[0]["role"] == "user" and s.system == "Be brief."
    assert len(s.chat.tokens([{"role": "system", "content": s.system}] + s.messages[:-1])) + 8 <= eng.ctx.n_ctx
    eng.close()


def test_dropping_keeps_as_much_as_fits(tiny_base):
    """The guessed window is corrected by exact counts: no exchange that would fit is dropped."""
    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY
    from mtpchat.session import Session

    eng = Engine(tiny_base, mtp=False, n_ctx=256)
    s = Session(eng, params=GREEDY, max_tokens=8)
    s.messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * (3 + i % 5)} for i in range(60)]
    s.messages.append({"role": "user", "content": "last"})
    orig = list(s.messages)
    tokens = s.prompt()
    budget = eng.ctx.n_ctx - 8
    cut = len(orig) - len(s.messages)
    assert len(tokens) <= budget and s.dropped >= 1 and s.messages == orig[cut:] and orig[cut]["role"] == "user"
    assert len(s.chat.tokens(orig[cut - 2:])) > budget     # one exchange more would not have fitted
    eng.close()


# -- options reaching ctypes ------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--ctx", "4294967360"], "--ctx"), (["--ctx", "63"], "--ctx"),
    (["--threads", "2147483648"], "--threads"), (["--threads", "5000"], "--threads"), (["--threads", "0"], "--threads"),
    (["--threads", "-3"], "--threads"), (["-ngl", "-2"], "--gpu-layers"), (["-ngl", "4294967296"], "--gpu-layers"),
    (["--tree", "linear:²"], "unknown tree"), (["--tree", "quadratic:٣"], "unknown tree"), (["--tree", "lookup:"], "unknown tree"),
    (["--seed", "-1"], "--seed"), (["--temp", "inf"], "--temp"), (["--temp", "nan"], "--temp"),
    (["--repeat-penalty", "inf"], "--repeat-penalty"), (["--top-k", "99999999999"], "--top-k"),
    (["-n", "99999999999"], "--max-tokens"),
])
def test_out_of_range_options_are_one_line(args, needle):
    t0 = time.monotonic()
    one_line_error(run_cli("run", *args, "-p", "hi"), needle)
    assert time.monotonic() - t0 < 60   # refused before any model is loaded


@pytest.mark.parametrize("args,needle", [(["--threads", "100000"], "--threads"), (["--ctx", "1e9"], "--ctx"),
                                         (["--repeats", "0"], "--repeats"), (["--tree", "linear:²"], "unknown tree")])
def test_bench_options_are_one_line(tmp_path, args, needle):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "hi"}\n')
    one_line_error(run_cli("bench", "--prompts", f, *args), needle)


def test_binding_refuses_what_ctypes_would_truncate(tiny_base):
    from mtpchat import binding as B

    m = B.Model(tiny_base)
    for kwargs in ({"n_ctx": 2**32 + 64}, {"n_threads": 2**31}, {"n_threads": 5000}, {"n_batch": 0}):
        with pytest.raises(ValueError, match="out of range"):
            B.Context(m, **kwargs)
    m.close()
