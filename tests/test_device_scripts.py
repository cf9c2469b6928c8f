"""The scripts for the lent GPU machine run there rarely and on a budget of minutes, so what they
do here is tested here: the model's parts fit a call and join back checked, `light` keeps the heavy files
from travelling and `unlight` restores the checkout, and a training run needs no llama.cpp when
its targets exist."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ROOT / "native" / "device_parts.sh"

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("git", "xz", "split")),
                                reason="needs git, xz and coreutils' split")


def _sh(script: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_spread_parts_fit_a_call_and_join_back(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".dev" / "c1").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text(".dev/\n")
    (repo / "tracked.txt").write_text("x" * 100_000)     # travels in every call
    (repo / ".dev" / "c1" / "other").write_bytes(b"y" * 200_000)  # shares the first call
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(3 << 20))                  # incompressible: 3 MiB of parts
    r = _sh(f'. "{PARTS}" && spread "{big}" model "{repo}/.dev/c"', repo, DEVICE_CALL_MIB="2")
    assert r.returncode == 0, r.stderr
    calls = sorted((repo / ".dev").glob("c*"), key=lambda d: int(d.name[1:]))
    assert len(calls) >= 4
    travels = (repo / "tracked.txt").stat().st_size + (repo / ".gitignore").stat().st_size
    for d in calls:
        assert sum(f.stat().st_size for f in d.iterdir()) + travels <= (2 << 20) - (1 << 20)
    stage = tmp_path / "stage"
    stage.mkdir()
    r = _sh(f'. "{PARTS}" && stash_parts "{repo}/.dev/c" "{stage}"', repo)
    assert r.returncode == 0, r.stderr
    r = _sh(f'. "{PARTS}" && join_parts "{stage}" model "{tmp_path}/joined"', repo)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "joined").read_bytes() == big.read_bytes()
    # a part that changed on the way is caught by the hash, and no joined file is left
    last = sorted(stage.glob("model.part.*"))[-1]
    last.write_bytes(last.read_bytes()[:-1])
    r = _sh(f'. "{PARTS}" && join_parts "{stage}" model "{tmp_path}/bad"', repo)
    assert r.returncode != 0 and not (tmp_path / "bad").exists()


def test_light_keeps_the_heavy_files_from_travelling_and_unlight_restores(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    heavy = "train/checkpoints/smollm2-135m-k4/adapter_model.safetensors"
    script = clone / "native" / "device_check.sh"
    assert _sh(f'bash "{script}" light', clone).returncode == 0
    travelling = _git(clone, "ls-files", "-co", "--exclude-standard").split()
    assert heavy not in travelling and "README.md" in travelling
    assert (clone / heavy).is_file()
    assert _sh(f'bash "{script}" unlight', clone).returncode == 0
    assert _git(clone, "status", "--porcelain") == ""
    assert heavy in _git(clone, "ls-files").split()


def test_training_imports_no_llama_cpp_when_the_targets_exist(tmp_path):
    """The burst machine has torch and no llama.cpp build: neither the CLI's registration of
    convert and train nor a complete target cache may load libllama."""
    code = ("import sys\n"
            "from mtpchat.train import data as D\n"
            "import mtpchat.cli\n"
            "plist = D.read_prompts(None)[:3]\n"
            "cache = sys.argv[1]\n"
            "items = [{'id': p['id'], 'category': 'x', 'prompt_ids': [1], 'answer_ids': [2], 'stopped': True} for p in plist]\n"
            "import json; open(cache, 'w').write(''.join(json.dumps(i) + '\\n' for i in items))\n"
            "got = D.generate_gguf('/nonexistent.gguf', plist, cache)\n"
            "assert [g['id'] for g in got] == [p['id'] for p in plist]\n"
            "assert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "targets.jsonl")], capture_output=True, text=True,
                       env={**os.environ, "LLAMA_CPP_LIB_PATH": str(tmp_path / "none")}, timeout=120)
    assert r.returncode == 0, r.stderr


def test_experiments_apply_to_the_patched_tree(tmp_path):
    """`device_check.sh experiment` applies a patch of native/experiments on the GPU machine, where
    a patch that no longer applies would waste the session's device minutes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("native_build", ROOT / "native" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    sdist = build.cache_dir() / "sdist" / f"llama_cpp_python-{build.VERSION}.tar.gz"
    if not sdist.is_file() or build.sha256(sdist) != build.SDIST_SHA256 or not shutil.which("patch"):
        pytest.skip("needs the pinned llama-cpp-python sdist in the cache (./setup.sh fetches it) and patch(1)")
    tree = build.patched_source(sdist, tmp_path) / "vendor" / "llama.cpp"
    experiments = sorted((ROOT / "native" / "experiments").glob("*.patch"))
    assert experiments
    for p in experiments:
        r = subprocess.run(["patch", "-p1", "--dry-run", "--batch", "-i", str(p)], cwd=tree,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "FAILED" not in r.stdout, (p.name, r.stdout, r.stderr)
