#!/usr/bin/env bash
# The GPU check of the native step. The device machine has no network and takes at most 64 MiB
# per call, working tree included (~25 MB, most of it the checkpoint), so the compressed model
# (~112 MB) travels in parts over several calls, fired one right after the other so that the
# machine (and what it built) stays warm:
#   native/device_check.sh prepare   here: .dev/c1 (patched llama.cpp tree, slim wheels, prompt
#                                    sets, model part 1), .dev/c2, .dev/c3, ... (the other parts)
#   native/device_check.sh build     on the GPU machine, carrying .dev/c1: CUDA build for one
#                                    architecture (CUDA_ARCH, default 90), libraries linked with
#                                    native/exports.map as setup.sh links them
#   native/device_check.sh stash     carrying .dev/c2 (and so on): keeps the model parts
#   native/device_check.sh run       carrying the last part: the gating check, llama-bench, bench
#                                    auto and quadratic:4 on every prompt set; $OUT/summary.json
# mtpchat itself runs from the carried working tree (PYTHONPATH), not from a wheel.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; root="$(dirname "$here")"
stage=/tmp/mtpchat-device; work=/tmp/mtpchat-device/w; out="${OUT:-/tmp/mtpchat-device/out}"
mkdir -p "$stage" "$out"
log() { echo "[$(date +%T)] $*" | tee -a "$out/log.txt" >&2; }

prepare() {
  local cache="${MTPCHAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mtpchat}" py="${PYTHON:-$root/.venv/bin/python}"
  local c1="$root/.dev/c1" t; t="$(mktemp -d)"
  rm -rf "$root/.dev" && mkdir -p "$c1/whl" "$c1/prompts"
  local tree; tree="$("$py" "$here/build.py" --source "$t/src")" || exit 1
  (cd "$tree" && rm -rf docs models tests benches tools/ui examples/*/assets)
  tar -czf "$c1/llama.cpp.tgz" -C "$(dirname "$tree")" llama.cpp
  cp "$here/exports.map" "$c1/"
  # llama-cpp-python's Python code only, from the cached patched wheel: the CUDA libraries come
  # from the build there, and a pure-Python tag installs on its Python 3.12
  "$py" - "$(ls -t "$cache"/wheels/*/llama_cpp_python-*.whl | head -1)" "$c1/whl" <<'PY' || exit 1
import sys, zipfile
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
name = "-".join(src.name.split("-")[:2]) + "-py3-none-any.whl"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst / name, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if item.filename.split("/")[0] in ("lib", "include", "bin") or "/lib/" in item.filename:
            continue
        data = zin.read(item)
        if item.filename.endswith(".dist-info/WHEEL"):
            data = b"".join(l if not l.startswith(b"Tag:") else b"Tag: py3-none-any\n" for l in data.splitlines(True))
        zout.writestr(item, data)
PY
  "$py" -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --platform manylinux2014_x86_64 \
    -d "$c1/whl" gguf prompt_toolkit wcwidth
  cp "$root"/../shared/prompts/*.jsonl "$c1/prompts/" 2>/dev/null || cp "${PROMPTS:?set PROMPTS to the prompt sets}"/*.jsonl "$c1/prompts/"
  local model; model="$("$py" -m mtpchat.models)"
  sha256sum "$model" | cut -c1-64 > "$c1/model.sha256"
  # what a call may carry beside the working tree; part 1 shares its call with the rest of c1
  local budget=$(( 64 * 1024 * 1024 - $(git -C "$root" ls-files -z | xargs -0 cat | wc -c) - 2 * 1024 * 1024 ))
  local first=$(( budget - $(du -sb "$c1" | cut -f1) ))
  xz -T2 -9 -c "$model" > "$t/model.xz"
  head -c "$first" "$t/model.xz" > "$c1/model.part.00"
  tail -c +"$(( first + 1 ))" "$t/model.xz" | split -b "$budget" -d -a 2 - "$t/model.part.x"
  local i=2
  for f in "$t"/model.part.x*; do
    mkdir -p "$root/.dev/c$i" && mv "$f" "$root/.dev/c$i/model.part.$(printf %02d $(( i - 1 )))"; i=$(( i + 1 ))
  done
  rm -rf "$t"; du -sh "$root"/.dev/c*
  echo "calls: build carrying .dev/c1, stash carrying each middle one, run carrying .dev/c$(( i - 1 ))"
}

stash() {
  for d in "$root"/.dev/c*; do [ -d "$d" ] && cp -r "$d"/* "$stage/"; done
}

build() {
  stash
  [ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
  rm -rf "$work" && mkdir -p "$work" && tar -xzf "$stage/llama.cpp.tgz" -C "$work"
  log "configure"
  cmake -S "$work/llama.cpp" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DGGML_CUDA_FA=OFF -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
    -DLLAMA_BUILD_SERVER=OFF "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--version-script=$stage/exports.map" > "$out/build.txt" 2>&1 \
    || { log "cmake failed"; tail -20 "$out/build.txt"; exit 1; }
  # llama-bench from the same tree, statically linked to its own copy (tools need C++ exports)
  cmake -S "$work/llama.cpp" -B "$work/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DGGML_CUDA_FA=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DGGML_CUDA_NCCL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF >> "$out/build.txt" 2>&1
  log "build"
  cmake --build "$work/build" -j "$(nproc)" --target llama >> "$out/build.txt" 2>&1 || { log "build failed"; grep -m5 -A8 error "$out/build.txt"; exit 1; }
  cmake --build "$work/build-bench" -j "$(nproc)" --target llama-bench >> "$out/build.txt" 2>&1 || log "llama-bench build failed"
  log "built: $(ls "$work/build/bin" | tr '\n' ' ')"
}

run() {
  stash
  cat "$stage"/model.part.* | xz -d -c > "$stage/model.gguf" || { log "model join failed (a part missing?)"; exit 1; }
  [ "$(sha256sum "$stage/model.gguf" | cut -c1-64)" = "$(cat "$stage/model.sha256")" ] || { log "model hash differs"; exit 1; }
  python3 -m pip install -q --no-index --no-deps "$stage"/whl/*.whl >> "$out/log.txt" 2>&1 || { log "pip failed"; exit 1; }
  export LLAMA_CPP_LIB_PATH="$work/build/bin" MTPCHAT_CACHE="$stage/cache" PYTHONUNBUFFERED=1 PYTHONPATH="$root"
  local m="$stage/model.gguf"
  nm -D --defined-only -C "$work"/build/bin/lib*.so | grep -cE ' (std::|__gnu_cxx::)' > "$out/std_exports.txt"
  log "gating"
  timeout 120 python3 - "$m" > "$out/gate.json" 2>> "$out/log.txt" <<'PY'
import json, sys
import numpy as np
from mtpchat import binding as B, format as F
path = sys.argv[1]
info = F.read_mtp_info(F.open_gguf(path))
model = B.Model(path, n_gpu_layers=-1)
ids = model.tokenize("The quick brown fox jumps over the lazy dog because it wants to.")
res = {}
for adapter in (None, B.Adapter(model)):
    ctx = B.Context(model, n_ctx=512, n_seq_max=2)
    ctx.set_adapter(adapter)
    toks = ids + (info.mask_ids if adapter else [])
    n = ctx.decode(toks, list(range(len(toks))), outputs=[1] * len(toks))
    res[adapter is not None] = np.array(ctx.logits(n)[:len(ids)])
    ctx.close()
print(json.dumps({"max_abs_diff_ordinary_rows": float(np.abs(res[True] - res[False]).max())}))
PY
  log "llama-bench"
  timeout 120 "$work/build-bench/bin/llama-bench" -m "$m" -ngl 99 -p 1,2,4,8,16,32 -n 128 -r 5 -o jsonl > "$out/llama-bench.jsonl" 2>> "$out/log.txt"
  for set in "$stage"/prompts/*.jsonl; do
    for tree in auto quadratic:4; do
      log "bench $(basename "$set") $tree"
      timeout 150 python3 -m mtpchat bench "$m" --prompts "$set" -ngl -1 --tree "$tree" -n 128 --repeats 2 --json \
        > "$out/bench-$(basename "$set" .jsonl)-${tree/:/}.json" 2>> "$out/log.txt"
    done
  done
  python3 - "$out" > "$out/summary.json" <<'PY'
import json, pathlib, sys
o = pathlib.Path(sys.argv[1])
s = {"std_exports": (o / "std_exports.txt").read_text().split()}
for f in ("gate.json",):
    try: s["gate"] = json.loads((o / f).read_text())
    except Exception as e: s["gate"] = repr(e)
try: s["llama_bench"] = [json.loads(l) for l in (o / "llama-bench.jsonl").read_text().splitlines() if l.strip()]
except Exception as e: s["llama_bench"] = repr(e)
for f in sorted(o.glob("bench-*.json")):
    try: d = json.loads(f.read_text()); s[f.stem] = {"aggregate": d["aggregate"], "calibration": d["calibration"], "measured_tok_s": d["measured_tok_s"]}
    except Exception as e: s[f.stem] = repr(e)
print(json.dumps(s, indent=1))
PY
  log "done"
}

case "${1:-}" in
  prepare) prepare ;;
  build) build ;;
  stash) stash ;;
  run) run ;;
  *) echo "usage: native/device_check.sh prepare|build|stash|run" >&2; exit 2 ;;
esac
