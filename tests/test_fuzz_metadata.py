"""Metadata fuzzing (issue 10): hostile values of the keys llama.cpp and mtpchat read, in tiny
GGUFs of the four supported architectures (plain and MTP), through the real CLI, one process per
call (tests/metadata_fuzz.py). Every call ends with exit 0, or exit 1 and one line on stderr
from mtpchat's own checks: never a signal, a hang, a traceback or llama.cpp's assert.

Seeded and fixed in size, so a failure reproduces: `python tests/metadata_fuzz.py` on the cases
file the test writes. Budget: under a minute (it takes ~25 s on a loaded 2-core machine)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import metadata_fuzz as MF

SEED = 10
N_CASES = 50
BUDGET_S = 60
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    from gguf_edit import tiny_of_arch
    from synthetic import write_random_mtp, write_tiny_llama

    t0 = time.monotonic()
    d = tmp_path_factory.mktemp("fuzz")
    base = write_tiny_llama(d / "tiny-llama.gguf")
    for arch in MF.ARCHS:
        plain = base if arch == "llama" else tiny_of_arch(base, d / f"tiny-{arch}.gguf", arch)
        write_random_mtp(plain, d / f"tiny-{arch}-mtp.gguf", k=3, rank=8, seed=1)
    cases = MF.make_cases(d, d, seed=SEED, n=N_CASES)
    (d / "cases.json").write_text(json.dumps(cases, indent=1))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(HERE / "metadata_fuzz.py"), str(d / "cases.json"), str(d / "results.json")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((d / "results.json").read_text())
    return results, time.monotonic() - t0


def _calls(results):
    for c in results:
        for name in ("info", "run", "plain"):
            if name in c:
                yield c, name, c[name]


def _verdict(call) -> str | None:
    """None when the call ended as it should, else what went wrong."""
    if call.get("hung"):
        return "hung"
    rc, err = call["rc"], call["stderr"]
    lines = [line for line in err.splitlines() if line.strip()]
    if rc == 0:
        return None
    if rc != 1:
        return f"exit {rc}"
    if "Traceback" in err:
        return "traceback"
    if len(lines) != 1 or not lines[0].startswith("mtpchat: error:"):
        return f"{len(lines)} lines on stderr"
    if "failed internal check" in lines[0]:
        return "reached a llama.cpp assert"
    return None


def test_every_call_exits_0_or_1_with_one_line(fuzz):
    results, _ = fuzz
    assert len(results) == N_CASES
    bad = [f"case {c['i']} {name}: {c['key']}={c['value']} ({c.get('type')}): {v}: {call['stderr'][-300:]!r}"
           for c, name, call in _calls(results) if (v := _verdict(call))]
    assert not bad, "\n".join(bad)
    assert sum("skipped" not in c for c in results) >= N_CASES - 5   # the writer could write nearly all


def test_what_used_to_abort_is_refused_by_mtpchat_itself(fuzz):
    results, _ = fuzz
    for c in results[:len(MF.KNOWN_ABORTS)]:
        for name in ("info", "run"):
            line = c[name]["stderr"].strip()
            # refused by the checks (metadata.py), before llama.cpp saw the file
            assert c[name]["rc"] == 1 and "llama.cpp could not load" not in line, (c["key"], c["value"], line)


def test_mtp_output_equals_plain_wherever_a_file_is_accepted(fuzz):
    results, _ = fuzz
    compared = 0
    for c in results:
        if c.get("mtp") and c["run"]["rc"] == 0 and c["plain"]["rc"] == 0:
            a, b = json.loads(c["run"]["stdout"]), json.loads(c["plain"]["stdout"])
            assert a["text"] == b["text"], (c["key"], c["value"], a["text"], b["text"])
            compared += 1
    assert compared >= 1


def test_the_fuzzer_fits_its_budget(fuzz):
    _, seconds = fuzz
    print(f"metadata fuzzer: {N_CASES} cases in {seconds:.1f} s")
    assert seconds < BUDGET_S, seconds
