"""Issue 13, "first hour as a new user": the real CLI in a pseudo-terminal (pexpect: the REPL and
its status line) and in subprocesses (everything else)."""
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

STATUS = re.compile(r"(\d+) tokens \| ([\d.]+) tok/s \| ([\d.]+) tokens/step([^\r\n\x1b]*)")


def spawn(tmp_path, *args, dims=(40, 160)):
    pexpect = pytest.importorskip("pexpect", reason="pexpect (test extra) drives the pseudo-terminal")
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS=str(dims[1]))
    child = pexpect.spawn(sys.executable, ["-m", "mtpchat", "run", *map(str, args)], env=env, encoding="utf-8",
                          timeout=180, dimensions=dims)
    child.expect("/help for commands")
    child.expect(">>>")
    return child


def ask(child, text):
    """Send a message; returns everything printed until the next prompt."""
    child.sendline(text)
    child.expect("tokens/step")
    out = child.before + child.after
    child.expect(">>>")
    return out + child.before


def finish(child):
    import pexpect

    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- 1. a status line that is true while streaming and after ------------------------------------

def test_status_line_is_measured_while_streaming_and_at_the_end(smol_mtp, tmp_path):
    child = spawn(tmp_path, smol_mtp, "--temp", "0", "-n", "40", "--tree", "quadratic:2")
    try:
        out = ask(child, "Tell me about the moon in a few sentences.")
        lines = STATUS.findall(out)
        assert len(lines) >= 2, out                       # redrawn while streaming, and once at the end
        assert all(float(tps) > 0 for n, tps, _, _ in lines if int(n) > 0), lines
        n, tps, tau, rest = lines[-1]                     # the line left on screen
        assert int(n) >= 1 and float(tps) > 0 and float(tau) >= 1.0
        # every step was an MTP tree: nothing plain measured in this process yet
        assert "vs plain: n/a" in rest and "~" not in rest
        child.sendline("/stats")
        child.expect("trees:")
        child.expect(">>>")
        trees = child.before
        # --tree's spelling: quadratic:2, and the masks-only steps named as such
        assert "quadratic:2 x" in trees and "quadratic:2x2" not in trees and "quadratic:0x" not in trees
        assert re.search(r"masks-only:2 x\d+", trees) or "masks-only" not in trees
        finish(child)
    finally:
        child.close()


def test_speedup_is_measured_against_plain_steps_of_the_same_process(smol_mtp, tmp_path):
    child = spawn(tmp_path, smol_mtp, "--temp", "0", "-n", "40", "--tree", "quadratic:2")
    try:
        assert "vs plain: n/a" in ask(child, "Name three rivers.")
        child.sendline("/mtp off")
        child.expect("MTP off")
        child.expect(">>>")
        out = ask(child, "Name three mountains.")
        assert "plain decoding" in STATUS.findall(out)[-1][3]
        child.sendline("/mtp on")
        child.expect("MTP on")
        child.expect(">>>")
        child.sendline("/stats")
        child.expect("session:")
        child.expect(">>>")
        # the session holds both kinds of steps: its speedup is a measured ratio
        assert re.search(r"\d+\.\d\dx vs plain", child.before), child.before
        finish(child)
    finally:
        child.close()


def test_json_has_the_measured_speedup_and_no_estimate_in_the_status(smol_mtp):
    r = run_cli("run", smol_mtp, "--tree", "lookup:4", "--temp", "0", "-n", "40", "--json", "-v",
                input="Repeat this sentence three times: the quick brown fox jumps over the lazy dog.")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)["stats"]
    # field names kept; the new ones added
    assert {"tokens", "tok_s", "tokens_per_step", "acceptance", "est_speedup", "speedup", "plain_tok_s"} <= set(st)
    mixed = 0 < st["plain_steps"] < st["steps"]
    assert (st["speedup"] is not None) == mixed
    if mixed:
        assert st["speedup"] == pytest.approx(st["tok_s"] / st["plain_tok_s"], rel=0.02)
    assert "~" not in r.stderr and "tok/s" in r.stderr


# -- 2. contention-aware threads ----------------------------------------------------------------

def test_default_threads_are_the_physical_cores_and_more_are_clamped(smol_path):
    from mtpchat.contention import physical_cores, usable_cpus

    r = run_cli("run", smol_path, "-n", "4", "--temp", "0", "--json", input="hi")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["threads"] == physical_cores()
    n = len(usable_cpus())
    r = run_cli("run", smol_path, "-n", "2", "--temp", "0", "--json", "--threads", str(n + 30), input="hi")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["threads"] == n
    assert f"mtpchat: warning: --threads {n + 30} is more than the {n} CPUs" in r.stderr


def test_every_environment_variable_read_is_documented():
    names = set()
    for folder in ("mtpchat", "convert", "train", "native"):
        for f in (ROOT / folder).rglob("*.py"):
            text = f.read_text()
            names |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\s*[\"']([A-Z_][A-Z0-9_]*)[\"']", text))
            names |= set(re.findall(r"os\.environ\.setdefault\(\s*[\"']([A-Z_][A-Z0-9_]*)", text))
            for group in re.findall(r"for _var in \(([^)]*)\)", text):
                names |= set(re.findall(r"[\"']([A-Z_][A-Z0-9_]*)[\"']", group))
    names |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (ROOT / "setup.sh").read_text()))
    readme = (ROOT / "README.md").read_text()
    assert {"MTPCHAT_HOME", "MTPCHAT_CACHE", "MTPCHAT_LLAMA_LOG"} <= names
    assert [n for n in sorted(names) if f"`{n}`" not in readme] == []


# -- 3. info ------------------------------------------------------------------------------------

def test_info_prints_whole_values_in_a_pipe_and_tensor_types_as_a_table(smol_mtp):
    d = json.loads(run_cli("info", smol_mtp, "--json").stdout)
    r = run_cli("info", smol_mtp)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(l.split(None, 1) == ["path", str(smol_mtp)] for l in lines), r.stdout
    head = next(i for i, l in enumerate(lines) if l.startswith("tensor_types"))
    assert lines[head].split() == ["tensor_types", "type", "tensors"]
    rows = [l.split() for l in lines[head + 1: head + 1 + len(d["tensor_types"])]]
    assert {t: int(n) for t, n in rows} == d["tensor_types"]
    assert "{" not in r.stdout and "…" not in r.stdout


# -- 4. convert finds the embedded base ---------------------------------------------------------

def test_convert_finds_the_base_the_checkpoint_names(smol_path, tmp_path):
    ck = ROOT / "train" / "checkpoints" / "smollm2-135m-k4"
    out = tmp_path / "m.gguf"
    r = run_cli("convert", ck, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "base found by the name in mtp_config.json" in r.stdout and str(smol_path) in r.stdout
    assert json.loads(run_cli("info", out, "--json").stdout)["mtp_masks"] == 4
    # one error prefix, here too
    r = run_cli("convert", ck, "-o", out)
    assert r.returncode == 1 and r.stderr.startswith("mtpchat: error: ") and "exists" in r.stderr
    # a checkpoint naming a base that is not here says which one it wants
    other = tmp_path / "ck"
    shutil.copytree(ck, other)
    cfg = json.loads((other / "mtp_config.json").read_text())
    cfg["base_model"] = "Some-Other-Model.Q8_0.gguf"
    (other / "mtp_config.json").write_text(json.dumps(cfg))
    r = run_cli("convert", other, "-o", tmp_path / "n.gguf")
    assert r.returncode == 1 and r.stderr.startswith("mtpchat: error: ")
    assert "trained on Some-Other-Model.Q8_0.gguf" in r.stderr and "--base" in r.stderr


# -- 5. bench -----------------------------------------------------------------------------------

def _prompts(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "a", "category": "code", "prompt": "Write hello world in Python."}\n'
                 '{"id": "b", "category": "chat", "prompt": "Say hi."}\n')
    return p


def test_bench_refuses_a_model_without_mtp_parts(smol_path, tmp_path):
    r = run_cli("bench", smol_path, "--prompts", _prompts(tmp_path), "-n", "4")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("mtpchat: error: ") and "no MTP parts" in lines[0]
    r = run_cli("bench", smol_path, "--prompts", _prompts(tmp_path), "--tree", "plain")
    assert r.returncode == 1 and "plain decoding with itself" in r.stderr


def test_bench_shows_progress_on_a_stderr_that_is_not_a_terminal(smol_mtp, tmp_path):
    r = run_cli("bench", smol_mtp, "--prompts", _prompts(tmp_path), "-n", "8", "--repeats", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["aggregate"]["prompts"] == 2
    err = r.stderr.splitlines()
    assert any(l.startswith("bench: this machine's pass costs") for l in err), r.stderr
    assert any(l.startswith("bench: 1/2 a: plain ") for l in err) and any(l.startswith("bench: 2/2 b: ") for l in err)


# -- 6. train: --max-minutes bounds the whole run -----------------------------------------------

train_extra = pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("torch", "transformers")),
                                 reason="the [train] extra (torch, transformers) is not installed")


@train_extra
def test_train_time_limit_covers_target_generation(tiny_base, tmp_path):
    # 3 s: a quiet fast machine generated all of the tiny model's 1,365 targets in 12 s
    limit_min = 0.05
    t = time.monotonic()
    r = run_cli("train", tiny_base, "--out", tmp_path / "o", "--max-minutes", limit_min, "--max-new-tokens", "256",
                "--threads", "1")
    took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert "while generating targets" in r.stderr and "run the same command again" in r.stderr
    m = re.search(r"(\d+) of (\d+) prompts done", r.stderr)
    assert m and int(m.group(1)) < int(m.group(2)), r.stderr
    assert took < limit_min * 60 + 20, took          # not the minutes all 1,299 prompts would take
    assert not (tmp_path / "o").exists()               # nothing trained, nothing pretended
    cache = next((tmp_path / "o.data").glob("*.jsonl"))
    assert len(cache.read_text().splitlines()) == int(m.group(1))   # what was done is kept


@train_extra
def test_train_warns_about_a_warmup_longer_than_the_run_and_saves(tiny_base, tmp_path):
    r = run_cli("train", tiny_base, "--out", tmp_path / "o", "--max-prompts", "6", "--max-new-tokens", "12",
                "--steps", "2", "--batch-tokens", "64", "--threads", "1", "--no-eval-at-start", "--eval-seqs", "1")
    assert r.returncode == 0, r.stderr
    assert "mtpchat: warning: --warmup 20 is not shorter than the run (2 steps): warming up over 0 steps" in r.stderr
    assert (tmp_path / "o" / "mtp_config.json").is_file() and (tmp_path / "o" / "resume" / "trainer.json").is_file()
    assert json.loads((tmp_path / "o" / "resume" / "trainer.json").read_text())["step"] == 2
    r = run_cli("train", tmp_path / "missing.gguf", "--out", tmp_path / "p")
    assert r.returncode == 1 and r.stderr.startswith("mtpchat: error: ")


@train_extra
def test_first_checkpoint_is_saved_after_the_first_step(tiny_base, tmp_path):
    """A fresh run saves after its first step (whatever --save-every says), so a run stopped at any
    later point resumes; the run's deadline stops it, counted from the start of the command."""
    import torch

    from mtpchat.train.base import load_base
    from mtpchat.train.model import MtpModel
    from mtpchat.train.trainer import Examples, Trainer, TrainConfig

    base, arch = load_base(tiny_base, dtype=torch.float32)
    ex = [{"id": f"s{i}", "prompt_ids": [3, 270 + i], "answer_ids": list(range(280, 294)), "stopped": True}
          for i in range(8)]
    cfg = TrainConfig(n_masks=2, rank=2, alpha=4, steps=4, batch_tokens=40, save_every=0, eval_every=0, threads=1)
    out = tmp_path / "ck"
    seen = []
    tr = Trainer(MtpModel(base, n_masks=2, rank=2, alpha=4), Examples(ex[:6], ex[6:]), cfg, out,
                 base_name="tiny", architecture=arch)
    tr.run(on_step=lambda step, info: seen.append((step, (out / "resume" / "trainer.json").exists())))
    assert seen[0] == (1, False) and seen[1][1]        # saved right after step 1
    assert json.loads((out / "resume" / "trainer.json").read_text())["step"] == 4
    assert tr.notes == ["--warmup 20 is not shorter than the run (4 steps): warming up over 0 steps"]
    # an absolute deadline already past: no step, and still a final save of the state
    tr2 = Trainer(MtpModel(load_base(tiny_base, dtype=torch.float32)[0], n_masks=2, rank=2, alpha=4),
                  Examples(ex[:6], ex[6:]), TrainConfig(n_masks=2, rank=2, alpha=4, steps=50, batch_tokens=40,
                                                        save_every=0, eval_every=0), tmp_path / "ck2",
                  base_name="tiny", architecture=arch, deadline=time.perf_counter() - 1)
    assert tr2.run()["step"] == 0


# -- 7. typing while an answer streams ----------------------------------------------------------

def test_typing_while_an_answer_streams_is_held_for_the_next_prompt(smol_mtp, tmp_path):
    child = spawn(tmp_path, smol_mtp, "--temp", "0", "-n", "200")
    try:
        child.sendline("Write a long story about a dragon who learns to bake bread.")
        child.expect("tokens/step")      # the answer is streaming
        child.send("typed ahead")
        child.expect(">>>")              # the answer ended
        streamed = child.before
        assert "typed ahead" not in streamed          # never echoed into the answer
        child.expect("typed ahead", timeout=10)       # but waiting in the prompt, not sent
        child.send("\x15")                            # Ctrl-U: clear it
        child.sendline(f"/save {tmp_path / 'c.json'}")
        child.expect("saved")
        child.expect(">>>")
        finish(child)
    finally:
        child.close()
    msgs = json.loads((tmp_path / "c.json").read_text())["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]   # the typed text was not sent


def test_typed_text_cleanup():
    from mtpchat.repl import finished_blocks, typed_text

    assert typed_text(b"hel\x7flo\x1b[D wor\x1bOAld\r") == "helo world"
    assert typed_text(b"first\rsecond\r\r") == "first\nsecond"
    assert typed_text(b"gone\x15kept") == "kept"
    # finished Markdown blocks: up to a blank line that a margin line follows, never in a fence
    assert finished_blocks("one\n\ntwo") == 5 and finished_blocks("one\n\n") == 0
    assert finished_blocks("1. a\n\n   more of a") == 0
    assert finished_blocks("```\ncode\n\nmore\n") == 0 and finished_blocks("```\nx\n```\n\nnext") == 11


# -- 8. help and messages -----------------------------------------------------------------------

def test_help_shows_no_bool_and_explains_sampling(tmp_path):
    from mtpchat.sampling import SamplingParams

    r = run_cli("run", "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0 and "<bool>" not in r.stdout
    d = SamplingParams()
    for flag, default in (("--top-p", d.top_p), ("--top-k", d.top_k), ("--min-p", d.min_p)):
        line = next(l for l in r.stdout.splitlines() if f" {flag} " in l)
        assert f"else {default:g}." in line, line
    assert "Seed" in next(l for l in r.stdout.splitlines() if " --seed " in l)
    assert "--no-markdown" in r.stdout and " --plain " not in r.stdout     # the old name is hidden
    assert "warnings and errors" in next(l for l in r.stdout.splitlines() if " --verbose " in l)
    for cmd in ("bench", "train", "convert", "info"):
        assert "<bool>" not in run_cli(cmd, "--help", env={"COLUMNS": "200"}).stdout


def test_plain_is_still_accepted_for_no_markdown(smol_path):
    r = run_cli("run", smol_path, "--plain", "-n", "2", "--temp", "0", input="hi")
    assert r.returncode == 0, r.stderr


def test_llama_log_env_shows_the_whole_log(smol_path):
    quiet = run_cli("run", smol_path, "-n", "2", "--temp", "0", "-v", input="hi")
    loud = run_cli("run", smol_path, "-n", "2", "--temp", "0", input="hi", env={"MTPCHAT_LLAMA_LOG": "1"})
    assert quiet.returncode == loud.returncode == 0
    assert "llama_model_loader" in loud.stderr and "llama_model_loader" not in quiet.stderr


def test_small_context_says_why_it_grew(smol_path):
    r = run_cli("run", smol_path, "--ctx", "64", "-n", "2", "--temp", "0", "-v", input="hi")
    assert r.returncode == 0, r.stderr
    assert "--ctx 64 became 256 (llama.cpp sizes the context in multiples of 256)" in r.stderr
    r = run_cli("run", smol_path, "--ctx", "64", "-n", "4", input="word " * 400)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "does not fit the context" in lines[0] and "--ctx 64 became 256" in lines[0]


def test_an_answer_cut_at_the_limit_says_so_outside_the_text(smol_path, tmp_path):
    r = run_cli("run", smol_path, "-n", "3", "--temp", "0", "--json", input="Tell me a long story.")
    d = json.loads(r.stdout)
    assert d["truncated"] is True and d["stats"]["finish_reason"] == "length"
    r = run_cli("run", smol_path, "-n", "3", "--temp", "0", input="Tell me a long story.")
    assert r.returncode == 0 and "cut off" not in r.stdout and "cut off" not in r.stderr   # a pipe: text only
    child = spawn(tmp_path, smol_path, "--temp", "0", "-n", "3")
    try:
        child.sendline("Tell me a long story.")
        child.expect("cut off at the 3-token limit")
        child.expect(">>>")
        # /save into a folder that does not exist: the reason, no temporary file name
        child.sendline(f"/save {tmp_path / 'no' / 'such' / 'c.json'}")
        child.expect("mtpchat: error:")
        child.expect(">>>")
        assert "No such file or directory" in child.before and ".tmp" not in child.before
        finish(child)
    finally:
        child.close()


def test_triple_quotes_make_one_multi_line_message(smol_path, tmp_path):
    child = spawn(tmp_path, smol_path, "--temp", "0", "-n", "4")
    try:
        child.sendline('"""')
        child.expect(r"\.\.\.")
        child.sendline("first line")
        child.sendline('second line"""')
        child.expect("tokens/step")
        child.expect(">>>")
        child.sendline('"""one line too"""')
        child.expect("tokens/step")
        child.expect(">>>")
        child.sendline(f"/save {tmp_path / 'c.json'}")
        child.expect("saved")
        child.expect(">>>")
        finish(child)
    finally:
        child.close()
    users = [m["content"] for m in json.loads((tmp_path / "c.json").read_text())["messages"] if m["role"] == "user"]
    assert users == ["first line\nsecond line", "one line too"]


def test_setup_shows_its_own_progress_not_pips():
    """Every pip call in setup.sh runs through `quietly` (output to .venv/setup.log, shown when it
    fails); each step says what it installs. (Running setup.sh itself is CI's job: ./setup.sh test.)"""
    text = (ROOT / "setup.sh").read_text()
    pip_lines = [l.strip() for l in text.splitlines() if "pip install" in l and not l.lstrip().startswith("#")]
    assert len(pip_lines) == 3 and all(l.startswith("quietly ") for l in pip_lines), pip_lines
    assert '>>"$log" 2>&1' in text and "tail -n 40" in text
    assert sorted(set(re.findall(r"say \"\[(\d)/4\]", text))) == ["1", "2", "3", "4"]
