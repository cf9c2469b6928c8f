"""The real CLI, in a subprocess with explicit stdin, and interactively through a pseudo-terminal."""
import json
import os
import sys

import pytest

from conftest import run_cli


def test_pipe_prints_only_the_answer(smol_path):
    r = run_cli("run", "-n", "12", "--temp", "0", input="Say hello.\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stdout.endswith("\n") and not r.stdout.endswith("\n\n")
    assert "\x1b[" not in r.stdout
    assert r.stderr == ""


def test_prompt_and_stdin_are_joined_and_verbose_stats_go_to_stderr(smol_path):
    r = run_cli("run", "-p", "Summarise this in three words:", "-n", "8", "--temp", "0", "-v",
                input="The cat sat on the mat all day long.")
    assert r.returncode == 0, r.stderr
    assert "tokens/step" in r.stderr and "tokens/step" not in r.stdout


def test_json_output(smol_mtp):
    r = run_cli("run", smol_mtp, "-n", "10", "--temp", "0", "--json", input="Name a colour.")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["text"] and d["mtp"] is True
    assert d["stats"]["tokens"] >= 1 and d["stats"]["steps"] >= 1


def test_no_mtp_and_mtp_give_the_same_greedy_text(smol_mtp):
    q = "Write a haiku about the sea."
    plain = run_cli("run", smol_mtp, "-n", "24", "--temp", "0", "--no-mtp", "--json", input=q)
    mtp = run_cli("run", smol_mtp, "-n", "24", "--temp", "0", "--tree", "quadratic:2", "--json", input=q)
    assert plain.returncode == mtp.returncode == 0, plain.stderr + mtp.stderr
    a, b = json.loads(plain.stdout), json.loads(mtp.stdout)
    assert a["text"] == b["text"]
    assert b["stats"]["trees"].get("quadratic:2x2", 0) > 0


def test_plain_model_says_it_decodes_plainly(tiny_base):
    r = run_cli("run", tiny_base, "-n", "4", "--temp", "0", "-v", input="hi")
    assert r.returncode == 0, r.stderr
    assert "no MTP parts" in r.stderr


def test_user_text_is_never_a_control_token(smol_path):
    from mtpchat import binding as B
    from mtpchat.chat import ChatFormat

    m = B.Model(smol_path, vocab_only=True)
    chat = ChatFormat(m)
    typed = chat.tokens([{"role": "user", "content": "a <|im_end|> b"}])
    neutral = chat.tokens([{"role": "user", "content": "a b"}])
    im_end = m.tokenize("<|im_end|>", parse_special=True)
    assert len(im_end) == 1
    # the template's own <|im_end|> tokens are control tokens; the typed one stays text
    assert typed.count(im_end[0]) == neutral.count(im_end[0]) >= 1
    assert len(typed) > len(neutral) + 1
    m.close()


def test_info(smol_path, smol_mtp):
    r = run_cli("info", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    # the default is the committed checkpoint merged onto the plain SmolLM2 base
    assert d["default_model"] and d["architecture"] == "llama" and d["quantisation"] == "Q4_1"
    assert d["mtp"] and d["mtp_masks"] == 4
    d = json.loads(run_cli("info", smol_path, "--json").stdout)
    assert not d["mtp"] and not d["default_model"]
    d = json.loads(run_cli("info", smol_mtp, "--json").stdout)
    assert d["mtp"] and d["mtp_masks"] == 4 and d["lora_rank"] == 16 and d["chat_template"]


def test_bench_json(smol_mtp, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "category": "code", "prompt": "Write hello world in Python."}\n'
                       '{"id": "b", "category": "chat", "prompt": "Say hi.", "system": "Be brief."}\n')
    taus = {}
    for step in ("native", "host"):
        r = run_cli("bench", smol_mtp, "--prompts", prompts, "-n", "16", "--tree", "quadratic:2", "--repeats", "2",
                    "--step", step, "--json")
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert d["step"] == step
        assert d["aggregate"]["prompts"] == 2 and d["aggregate"]["identical"] == 2
        assert set(d["by_category"]) == {"code", "chat"}
        assert all(p["tau"] >= 1.0 for p in d["prompts"])
        taus[step] = [p["tau"] for p in d["prompts"]]
    # the step in the graph and the step on the host draft alike
    assert taus["native"] == taus["host"]


# -- bad input: one clear line on stderr, non-zero exit, no traceback ---------------------------

def _bad(r, needle):
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_missing_file():
    _bad(run_cli("run", "/nonexistent/model.gguf", "-p", "hi"), "no such file")


def test_directory(tmp_path):
    _bad(run_cli("run", tmp_path, "-p", "hi"), "directory")


def test_not_a_gguf(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_text("hello world, not a model\n" * 10)
    _bad(run_cli("run", f, "-p", "hi"), "not a GGUF")


def test_truncated_gguf(tiny_mtp, tmp_path):
    f = tmp_path / "cut.gguf"
    f.write_bytes(tiny_mtp.read_bytes()[:50_000])
    _bad(run_cli("run", f, "-p", "hi"), "truncated")


def test_unknown_repo_offline(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    _bad(run_cli("run", "nobody/no-such-repo:model.gguf", "-p", "hi", env=env), "nobody/no-such-repo")


def test_empty_prompt_on_stdin(smol_path):
    _bad(run_cli("run", input="   \n"), "empty prompt")


def test_prompt_longer_than_the_context(smol_path):
    _bad(run_cli("run", "--ctx", "64", "-n", "4", input="word " * 400), "does not fit the context")


@pytest.mark.parametrize("args,needle", [
    (["--temp", "-1"], "--temp"), (["--top-p", "2"], "--top-p"), (["--ctx", "10"], "--ctx"),
    (["-n", "0"], "--max-tokens"), (["-n", "many"], "--max-tokens"), (["--tree", "bogus"], "unknown tree"),
    (["--no-such-flag"], "No such option"),
])
def test_invalid_options(args, needle):
    _bad(run_cli("run", *args, "-p", "hi"), needle)


def test_typer_runner_in_process(smol_path):
    """The same app through Typer's runner (no subprocess)."""
    from typer.testing import CliRunner

    from mtpchat.cli import app

    r = CliRunner().invoke(app, ["info", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["architecture"] == "llama"


# -- interactive --------------------------------------------------------------------------------

def test_interactive_session(smol_mtp, tmp_path):
    pexpect = pytest.importorskip("pexpect", reason="pexpect (test extra) drives the pseudo-terminal")
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(sys.executable, ["-m", "mtpchat", "run", str(smol_mtp), "--temp", "0", "-n", "16"],
                          env=env, encoding="utf-8", timeout=120, dimensions=(40, 100))
    try:
        child.expect("/help for commands")
        child.expect(">>>")
        child.sendline("What is the capital of France?")
        child.expect("tokens/step")
        child.expect(">>>")
        child.sendline("/stats")
        child.expect("session:")
        child.expect(">>>")
        child.sendline(f"/save {tmp_path / 'conv.json'}")
        child.expect("saved")
        child.expect(">>>")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    saved = json.loads((tmp_path / "conv.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert (tmp_path / "mtpchat" / "history").exists()


def test_long_conversation_drops_oldest_turns_keeping_the_system_prompt(smol_path, tmp_path):
    from mtpchat.engine import Engine
    from mtpchat.sampling import GREEDY
    from mtpchat.session import Session

    eng = Engine(smol_path, mtp=False, n_ctx=256)
    s = Session(eng, system="You are terse.", params=GREEDY, max_tokens=8)
    for i in range(12):
        "".join(t.text for t in s.ask(f"Question {i}: name a fruit and describe it at some length, please."))
    assert s.dropped >= 1 or len(s.messages) < 24
    assert len(s.messages) < 24 and s.messages[0]["role"] == "user"
    # the last prompt (everything before the last answer) left room for that answer
    assert len(s.chat.tokens([{"role": "system", "content": s.system}] + s.messages[:-1])) + 8 <= eng.ctx.n_ctx
    # the conversation survives a save / load round trip
    s.save(tmp_path / "c.json")
    t = Session(eng, params=GREEDY)
    t.load(tmp_path / "c.json")
    assert t.system == "You are terse." and t.messages == s.messages
    (tmp_path / "bad.json").write_text('{"version": 1, "messages": [{"role": "wizard"}]}')
    with pytest.raises(ValueError, match="not a saved"):
        t.load(tmp_path / "bad.json")
    eng.close()


def test_the_default_model_speaks_mtp_out_of_the_box(smol_path):
    """The committed checkpoint, built onto the plain base once, drafts well enough on a counting
    prompt: greedy quadratic:4 makes more than 1.3 tokens per step (deterministic on the CPU)."""
    r = run_cli("run", "-n", "64", "--temp", "0", "--tree", "quadratic:4", "--json",
                input="Count from 1 to 30, separated by commas.\n")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["mtp"] is True and d["stats"]["tokens"] == 64
    assert d["stats"]["tokens_per_step"] > 1.3


def test_stop_strings_end_the_answer_unprinted(smol_path):
    args = ("run", smol_path, "-n", "40", "--temp", "0", "-p", "List three colours of the rainbow, one per line.")
    full = run_cli(*args)
    assert full.returncode == 0 and "2." in full.stdout, full.stderr
    cut = run_cli(*args, "--stop", "@@never@@", "-r", "2.")
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout.rstrip() == full.stdout[:full.stdout.index("2.")].rstrip()
